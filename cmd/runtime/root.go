package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "troupe",
		Short: "Troupe: durable, sharded Go actors with WebAssembly plugins",
		Long: `Troupe runs event-sourced Go actors on one binary: a journal on Badger, an
embedded NATS server, and WebAssembly plugins dropped into a directory.

Every flag can also be set with an environment variable: TROUPE_ and the
flag's name in upper case with '-' as '_' (--data-dir is TROUPE_DATA_DIR).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return err
			}
			return setClientAuth(cmd)
		},
	}
	addClientAuthFlags(root)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newDevCmd(), newSendCmd(), newQueryCmd(), newEventsCmd(), newProjectionsCmd(), newPluginsCmd(), newPublishCmd(), newSubscribeCmd(), newClusterCmd(), newBenchCmd(), newCertsCmd(), newVersionCmd())
	return root
}

// applyEnv sets every flag the user did not pass from TROUPE_<NAME>.
func applyEnv(cmd *cobra.Command) error {
	var err error
	visit := func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		env := "TROUPE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if serr := f.Value.Set(v); serr != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, serr)
			}
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return err
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "troupe", version)
		},
	}
}

// exitCode is an error that only sets the process's exit code.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func asExitCode(err error, ec *exitCode) bool { return errors.As(err, ec) }

// printErr prints an error for a person: API errors as "code: message".
func printErr(w io.Writer, err error) {
	var ce *connect.Error
	if errors.As(err, &ce) {
		fmt.Fprintf(w, "troupe: %s: %s\n", ce.Code(), ce.Message())
		return
	}
	fmt.Fprintf(w, "troupe: %v\n", err)
}
