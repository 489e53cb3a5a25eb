// Command troupe is the Troupe runtime and its command-line client: `troupe
// dev` runs a single node with the demo domain; `troupe send` and `troupe
// query` talk to a running node. Run `troupe help` for the rest.
package main

import (
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: tests call it directly.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRootCmd(stdout, stderr)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		var ec exitCode
		if asExitCode(err, &ec) {
			return int(ec)
		}
		printErr(stderr, err)
		return 1
	}
	return 0
}
