// Command gobomb is a bad Go plugin for tests: "Boom" commands allocate
// until the memory limit kills the instance; "Panic" commands panic.
package main

import "github.com/troupe-dev/troupe/plugins/sdk"

var hoard [][]byte

func init() {
	sdk.OnCommand(func(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
		switch c.Type {
		case "Boom":
			for {
				hoard = append(hoard, make([]byte, 1<<20))
			}
		case "Panic":
			var m map[string]int
			m["x"] = 1
		}
		return sdk.Allow()
	})
}

func main() {}
