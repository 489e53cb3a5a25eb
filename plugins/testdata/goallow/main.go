// Command goallow is the minimal Go sidecar for benchmarks: the SDK decodes
// each command and the handler allows it.
package main

import "github.com/troupe-dev/troupe/plugins/sdk"

func init() {
	sdk.OnCommand(func(*sdk.Context, *sdk.Command) sdk.Verdict { return sdk.Allow() })
}

func main() {}
