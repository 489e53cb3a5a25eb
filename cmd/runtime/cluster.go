package main

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show the cluster a running node belongs to",
	}
	cmd.AddCommand(newClusterMembersCmd(), newClusterStatusCmd(), newClusterShardsCmd(), newClusterLeadersCmd())
	return cmd
}

func newClusterMembersCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
		format  string
	)
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the members as the node sees them: id, state, addresses, roles, version, last heard",
		Example: `  troupe cluster members --node http://127.0.0.1:8081
  troupe cluster members --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			c := troupev1connect.NewClusterServiceClient(httpClient(timeout), node)
			resp, err := c.Members(cmd.Context(), connect.NewRequest(&troupev1.MembersRequest{}))
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return writeMembers(cmd.OutOrStdout(), resp.Msg.GetMembers(), time.Now())
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}

func newClusterStatusCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
		format  string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "The node's view of the cluster: members by state, NATS routes, JetStream meta leader, readiness",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			c := troupev1connect.NewClusterServiceClient(httpClient(timeout), node)
			resp, err := c.Status(cmd.Context(), connect.NewRequest(&troupev1.ClusterServiceStatusRequest{}))
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return writeStatus(cmd.OutOrStdout(), resp.Msg)
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}

func writeJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// writeMembers prints one member per line, sorted by id.
func writeMembers(w io.Writer, ms []*troupev1.Member, now time.Time) error {
	ms = slices.Clone(ms)
	sort.Slice(ms, func(i, j int) bool { return ms[i].GetId() < ms[j].GetId() })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tGOSSIP\tAPI\tNATS\tROUTE\tFORWARD\tROLES\tVERSION\tLAST HEARD")
	for _, m := range ms {
		heard := "-"
		if t, err := time.Parse(time.RFC3339Nano, m.GetLastHeard()); err == nil {
			heard = now.Sub(t).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.GetId(), m.GetState(), dash(m.GetGossip()),
			dash(m.GetApi()), dash(m.GetNats()), dash(m.GetRoute()), dash(m.GetForward()), dash(strings.Join(m.GetRoles(), ",")),
			dash(m.GetVersion()), heard)
	}
	return tw.Flush()
}

func writeStatus(w io.Writer, st *troupev1.ClusterServiceStatusResponse) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s\n", st.GetNodeId())
	if !st.GetClustered() {
		fmt.Fprintf(tw, "cluster\tnone (a single node)\n")
	} else {
		fmt.Fprintf(tw, "cluster\t%s\n", st.GetClusterId())
	}
	var states []string
	for s, n := range st.GetMembers() {
		states = append(states, fmt.Sprintf("%d %s", n, s))
	}
	sort.Strings(states)
	fmt.Fprintf(tw, "members\t%s\n", strings.Join(states, ", "))
	if st.GetClustered() {
		fmt.Fprintf(tw, "jetstream meta leader\t%s (of %d)\n", dash(st.GetMetaLeader()), st.GetMetaSize())
		fmt.Fprintf(tw, "routes up\t%s\n", dash(strings.Join(st.GetRoutes(), ", ")))
	}
	ready := "yes"
	if !st.GetReady() {
		ready = "no: " + st.GetReason()
	}
	fmt.Fprintf(tw, "ready\t%s\n", ready)
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newClusterShardsCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
		format  string
	)
	cmd := &cobra.Command{
		Use:   "shards",
		Short: "List the shards as the node sees them: owner, epoch, state, live entities",
		Long: `List the shards as the node sees them. Each shard is owned by one node, which
holds its lease (EPOCH is the lease's fencing token, shown by the owner) and is
the only writer of its replicated stream. STATE is the answering node's own
state for the shard: serving, acquiring, releasing, or idle (another node
serves it). Ask each node for the full picture of epochs and entities.`,
		Example: `  troupe cluster shards --node http://127.0.0.1:8081
  troupe cluster shards --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			c := troupev1connect.NewClusterServiceClient(httpClient(timeout), node)
			resp, err := c.Shards(cmd.Context(), connect.NewRequest(&troupev1.ShardsRequest{}))
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(cmd.OutOrStdout(), resp.Msg)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "SHARD\tOWNER\tSTATE\tEPOCH\tENTITIES\tTARGET\n")
			for _, s := range resp.Msg.GetShards() {
				epoch := "-"
				if s.GetEpoch() != 0 {
					epoch = fmt.Sprint(s.GetEpoch())
				}
				owner := s.GetOwner()
				if owner == "" {
					owner = "(moving)"
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%s\n", s.GetShard(), owner, s.GetState(), epoch, s.GetEntities(), s.GetTarget())
			}
			return w.Flush()
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}

func newClusterLeadersCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
		format  string
	)
	cmd := &cobra.Command{
		Use:   "leaders",
		Short: "List the singletons: the node that runs each, and its lease's epoch",
		Long: `List the singletons (actors.Singleton) as the node sees them: the node that
runs each one under its lease, and the lease's epoch (a fencing token that
rises with every new leader). A singleton moves to another node when its
node stops or dies.`,
		Example: `  troupe cluster leaders --node http://127.0.0.1:8081`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--format %q: want table or json", format)
			}
			c := troupev1connect.NewClusterServiceClient(httpClient(timeout), node)
			resp, err := c.Leaders(cmd.Context(), connect.NewRequest(&troupev1.LeadersRequest{}))
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(cmd.OutOrStdout(), resp.Msg)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "SINGLETON\tNODE\tEPOCH\tSINCE\n")
			for _, l := range resp.Msg.GetLeaders() {
				node, epoch := l.GetNode(), "-"
				if node == "" {
					node = "(none)"
				}
				if l.GetEpoch() != 0 {
					epoch = fmt.Sprint(l.GetEpoch())
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", l.GetSingleton(), node, epoch, l.GetSince())
			}
			return w.Flush()
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&format, "format", "table", "output: table or json")
	return cmd
}
