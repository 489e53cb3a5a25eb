package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/actors/topics"
	"github.com/troupe-dev/troupe/cluster/node/dashboard"
)

type natsFlags struct {
	url   string
	token string
	seed  string
}

func (f *natsFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.url, "nats", "nats://127.0.0.1:4222", "URL of the node's NATS server")
	cmd.Flags().StringVar(&f.token, "nats-token", "", "token the node's NATS server requires")
	cmd.Flags().StringVar(&f.seed, "nats-nkey-seed", "", "file holding the nkey seed (SU...) to authenticate with")
}

func (f *natsFlags) connect(ctx context.Context) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("troupe-cli"), nats.Timeout(5 * time.Second)}
	a := clientAuthOf(ctx)
	switch {
	case f.token != "":
		opts = append(opts, nats.Token(f.token))
	case a != nil && a.token != "": // --token: the node's auth tokens
		opts = append(opts, nats.Token(a.token))
	}
	if a != nil && a.pool != nil {
		opts = append(opts, nats.Secure(&tls.Config{RootCAs: a.pool, MinVersion: tls.VersionTLS12}))
	}
	if f.seed != "" {
		o, err := nats.NkeyOptionFromSeed(f.seed)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey-seed: %w", err)
		}
		opts = append(opts, o)
	}
	nc, err := nats.Connect(f.url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", f.url, err)
	}
	return nc, nil
}

func newPublishCmd() *cobra.Command {
	var (
		nf      natsFlags
		headers map[string]string
	)
	cmd := &cobra.Command{
		Use:   "publish TOPIC MESSAGE",
		Short: "Publish a message to a topic of a running node",
		Long: `Publish MESSAGE to TOPIC through the node's NATS server. Subscribers of the
topic (actors, troupe subscribe, any NATS client) receive it; on a durable topic
the node's stream stores it.`,
		Example: `  troupe publish orders.created '{"id":1}'`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := topics.ValidateTopic(args[0]); err != nil {
				return err
			}
			nc, err := nf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			if max := nc.MaxPayload(); int64(len(args[1])) > max {
				return &topics.TooLargeError{Topic: args[0], Size: len(args[1]), Limit: int(max)}
			}
			m := nats.NewMsg(args[0])
			m.Data = []byte(args[1])
			for k, v := range headers {
				m.Header.Set(k, v)
			}
			if err := nc.PublishMsg(m); err != nil {
				return err
			}
			if err := nc.FlushTimeout(5 * time.Second); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published %d bytes to %s\n", len(m.Data), args[0])
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().StringToStringVarP(&headers, "header", "H", nil, "message header KEY=VALUE (repeatable)")
	return cmd
}

func newSubscribeCmd() *cobra.Command {
	var (
		nf      natsFlags
		count   int
		timeout time.Duration
		format  string
		group   string
	)
	cmd := &cobra.Command{
		Use:   "subscribe TOPIC",
		Short: "Print the messages published to a topic (wildcards allowed) until Ctrl-C",
		Example: `  troupe subscribe 'troupe.events.account.>'
  troupe subscribe orders.created --count 1 --format json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := topics.ValidatePattern(args[0]); err != nil {
				return err
			}
			if format != "text" && format != "json" {
				return fmt.Errorf("--format %q: want text or json", format)
			}
			nc, err := nf.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			msgs := make(chan *nats.Msg, 1024)
			var sub *nats.Subscription
			if group != "" {
				sub, err = nc.ChanQueueSubscribe(args[0], group, msgs)
			} else {
				sub, err = nc.ChanSubscribe(args[0], msgs)
			}
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			if err := nc.Flush(); err != nil {
				return err
			}
			parent := cmd.Context()
			if parent == nil {
				parent = context.Background()
			}
			ctx, stop := signal.NotifyContext(parent, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			out := cmd.OutOrStdout()
			for n := 0; count == 0 || n < count; n++ {
				select {
				case m := <-msgs:
					if format == "json" {
						b, _ := json.Marshal(struct {
							Topic  string              `json:"topic"`
							Header map[string][]string `json:"header,omitempty"`
							Data   json.RawMessage     `json:"data"`
						}{m.Subject, m.Header, dashboard.PayloadJSON(m.Data)})
						fmt.Fprintln(out, string(b))
					} else {
						fmt.Fprintf(out, "[%s] %s\n", m.Subject, m.Data)
					}
				case <-ctx.Done():
					if errors.Is(ctx.Err(), context.DeadlineExceeded) && count > 0 {
						return fmt.Errorf("got %d of %d messages within %s", n, count, timeout)
					}
					return nil
				}
			}
			return nil
		},
	}
	nf.add(cmd)
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many messages (0: run until Ctrl-C)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "exit after this long (0: no limit)")
	cmd.Flags().StringVar(&format, "format", "text", "output: text ([topic] data) or json (one object per line)")
	cmd.Flags().StringVar(&group, "group", "", "share the messages with other subscribers of this group")
	return cmd
}
