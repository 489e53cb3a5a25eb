package membership

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("membership: closed")

// ErrNotStarted is returned by methods that need a running member before
// Start.
var ErrNotStarted = errors.New("membership: not started")

// ErrLeft is returned by Join and SetTags after Leave.
var ErrLeft = errors.New("membership: this member has left the cluster")

// ConflictError reports two members claiming one node id at different
// addresses. Join returns it when the cluster already has a live member
// with this node's id; the existing member keeps its place.
type ConflictError struct {
	ID string // the contested node id
	// OtherAddr is the gossip address of the member that holds ID in the
	// cluster that was contacted.
	OtherAddr string
	// OtherState is that member's state as the contacted side saw it.
	// Alive is final. Suspect and Leaving clear by themselves (the member
	// is declared failed, or finishes leaving, and its id is free), so
	// Join retries those until its attempts run out.
	OtherState State
	// Addr is the address of the member on this side (this node when it
	// is the one joining).
	Addr string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("membership: node id %q is already used by the member at %s (%s); the member at %s cannot join with the same id: node ids must be unique",
		e.ID, e.OtherAddr, e.OtherState, e.Addr)
}

// retryable reports whether the other claim may go away by itself.
func (e *ConflictError) retryable() bool {
	return e.OtherState == Suspect || e.OtherState == Leaving
}

// KeyMismatchError is returned by Join when a seed refused this node's
// gossip because the encryption keys differ (or one side has a key and the
// other none). Nothing was joined.
type KeyMismatchError struct {
	Seed string // the seed that refused
	Err  error  // memberlist's report
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("membership: join %s: the gossip encryption key does not match the cluster's (or only one side has a key): %v",
		e.Seed, e.Err)
}

func (e *KeyMismatchError) Unwrap() error { return e.Err }

// isKeyMismatch recognises memberlist's errors for a stream that the
// other side could not decrypt, or that was (not) encrypted against
// expectations. memberlist has no typed errors for these; the texts are in
// memberlist's net.go and security.go (v0.7.0).
func isKeyMismatch(err error) bool {
	if err == nil {
		return false
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "no installed keys could decrypt") ||
		strings.Contains(s, "encryption is not configured") ||
		strings.Contains(s, "remote state is not encrypted")
}

// JoinError is returned by Join when no seed answered.
type JoinError struct {
	Seeds    []string // the seeds tried
	Attempts int      // rounds made over all seeds
	// Err holds the last failure of each seed (errors.Join), and the
	// context's error when the context ended the retries.
	Err error
}

func (e *JoinError) Error() string {
	return fmt.Sprintf("membership: join: no seed answered after %d attempt(s) (seeds: %s): %s",
		e.Attempts, strings.Join(e.Seeds, ", "), strings.ReplaceAll(fmt.Sprint(e.Err), "\n", "; "))
}

func (e *JoinError) Unwrap() error { return e.Err }

// TagsTooLargeError is returned by New and SetTags for tags that do not fit
// serf's limit.
type TagsTooLargeError struct {
	Size  int // encoded size in bytes
	Limit int // MaxTagsSize
	// Largest names the tags with the longest key+value, largest first (at
	// most three), to show where to cut.
	Largest []string
}

func (e *TagsTooLargeError) Error() string {
	return fmt.Sprintf("membership: tags take %d bytes encoded, over serf's limit of %d; largest: %s",
		e.Size, e.Limit, strings.Join(e.Largest, ", "))
}

// TagsSize returns the encoded size of tags as serf puts them on the wire
// (protocol 3 and later: a magic byte and a msgpack map). It must stay at
// or below MaxTagsSize.
func TagsSize(tags map[string]string) int {
	var buf bytes.Buffer
	buf.WriteByte(255) // serf's tagMagicByte
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{}).Encode(tags); err != nil {
		// A map of strings always encodes; treat the impossible as too big.
		return MaxTagsSize + 1
	}
	return buf.Len()
}

func checkTags(tags map[string]string) error {
	size := TagsSize(tags)
	if size <= MaxTagsSize {
		return nil
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		li, lj := len(keys[i])+len(tags[keys[i]]), len(keys[j])+len(tags[keys[j]])
		if li != lj {
			return li > lj
		}
		return keys[i] < keys[j]
	})
	if len(keys) > 3 {
		keys = keys[:3]
	}
	largest := make([]string, len(keys))
	for i, k := range keys {
		largest[i] = fmt.Sprintf("%s (%d bytes)", k, len(k)+len(tags[k]))
	}
	return &TagsTooLargeError{Size: size, Limit: MaxTagsSize, Largest: largest}
}
