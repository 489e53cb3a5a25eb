package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	troupev1 "github.com/troupe-dev/troupe/proto/troupe/v1"
	"github.com/troupe-dev/troupe/proto/troupe/v1/troupev1connect"
)

const defaultNode = "http://127.0.0.1:8080"

func addNodeFlag(cmd *cobra.Command, node *string, timeout *time.Duration) {
	cmd.Flags().StringVar(node, "node", defaultNode, "URL of the node's API")
	cmd.Flags().DurationVar(timeout, "timeout", 15*time.Second, "how long to wait for the node")
}

// httpClient is the CLI's client of a node's API; it presents the
// command's --token and trusts its --tls-ca (clientauth.go).
func httpClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: authTransport{}}
}

// sendRetryable reports whether a failed send may be retried with the same
// idempotency key: the node did not answer in time (the command may or may
// not have been applied) or could not take it now.
func sendRetryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeDeadlineExceeded, connect.CodeUnavailable:
		return true
	}
	return false
}

// notApplied reports whether err says the node did not apply the command
// (docs/errors.md: such messages say "the command was not applied"), so
// that the command certainly did not happen. Any other error of a send
// (a deadline, a lost connection) leaves its outcome unknown.
func notApplied(err error) bool {
	return strings.Contains(err.Error(), "the command was not applied")
}

// newIdempotencyKey returns a fresh random key for one `troupe send`.
func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "send-" + hex.EncodeToString(b[:])
}

// sendBackoff is the wait before retry n (1, 2, ...): 100 ms doubling, at
// most 2 s.
func sendBackoff(n int) time.Duration {
	return min(100*time.Millisecond<<(n-1), 2*time.Second)
}

