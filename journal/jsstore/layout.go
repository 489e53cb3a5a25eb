package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// layoutVersion is the version of the layout this code writes and reads.
const layoutVersion = 1

// layout is the record of a journal's shape, written once when the first
// Store opens it: the number of partitions is fixed for the life of the
// data (a stream's partition is a function of it).
type layout struct {
	Partitions int `json:"partitions"`
	Version    int `json:"version"`
}

// LayoutError reports a Store configured with another number of
// partitions (shards) than the journal was created with. Opening it would
// put entities' events into other streams than their history.
type LayoutError struct {
	// Recorded is the journal's number of partitions, from its layout
	// record.
	Recorded int
	// Configured is Config.Partitions.
	Configured int
}

func (e *LayoutError) Error() string {
	return fmt.Sprintf("jsstore: the cluster's journal was created with %d shards; this node is configured with %d (--shards must match)", e.Recorded, e.Configured)
}

// metaBucket is the KV bucket of the journal's own records.
func (s *Store) metaBucket() string { return s.cfg.Prefix + "-meta" }

// checkLayout records the journal's layout, or compares this Store's with
// the recorded one. Of two first opens racing, one creates the record and
// the other reads and compares it.
func (s *Store) checkLayout(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.cfg.Timeout)
	defer cancel()
	kv, err := s.metaKV(ctx)
	if err != nil {
		return fmt.Errorf("jsstore: layout bucket %s: %w", s.metaBucket(), err)
	}
	want := layout{Partitions: s.cfg.Partitions, Version: layoutVersion}
	b, _ := json.Marshal(want)
	_, err = kv.Create(ctx, "layout", b)
	if err == nil {
		s.log.Info("journal layout recorded", "partitions", want.Partitions)
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("jsstore: record the layout in %s: %w", s.metaBucket(), err)
	}
	// Recorded already. A replica that lags may not have it yet (reads
	// of a KV bucket can be answered by any replica): retry, bounded.
	var e jetstream.KeyValueEntry
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		e, err = kv.Get(ctx, "layout")
		if !errors.Is(err, jetstream.ErrKeyNotFound) || wait > time.Second {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
	if err != nil {
		return fmt.Errorf("jsstore: read the layout from %s: %w", s.metaBucket(), err)
	}
	var got layout
	if err := json.Unmarshal(e.Value(), &got); err != nil {
		return fmt.Errorf("jsstore: the layout record in %s does not decode: %w", s.metaBucket(), err)
	}
	switch {
	case got.Version != layoutVersion:
		return fmt.Errorf("jsstore: the journal's layout is version %d; this node reads version %d", got.Version, layoutVersion)
	case got.Partitions != want.Partitions:
		return &LayoutError{Recorded: got.Partitions, Configured: want.Partitions}
	}
	return nil
}

// metaKV binds to the meta bucket, creating it if needed; like
// ensureStream, with short requests and re-reads on a lost race.
func (s *Store) metaKV(ctx context.Context) (jetstream.KeyValue, error) {
	var lastErr error
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		rctx, cancel := context.WithTimeout(ctx, min(s.cfg.Timeout, 2*time.Second))
		kv, err := s.js.KeyValue(rctx, s.metaBucket())
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = s.js.CreateKeyValue(rctx, jetstream.KeyValueConfig{
				Bucket:      s.metaBucket(),
				Description: "the journal's layout (jsstore)",
				History:     1,
				Replicas:    s.cfg.Replicas,
				Storage:     jetstream.FileStorage,
			})
		}
		cancel()
		if err == nil {
			return kv, nil
		}
		lastErr = err
		if err := pause(ctx, wait); err != nil {
			return nil, errors.Join(err, lastErr)
		}
	}
}
