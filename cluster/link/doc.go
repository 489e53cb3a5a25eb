// Package link is a direct request/reply channel between the nodes of a
// cluster, for the one exchange that sits on a client's critical path: a
// command forwarded to the node that owns its entity (docs/adr/0020-direct-
// forward-link.md). A NATS request between two nodes crosses the sender's
// in-process connection, its server, the route, the owner's server and the
// owner's in-process connection, each a goroutine hand-off, and back; on
// the 2-core machine that is 3 times what one TCP round trip costs. The
// link is one TCP connection (TLS when configured) per pair of nodes,
// multiplexing requests by id.
//
// The link carries bytes and knows nothing of commands. It authenticates
// the dialling node by the cluster secret (HMAC of a nonce: the secret
// never crosses the wire) and, with TLS, by certificate; it does not
// retry. What it guarantees a caller is the difference between "not
// sent" (ErrNotSent: no byte of the request left this process, so it
// certainly did not run) and "sent, no answer" (any other error: it may
// have run), which is what a caller needs to retry safely.
//
// Usage:
//
//	srv := link.Serve(ln, link.ServerConfig{Secret: secret, Handler: func(ctx context.Context, req []byte) []byte {
//		return answer(ctx, req)
//	}})
//	defer srv.Close()
//
//	c := link.NewClient(link.ClientConfig{Secret: secret})
//	defer c.Close()
//	reply, err := c.Call(ctx, "10.0.0.2:6223", req)
//	if errors.Is(err, link.ErrNotSent) { ... send it another way ... }
package link
