package plugins_test

import (
	"context"
	"fmt"

	"github.com/troupe-dev/troupe/plugins"
	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
)

func Example() {
	// Dir would name the plugin directory; empty means no plugins.
	h, err := plugins.New(plugins.Config{})
	if err != nil {
		panic(err)
	}
	defer h.Close()
	if err := h.Start(context.Background()); err != nil {
		panic(err)
	}
	cmd := &troupev1.Command{Kind: "account", EntityId: "acc-1", Type: "Deposit", Payload: []byte(`{"amount":100}`)}
	d, err := h.Command(context.Background(), cmd)
	if err != nil {
		panic(err)
	}
	if d.Rejected {
		fmt.Printf("rejected by %s: %s\n", d.Plugin, d.Reason)
		return
	}
	fmt.Println("allowed")
	// Output: allowed
}
