package journal

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Token is a consistency token: for some partitions of the log, a position
// a reader must have reached. A command's reply carries the token of its
// last event; a query given the token waits until its read model has
// applied that position in that partition, so it sees the command's effect
// (read-your-writes), on any node. Tokens merge: the merge of two tokens
// holds, per partition, the greater position.
//
// Its text form (String, ParseToken) is opaque to clients. The zero Token
// asks for nothing. A Token is immutable; its methods are safe for
// concurrent use.
type Token struct {
	pos map[int]uint64 // partition -> position; no zero positions
}

// TokenAt is the token of one position in one partition.
func TokenAt(partition int, position uint64) Token {
	if position == 0 || partition < 0 {
		return Token{}
	}
	return Token{pos: map[int]uint64{partition: position}}
}

// IsZero reports whether the token asks for nothing.
func (t Token) IsZero() bool { return len(t.pos) == 0 }

// Position is the token's position in partition (0: none).
func (t Token) Position(partition int) uint64 { return t.pos[partition] }

// Partitions lists the partitions the token names, in order.
func (t Token) Partitions() []int { return slices.Sorted(maps.Keys(t.pos)) }

// Merge returns the token that holds, per partition, the greater position
// of t and o.
func (t Token) Merge(o Token) Token {
	if len(o.pos) == 0 {
		return t
	}
	if len(t.pos) == 0 {
		return o
	}
	m := maps.Clone(t.pos)
	for p, v := range o.pos {
		if v > m[p] {
			m[p] = v
		}
	}
	return Token{pos: m}
}

// tokenPrefix starts a token's text form (and versions it).
const tokenPrefix = "t1."

// maxTokenPartitions bounds what ParseToken accepts (a cluster has at most
// a few thousand partitions).
const maxTokenPartitions = 1 << 16

// String is the token's opaque text form: "" for the zero token, else
// "t1." and the base64url of (partition delta, position) varint pairs in
// partition order.
func (t Token) String() string {
	if len(t.pos) == 0 {
		return ""
	}
	buf := make([]byte, 0, 2*binary.MaxVarintLen64*len(t.pos))
	prev := 0
	for _, p := range t.Partitions() {
		buf = binary.AppendUvarint(buf, uint64(p-prev))
		buf = binary.AppendUvarint(buf, t.pos[p])
		prev = p
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(buf)
}

// ErrBadToken is wrapped by ParseToken's errors; it wraps ErrInvalid.
var ErrBadToken = fmt.Errorf("%w: bad consistency token", ErrInvalid)

// ParseToken reads one or several tokens separated by commas and merges
// them. Each is a token's text form, or a plain decimal position, which is
// a position in partition 0 (a single node's log has one partition, so the
// position a single node reports is a token too). Blank input is the zero
// token.
func ParseToken(s string) (Token, error) {
	var t Token
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		one, err := parseOne(part)
		if err != nil {
			return Token{}, err
		}
		t = t.Merge(one)
	}
	return t, nil
}

func parseOne(s string) (Token, error) {
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return TokenAt(0, n), nil
	}
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return Token{}, fmt.Errorf("%w %q: want a token from a command's reply (t1....) or a position", ErrBadToken, short(s))
	}
	buf, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return Token{}, fmt.Errorf("%w %q: %v", ErrBadToken, short(s), err)
	}
	m := map[int]uint64{}
	p := uint64(0)
	for first := true; len(buf) > 0; first = false {
		d, n := binary.Uvarint(buf)
		if n <= 0 {
			return Token{}, fmt.Errorf("%w %q: truncated", ErrBadToken, short(s))
		}
		buf = buf[n:]
		v, n := binary.Uvarint(buf)
		if n <= 0 {
			return Token{}, fmt.Errorf("%w %q: truncated", ErrBadToken, short(s))
		}
		buf = buf[n:]
		if !first && d == 0 {
			return Token{}, fmt.Errorf("%w %q: a partition appears twice", ErrBadToken, short(s))
		}
		if d >= maxTokenPartitions || p+d >= maxTokenPartitions {
			return Token{}, fmt.Errorf("%w %q: partition beyond %d", ErrBadToken, short(s), maxTokenPartitions)
		}
		p += d
		if v == 0 {
			return Token{}, fmt.Errorf("%w %q: zero position", ErrBadToken, short(s))
		}
		m[int(p)] = v
	}
	if len(m) == 0 {
		return Token{}, fmt.Errorf("%w %q: empty", ErrBadToken, short(s))
	}
	return Token{pos: m}, nil
}

func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
