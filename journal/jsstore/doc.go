// Package jsstore is the JetStream journal store, under construction: a
// journal.Store whose partitions are replicated JetStream streams (ADR
// 0010), each holding a fixed group of shards and written only by its
// owner, every append fenced by the stream's expected last sequence.
//
// It has no exported API yet. What it stands on lives in internal/:
// internal/jsbatch publishes one atomic batch with compare-and-set on the
// stream's sequence. bench_test.go measures the raw ceilings the store will
// be compared against (docs/benchmarks.md, "JetStream ceilings").
package jsstore
