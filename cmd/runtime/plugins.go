package main

import (
	"fmt"
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
		Short: "List and reload the Wasm plugins of a running node",
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
	cmd.AddCommand(list, reload)
	return cmd
}
