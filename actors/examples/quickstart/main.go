// Quickstart is the example behind docs/guide.md: a binary of your own that
// embeds a Troupe node with one entity kind (order), a projection and a
// query, a reactor, a durable timer and a topic subscriber.
//
//	go run ./actors/examples/quickstart --data-dir /tmp/qs
//	curl -s localhost:8090/troupe.v1.CommandService/Send -H 'Content-Type: application/json' \
//	  -d '{"kind":"order","id":"o-1","type":"Place","payload":{"item":"book","qty":1}}'
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupe-dev/troupe/actors/topics"
	"github.com/troupe-dev/troupe/cluster/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run starts the node, serves until ctx ends, then stops it gracefully.
// ready, when set, is told the node once it serves (tests use it).
func run(ctx context.Context, args []string, stderr io.Writer, ready func(*node.Node)) error {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "./data-quickstart", "journal, read models and NATS storage")
	httpAddr := fs.String("http", "127.0.0.1:8090", "API address (port 0: any free port)")
	natsPort := fs.Int("nats-port", 4290, "NATS client port on 127.0.0.1 (-1: any free port)")
	pluginDir := fs.String("plugins", "", "directory of Wasm plugins (empty: none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	n, err := node.New(node.Config{
		DataDir:   *dataDir,
		HTTPAddr:  *httpAddr,
		NATSPort:  *natsPort,
		PluginDir: *pluginDir,
		Setup:     Register, // your kinds, projections, queries, reactors
		Logger:    log,
	})
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	sub, err := subscribeShipped(ctx, n.Topics(), func(id string) {
		log.Info("order shipped", "order", id)
	})
	if err != nil {
		n.Close()
		return err
	}
	log.Info("quickstart ready", "http", n.HTTPAddr())
	if ready != nil {
		ready(n)
	}

	<-ctx.Done() // Ctrl-C or SIGTERM
	sub.Unsubscribe()
	stopCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return n.Shutdown(stopCtx)
}

// subscribeShipped spawns a subscriber actor on the node's committed order
// events (published to troupe.events.order.<id>) and calls shipped with the
// id of every order that ships.
func subscribeShipped(ctx context.Context, t *topics.Topics, shipped func(id string)) (*topics.Subscription, error) {
	props := actor.PropsFromFunc(func(c actor.Context) {
		m, ok := c.Message().(*topics.Message)
		if !ok || m.Header["Troupe-Type"] != "Shipped" {
			return
		}
		// Troupe-Stream is "order/<id>", the id unescaped.
		shipped(strings.TrimPrefix(m.Header["Troupe-Stream"], Kind+"/"))
	})
	return t.Spawn(ctx, props, "troupe.events."+Kind+".>", topics.SubscribeOptions{})
}
