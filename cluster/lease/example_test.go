package lease_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cluster/bus"
	"github.com/troupe-dev/troupe/cluster/lease"
)

// Two nodes contend for a singleton's lease on one embedded server: a
// holds it (kept by a Keeper) until it closes the keeper, then b takes it
// under a higher epoch.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "lease-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	b, err := bus.New(bus.Config{StoreDir: dir, Port: bus.RandomPort})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := b.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()
	js, err := jetstream.New(b.Conn())
	if err != nil {
		fmt.Println(err)
		return
	}

	store, err := lease.Open(ctx, js, lease.Config{}) // a lone server: one replica
	if err != nil {
		fmt.Println(err)
		return
	}
	la, err := store.Acquire(ctx, "singleton.billing", "node-a")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("node-a holds epoch", la.Epoch)
	k, err := store.Keep(la)
	if err != nil {
		fmt.Println(err)
		return
	}

	_, err = store.Acquire(ctx, "singleton.billing", "node-b")
	var held *lease.HeldError
	if errors.As(err, &held) {
		fmt.Printf("node-b: held by %s (epoch %d)\n", held.Holder, held.Epoch)
	}

	if l, ok := k.Lease(); ok {
		fmt.Println("node-a acts as owner, fenced by epoch", l.Epoch)
	}
	if err := k.Close(); err != nil { // releases
		fmt.Println(err)
		return
	}
	lb, err := store.Acquire(ctx, "singleton.billing", "node-b")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("node-b holds epoch", lb.Epoch, "after", k.Err())
	// Output:
	// node-a holds epoch 1
	// node-b: held by node-a (epoch 1)
	// node-a acts as owner, fenced by epoch 1
	// node-b holds epoch 3 after lease: keeper closed
}
