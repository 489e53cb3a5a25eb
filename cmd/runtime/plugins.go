package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/plugins"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

func newPluginsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plugins",
		Short: "List, reload and call the Wasm plugins of a running node",
	}
	var (
		node    string
		timeout time.Duration
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List plugins: name, version hash, kind, hooks, state and last error",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := troupev1connect.NewPluginServiceClient(httpClient(timeout), node)
			resp, err := c.List(cmd.Context(), connect.NewRequest(&troupev1.ListRequest{}))
			if err != nil {
				return err
			}
			return plugins.WriteTable(cmd.OutOrStdout(), resp.Msg.GetPlugins())
		},
	}
	addNodeFlag(list, &node, &timeout)
	var (
		rnode    string
		rtimeout time.Duration
	)
	reload := &cobra.Command{
		Use:   "reload",
		Short: "Rescan the plugin directory now and print the result",
		Long: `Rescan the node's plugin directory now (the node also watches it): new and
changed plugins are compiled and self-checked before they replace the old
version; a plugin that fails keeps its old version serving and says why.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := troupev1connect.NewPluginServiceClient(httpClient(rtimeout), rnode)
			resp, err := c.Reload(cmd.Context(), connect.NewRequest(&troupev1.ReloadRequest{}))
			if err != nil {
				return err
			}
			if err := plugins.WriteTable(cmd.OutOrStdout(), resp.Msg.GetPlugins()); err != nil {
				return err
			}
			if e := resp.Msg.GetError(); e != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "troupe: some plugins failed to load (their old versions keep serving): %s\n", e)
				return exitCode(1)
			}
			return nil
		},
	}
	addNodeFlag(reload, &rnode, &rtimeout)
	cmd.AddCommand(list, reload, newPluginsCallCmd())
	return cmd
}

func newPluginsCallCmd() *cobra.Command {
	var (
		node        string
		timeout     time.Duration
		contentType string
		meta        []string
	)
	call := &cobra.Command{
		Use:   "call NAME OPERATION [PAYLOAD|-]",
		Short: "Call an ambassador plugin once and print its reply",
		Long: `Send one call to the ambassador plugin NAME, as an actor's Runtime.Call
would, and print the plugin's reply payload on stdout (its metadata goes to
stderr). PAYLOAD is passed to the plugin unchanged; "-" reads it from stdin;
without it the payload is empty. On a node with --auth-tokens it needs an
admin token (--token): the call makes the plugin use its secrets and egress.`,
		Example: `  troupe plugins call partner-api charge '{"account":"acc-1","amount":100}'`,
		Args:    cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &troupev1.CallRequest{Name: args[0], Operation: args[1], ContentType: contentType}
			if len(args) == 3 {
				req.Payload = []byte(args[2])
				if args[2] == "-" {
					b, err := io.ReadAll(cmd.InOrStdin())
					if err != nil {
						return fmt.Errorf("read the payload from stdin: %w", err)
					}
					req.Payload = b
				}
			}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--meta %q: want KEY=VALUE", kv)
				}
				if req.Metadata == nil {
					req.Metadata = map[string]string{}
				}
				req.Metadata[k] = v
			}
			c := troupev1connect.NewPluginServiceClient(httpClient(timeout), node)
			resp, err := c.Call(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			keys := make([]string, 0, len(resp.Msg.GetMetadata()))
			for k := range resp.Msg.GetMetadata() {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: %s\n", k, resp.Msg.GetMetadata()[k])
			}
			out := resp.Msg.GetPayload()
			if len(out) > 0 && out[len(out)-1] != '\n' {
				out = append(out, '\n')
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	addNodeFlag(call, &node, &timeout)
	call.Flags().StringVar(&contentType, "content-type", "application/json", "encoding of PAYLOAD")
	call.Flags().StringArrayVar(&meta, "meta", nil, "KEY=VALUE metadata for the plugin (repeatable)")
	return call
}
