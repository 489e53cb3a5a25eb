// Package linear checks that the histories of bank accounts (the demo
// domain, actors/examples/bank) seen by clients of a Troupe cluster are
// linearizable, with github.com/anishathalye/porcupine, and audits the
// accounts' event streams for lost and doubled operations. It is the
// checker of the cluster tests (docs/testing.md, ADR
// docs/adr/0015-linearizability-checker.md).
//
// Three parts:
//
//   - Model: a porcupine model of one account (Deposit, Withdraw, Read;
//     ref deduplication; outputs ok(balance), rejected(reason), unknown),
//     partitioned by account.
//   - Recorder: records operations from many goroutines on a monotonic
//     clock; Check runs the checker and, on a violation, writes porcupine's
//     HTML visualisation into a directory.
//   - Client: W workers sending Deposits, Withdrawals and reads through the
//     nodes' HTTP API (Connect), each with a unique ref and idempotency key,
//     recording every operation; ReadStreams and Audit then compare the
//     accounts' event streams with what the client was told.
//
// A test against a cluster of clustertest:
//
//	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Namespaces: true})
//	cl, err := linear.New(linear.Config{Nodes: urls, HTTPClient: c.HTTPClient(), Duration: 10 * time.Second})
//	...
//	stats, err := cl.Run(ctx) // meanwhile: c.Node(0).Kill(), c.Partition(...)
//	res, info, err := cl.Recorder().Check(30*time.Second, t.TempDir())
//	if res != porcupine.Ok { t.Fatalf("%s: %s", res, info) }
//	events, err := linear.ReadStreams(ctx, c.HTTPClient(), urls[1], cl.Accounts())
//	if rep := linear.Audit(cl.Recorder().Ops(), events); rep.Err() != nil { t.Fatal(rep.Err()) }
package linear
