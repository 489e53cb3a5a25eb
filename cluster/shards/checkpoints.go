package shards

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/actors"
)

// PartitionEpoch reports whether this node serves shard p (in a cluster a
// shard is a partition of the journal) and its lease's epoch; it makes
// the Manager an actors.PartitionOwner.
func (m *Manager) PartitionEpoch(p int) (uint64, bool) {
	if p < 0 || p >= len(m.shards) {
		return 0, false
	}
	sh := m.shards[p]
	if State(sh.state.Load()) != Serving {
		return 0, false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.epoch, sh.epoch != 0 && State(sh.state.Load()) == Serving
}

var _ actors.PartitionOwner = (*Manager)(nil)

// DefaultCheckpointBucket is the KV bucket of Checkpoints.
const DefaultCheckpointBucket = "troupe-checkpoints"

// Checkpoints keeps the checkpoints of projections with side effects
// (reactors, the events publisher) in a replicated KV bucket, one key per
// projection and partition, each write a compare-and-set on the key's
// revision and refused under an epoch lower than the stored one. It
// implements actors.CheckpointStore; its methods are safe for concurrent
// use.
type Checkpoints struct {
	kv jetstream.KeyValue

	mu   sync.Mutex
	revs map[string]uint64 // key → revision of this node's last write
}

var _ actors.CheckpointStore = (*Checkpoints)(nil)

// OpenCheckpoints creates (or binds to) the bucket with replicas replicas.
// Of several nodes opening it at once, one creates it and the others bind
// to it (concurrent creates or updates of one bucket may go unanswered).
func OpenCheckpoints(ctx context.Context, js jetstream.JetStream, replicas int) (*Checkpoints, error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(actx, DefaultCheckpointBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(actx, jetstream.KeyValueConfig{
				Bucket: DefaultCheckpointBucket, History: 1, Replicas: replicas, Storage: jetstream.FileStorage,
			})
		}
		cancel()
		if err == nil {
			return &Checkpoints{kv: kv, revs: map[string]uint64{}}, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("shards: checkpoint bucket: %w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

type checkpoint struct {
	Pos   uint64 `json:"pos"`
	Epoch uint64 `json:"epoch"`
}

// key is "<base64url of the projection>.<partition>": projection names
// may hold characters KV keys cannot.
func checkpointKey(projection string, partition int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(projection)) + "." + strconv.Itoa(partition)
}

func (c *Checkpoints) get(ctx context.Context, key string) (checkpoint, uint64, error) {
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return checkpoint{}, 0, nil
	}
	if err != nil {
		return checkpoint{}, 0, err
	}
	var cp checkpoint
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return checkpoint{}, 0, fmt.Errorf("shards: checkpoint %s at revision %d does not decode: %w", key, e.Revision(), err)
	}
	return cp, e.Revision(), nil
}

// Load returns a projection's checkpoint for a partition.
func (c *Checkpoints) Load(ctx context.Context, projection string, partition int) (uint64, error) {
	cp, _, err := c.get(ctx, checkpointKey(projection, partition))
	return cp.Pos, err
}

// Save records a checkpoint under epoch; see actors.CheckpointStore.
func (c *Checkpoints) Save(ctx context.Context, projection string, partition int, pos, epoch uint64) error {
	key := checkpointKey(projection, partition)
	val, _ := json.Marshal(checkpoint{Pos: pos, Epoch: epoch})
	c.mu.Lock()
	rev, known := c.revs[key]
	c.mu.Unlock()
	for attempt := 0; attempt < 8; attempt++ {
		if !known {
			cp, r, err := c.get(ctx, key)
			if err != nil {
				return err
			}
			if cp.Epoch > epoch {
				return fmt.Errorf("%w: %s partition %d saved under epoch %d, this node's is %d", actors.ErrFencedCheckpoint, projection, partition, cp.Epoch, epoch)
			}
			rev, known = r, true
		}
		var r uint64
		var err error
		if rev == 0 {
			r, err = c.kv.Create(ctx, key, val)
		} else {
			r, err = c.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			c.mu.Lock()
			c.revs[key] = r
			c.mu.Unlock()
			return nil
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSequence(err) {
			known = false // someone else wrote, or our read was stale: read again
			continue
		}
		if ctx.Err() != nil {
			return err
		}
		// A timeout is not a failure: the write may have landed; read.
		known = false
		t := time.NewTimer(time.Duration(attempt+1) * 20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	return fmt.Errorf("shards: checkpoint of %s partition %d not saved after 8 attempts", projection, partition)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
