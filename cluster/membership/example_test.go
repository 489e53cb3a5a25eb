package membership_test

import (
	"context"
	"fmt"
	"time"

	"github.com/troupe-dev/troupe/cluster/membership"
)

// Two members on loopback: b joins through a, and a sees both.
func Example() {
	ctx := context.Background()
	changed := make(chan struct{}, 1)
	a, err := membership.New(membership.Config{
		NodeID:   "a",
		BindAddr: "127.0.0.1:0",
		Tags:     map[string]string{"role": "api"},
		OnChange: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := a.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()

	b, err := membership.New(membership.Config{NodeID: "b", BindAddr: "127.0.0.1:0",
		Tags: map[string]string{"role": "worker"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := b.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	if _, err := b.Join(ctx, []string{a.Addr()}, 3); err != nil {
		fmt.Println(err)
		return
	}

	// a learns of b from the join; wait for its OnChange (bounded).
	timeout := time.After(5 * time.Second)
	for len(a.Members()) < 2 {
		select {
		case <-changed:
		case <-timeout:
			fmt.Println("a never saw b")
			return
		}
	}
	for _, m := range a.Members() {
		fmt.Println(m.ID, m.State, m.Tags["role"])
	}
	// Output:
	// a alive api
	// b alive worker
}

func ExampleState_String() {
	fmt.Println(membership.Alive, membership.Suspect, membership.Leaving, membership.Left, membership.Failed, membership.Unknown)
	// Output: alive suspect leaving left failed unknown
}
