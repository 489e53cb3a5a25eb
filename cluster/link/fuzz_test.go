package link

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReadFrame feeds the frame decoder arbitrary bytes (what a broken or
// hostile peer may send after the handshake): it returns a frame or an
// error, never panics, never allocates past MaxFrame, and a frame it
// returns encodes back to the bytes it read.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, 7, []byte("hello")))
	f.Add(appendFrame(nil, 0, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 'a'})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, p, err := readFrame(bytes.NewReader(b), make([]byte, headerLen))
		if err != nil {
			var big *FrameTooLargeError
			if errors.As(err, &big) && big.Size <= MaxFrame {
				t.Fatalf("too large at %d", big.Size)
			}
			return
		}
		if got := appendFrame(nil, id, p); !bytes.Equal(got, b[:len(got)]) {
			t.Fatalf("frame %d %q re-encodes to %x, read from %x", id, p, got, b)
		}
	})
}

// FuzzGreeting feeds the handshake parser arbitrary bytes.
func FuzzGreeting(f *testing.F) {
	f.Add(appendHello(nil, make([]byte, nonceLen)))
	f.Add([]byte("INFO {}\r\n"))
	f.Add([]byte("TRLK\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rest, err := parseGreeting(b, "greeting")
		if err == nil && (len(b) < 5 || len(rest) != len(b)-5) {
			t.Fatalf("accepted %x", b)
		}
	})
}
