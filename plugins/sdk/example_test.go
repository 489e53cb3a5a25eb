package sdk_test

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/troupe-dev/troupe/plugins/sdk"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func Example() {
	// In a plugin this goes in init; the host then calls the handler.
	sdk.OnCommand(func(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
		if c.Type == "Close" {
			return sdk.Reject("accounts cannot be closed here")
		}
		return sdk.Allow()
	})
	defer sdk.OnCommand(nil)

	// A unit test drives the handler with an encoded request.
	req, _ := proto.Marshal(&troupev1.PluginRequest{
		AbiVersion: 1, Hook: troupev1.Hook_HOOK_COMMAND,
		Message: &troupev1.PluginRequest_Command{Command: &troupev1.Command{Kind: "account", Type: "Close"}},
	})
	v, _ := sdk.DecodeVerdict(sdk.Dispatch(req))
	fmt.Println(v.Rejected())
	// Output: true accounts cannot be closed here
}
