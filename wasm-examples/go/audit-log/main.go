// Command audit-log is a sidecar plugin that logs every command it sees
// (kind, entity id, type, command id) through the host's log import and
// allows it unchanged.
package main

import "github.com/troupe-dev/troupe/plugins/sdk"

func init() {
	sdk.OnCommand(func(ctx *sdk.Context, c *sdk.Command) sdk.Verdict {
		sdk.Info("audit: command kind=" + c.Kind + " id=" + c.EntityID + " type=" + c.Type + " command_id=" + c.ID)
		sdk.Count("commands_seen", 1)
		return sdk.Allow()
	})
	sdk.OnEvent(func(ctx *sdk.Context, e *sdk.Event) sdk.Verdict {
		sdk.Info("audit: event stream=" + e.StreamID + " type=" + e.Type + " projection=" + ctx.Projection)
		return sdk.Allow()
	})
}

func main() {}