func newSendCmd() *cobra.Command {
	var (
		node, key string
		timeout   time.Duration
		verbose   bool
		noKey     bool
		retries   int
	)
	cmd := &cobra.Command{
		Use:   "send KIND/ID [TYPE] JSON",
		Short: "Send a command to an entity of a running node",
		Long: `Send a command to the entity KIND/ID of a running node and print its reply.

TYPE names the command. Without it, the JSON object's "type" member names the
command and its other members are the command's payload.

A command that fails with deadline_exceeded may still have been applied: the
outcome is unknown. So send gives every command an idempotency key (a fresh
random one, unless you pass --idempotency-key) and retries a
deadline_exceeded or unavailable answer with the same key, up to --retries
times: the node applies a key at most once, so the command takes effect
exactly once. --no-idempotency-key sends without a key and never retries.`,
		Example: `  troupe send account/acc-1 Open '{"owner":"ada"}'
  troupe send account/acc-1 Deposit '{"amount":100}'
  troupe send account/acc-1 '{"type":"Withdraw","amount":30}'`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, id, ok := strings.Cut(args[0], "/")
			if !ok || kind == "" || id == "" {
				return fmt.Errorf("entity %q: want KIND/ID, e.g. account/acc-1", args[0])
			}
			typ, body := "", args[len(args)-1]
			if len(args) == 3 {
				typ = args[1]
			}
			var payload map[string]any
			if err := json.Unmarshal([]byte(body), &payload); err != nil {
				return fmt.Errorf("payload %q is not a JSON object: %v", body, err)
			}
			if typ == "" {
				t, ok := payload["type"].(string)
				if !ok || t == "" {
					return fmt.Errorf(`no command type: pass TYPE or a "type" member in the JSON`)
				}
				typ = t
				delete(payload, "type")
			}
			st, err := structpb.NewStruct(payload)
			if err != nil {
				return fmt.Errorf("payload: %v", err)
			}
			switch {
			case noKey && key != "":
				return errors.New("--no-idempotency-key and --idempotency-key exclude each other")
			case retries < 0:
				return fmt.Errorf("--retries %d: want 0 or more", retries)
			case noKey:
				retries = 0 // without a key a retry could apply the command twice
			case key == "":
				key = newIdempotencyKey()
			}
			// Each attempt is bounded by --timeout through its context (the
			// node learns the deadline from the request), not by the HTTP
			// client, so that a timeout is reported as deadline_exceeded.
			c := troupev1connect.NewCommandServiceClient(httpClient(0), node)
			req := &troupev1.SendRequest{Kind: kind, Id: id, Type: typ, Payload: st, IdempotencyKey: key}
			var resp *connect.Response[troupev1.SendResponse]
			unknown := false // an attempt may have applied the command
			for attempt := 0; ; attempt++ {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				resp, err = c.Send(ctx, connect.NewRequest(req))
				cancel()
				if err == nil {
					break
				}
				if !sendRetryable(err) || cmd.Context().Err() != nil {
					return err
				}
				unknown = unknown || !notApplied(err)
				if attempt >= retries {
					if key == "" {
						return err
					}
					if !unknown {
						return connect.NewError(connect.CodeOf(err), fmt.Errorf("%s (none of %d attempts applied it; sent again with --idempotency-key %s, it applies at most once)",
							oneLineErr(err), attempt+1, key))
					}
					return connect.NewError(connect.CodeOf(err), fmt.Errorf("%s (the command may or may not have been applied: send it again with --idempotency-key %s, which applies it at most once)",
						oneLineErr(err), key))
				}
				wait := sendBackoff(attempt + 1)
				fmt.Fprintf(cmd.ErrOrStderr(), "troupe: %s: %s; retrying in %v with idempotency key %s (%d of %d)\n",
					connect.CodeOf(err), oneLineErr(err), wait, key, attempt+1, retries)
				select {
				case <-time.After(wait):
				case <-cmd.Context().Done():
					return err
				}
			}
			if verbose {
				return printJSON(cmd, resp.Msg)
			}
			if resp.Msg.GetReply() == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "ok")
				return nil
			}
			return printJSON(cmd, resp.Msg.GetReply())
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&key, "idempotency-key", "", "make the command idempotent under this key (default: a fresh random key)")
	cmd.Flags().BoolVar(&noKey, "no-idempotency-key", false, "send without an idempotency key, and never retry")
	cmd.Flags().IntVar(&retries, "retries", 3, "retries of a deadline_exceeded or unavailable answer, with the same idempotency key (0: none)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the whole response (sequence, position, events)")
	return cmd
}

func newQueryCmd() *cobra.Command {
	var (
		node    string
		minPos  string
		timeout time.Duration
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "query NAME [JSON]",
		Short: "Run a named query against a running node",
		Example: `  troupe query balance '{"id":"acc-1"}'
  troupe query balance '{"id":"acc-1"}' --min-position t1.AL0C`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			params := map[string]any{}
			if len(args) == 2 {
				if err := json.Unmarshal([]byte(args[1]), &params); err != nil {
					return fmt.Errorf("params %q are not a JSON object: %v", args[1], err)
				}
			}
			st, err := structpb.NewStruct(params)
			if err != nil {
				return fmt.Errorf("params: %v", err)
			}
			c := troupev1connect.NewQueryServiceClient(httpClient(timeout), node)
			resp, err := c.Query(cmd.Context(), connect.NewRequest(&troupev1.QueryRequest{
				Name: args[0], Params: st, MinPosition: minPos,
			}))
			if err != nil {
				return err
			}
			if verbose {
				return printJSON(cmd, resp.Msg)
			}
			return printJSON(cmd, resp.Msg.GetResult())
		},
	}
	addNodeFlag(cmd, &node, &timeout)
	cmd.Flags().StringVar(&minPos, "min-position", "", "wait until the read model has applied this consistency token (a command's \"token\", from troupe send -v; several comma-separated; or a position of a single node)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the whole response (with the position)")
	return cmd
}

func printJSON(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return nil
}

// oneLineErr renders an API error's message on one line.
func oneLineErr(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return strings.ReplaceAll(ce.Message(), "\n", " ")
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
