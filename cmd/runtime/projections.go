package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

func newProjectionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Inspect and rebuild the read side's projections on a running node",
	}
	cmd.AddCommand(newProjectionsStatusCmd(), newProjectionsRebuildCmd())
	return cmd
}

func newProjectionsStatusCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List projections with their position, the journal's head and the lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := troupev1connect.NewProjectionServiceClient(httpClient(timeout), node)
			resp, err := c.Status(cmd.Context(), connect.NewRequest(&troupev1.ProjectionServiceStatusRequest{}))
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKIND\tPOSITION\tHEAD\tLAG\tSTATE")
			for _, p := range resp.Msg.GetProjections() {
				kind := "projection"
				switch {
				case p.GetInternal():
					kind = "internal"
				case p.GetReactor():
					kind = "reactor"
				}
				lag := uint64(0)
				if p.GetHead() > p.GetPosition() {
					lag = p.GetHead() - p.GetPosition()
				}
				state := "ok"
				switch {
				case p.GetLastError() != "":
					state = "failing: " + p.GetLastError()
				case lag > 0:
					state = "catching up"
				}
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\n", p.GetName(), kind, p.GetPosition(), p.GetHead(), lag, state)
			}
			return w.Flush()
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	return cmd
}

func newProjectionsRebuildCmd() *cobra.Command {
	var (
		node    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rebuild NAME",
		Short: "Rebuild a projection's read model from the start of the global log",
		Long: `Throw a projection's read model away and replay the global log into it from
position 1, with a progress bar. Queries keep being served meanwhile; those
that pass a minimum position wait for the rebuild to reach it. Reactors cannot
be rebuilt (it would repeat their side effects).`,
		Example: `  troupe projections rebuild balances`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := troupev1connect.NewProjectionServiceClient(httpClient(timeout), node)
			start := time.Now()
			s, err := c.Rebuild(cmd.Context(), connect.NewRequest(&troupev1.RebuildRequest{Name: args[0]}))
			if err != nil {
				return err
			}
			defer s.Close()
			bar := &progressBar{w: cmd.ErrOrStderr(), width: 40}
			var last *troupev1.RebuildResponse
			for s.Receive() {
				last = s.Msg()
				bar.draw(last.GetPosition(), last.GetTarget(), last.GetDone())
			}
			if err := s.Err(); err != nil {
				return err
			}
			if last == nil || !last.GetDone() {
				return fmt.Errorf("the node ended the rebuild of %s before it finished", args[0])
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rebuilt %s: %d positions in %s\n", args[0], last.GetTarget(), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", defaultNode, "URL of the node's API")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: no limit)")
	return cmd
}

// progressBar draws "[#####.....]  50%  5000/10000" in place, at most ten
// times a second.
type progressBar struct {
	w     io.Writer
	width int
	last  time.Time
}

func (b *progressBar) draw(done, total uint64, final bool) {
	if !final && time.Since(b.last) < 100*time.Millisecond {
		return
	}
	b.last = time.Now()
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	n := int(frac * float64(b.width))
	fmt.Fprintf(b.w, "\r[%s%s] %3d%%  %d/%d", strings.Repeat("#", n), strings.Repeat(".", b.width-n), int(frac*100), done, total)
	if final {
		fmt.Fprintln(b.w)
	}
}
