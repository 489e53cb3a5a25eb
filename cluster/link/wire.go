package link

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The wire, all integers big-endian:
//
//	server → client  hello:   "TRLK" version(1) nonce(32)
//	client → server  auth:    "TRLK" version(1) HMAC-SHA256(secret, "troupe-link/1" nonce)(32)
//	server → client  verdict: 0 (accepted) or 1 (refused, then the server closes)
//	then, both ways, frames:  length(4) id(8) payload(length)
//
// A request and its reply have the same id; the client picks ids, never
// reusing one on a connection. A frame longer than MaxFrame ends the
// connection.

const (
	version  = 1
	nonceLen = 32
	macLen   = sha256.Size
	helloLen = 4 + 1 + nonceLen
	authLen  = 4 + 1 + macLen
	// headerLen is a frame's header: payload length and id.
	headerLen = 12
	// MaxFrame is the largest payload a frame may carry (a forwarded
	// command is bounded far below it by the API's request limits).
	MaxFrame = 16 << 20
)

var magic = [4]byte{'T', 'R', 'L', 'K'}

var (
	// ErrNotSent says that no byte of a request left this process: it
	// did not reach the other node, so it certainly did not run there.
	ErrNotSent = errors.New("link: the request was not sent")
	// ErrClosed is returned by Call after Close.
	ErrClosed = errors.New("link: closed")
	// ErrRefused is a handshake that the other node refused: a different
	// cluster secret, or a different version of the link.
	ErrRefused = errors.New("link: the other node refused the connection (a different cluster secret?)")
	// errBroken is a connection that failed with requests in flight.
	errBroken = errors.New("link: the connection broke before the answer came")
)

// FrameTooLargeError is a frame whose payload is over MaxFrame: a request
// that Call refuses to send, or a frame read from the wire (then the
// connection is closed).
type FrameTooLargeError struct{ Size int }

func (e *FrameTooLargeError) Error() string {
	return fmt.Sprintf("link: a frame of %d bytes is over the limit of %d", e.Size, MaxFrame)
}

// mac is the proof of the secret for a nonce.
func mac(secret string, nonce []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte("troupe-link/1"))
	h.Write(nonce)
	return h.Sum(nil)
}

func appendHello(b, nonce []byte) []byte {
	return append(append(append(b, magic[:]...), version), nonce...)
}

// parseGreeting checks the magic and version of a hello or auth message of
// n bytes and returns what follows them.
func parseGreeting(b []byte, what string) ([]byte, error) {
	if len(b) < 5 || [4]byte(b[:4]) != magic {
		return nil, fmt.Errorf("link: the %s is not a Troupe link's (%q)", what, b[:min(len(b), 5)])
	}
	if b[4] != version {
		return nil, fmt.Errorf("link: the %s is of link version %d, this node speaks %d", what, b[4], version)
	}
	return b[5:], nil
}

// appendFrame appends a frame of payload p with id to b.
func appendFrame(b []byte, id uint64, p []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
	b = binary.BigEndian.AppendUint64(b, id)
	return append(b, p...)
}

// readFrame reads one frame; hdr is a scratch buffer of headerLen bytes.
// The payload is newly allocated (the caller keeps it).
func readFrame(r io.Reader, hdr []byte) (uint64, []byte, error) {
	if _, err := io.ReadFull(r, hdr[:headerLen]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr)
	id := binary.BigEndian.Uint64(hdr[4:])
	if n > MaxFrame {
		return 0, nil, &FrameTooLargeError{Size: int(n)}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("link: frame %d of %d bytes: %w", id, n, err)
	}
	return id, p, nil
}
