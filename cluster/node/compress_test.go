package node

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// TestSmallAnswersAreNotCompressed: a client that accepts gzip gets a
// command's few-dozen-byte answer as is (compressing it costs more than
// it saves), and a statement of many lines compressed.
func TestSmallAnswersAreNotCompressed(t *testing.T) {
	n := startNode(t, testConfig(t))
	t.Cleanup(func() {
		if err := n.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	})
	url := "http://" + n.HTTPAddr()
	post := func(path, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", url+path, bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		// Go's transport decompresses by itself only when it set the
		// header; here the test sees the raw body.
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		return resp, b
	}
	send := func(typ, payload string) (*http.Response, []byte) {
		return post("/troupe.v1.CommandService/Send", fmt.Sprintf(`{"kind":"account","id":"z1","type":%q,"payload":%s}`, typ, payload))
	}
	send("Open", `{"owner":"zed"}`)
	var last []byte
	for i := range 40 {
		resp, b := send("Deposit", fmt.Sprintf(`{"amount":1,"ref":"deposit-number-%d"}`, i))
		if enc := resp.Header.Get("Content-Encoding"); enc != "" {
			t.Fatalf("a %d-byte answer came with Content-Encoding %q, want none", len(b), enc)
		}
		last = b
	}
	var sent struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(last, &sent); err != nil || sent.Token == "" {
		t.Fatalf("%s: %v", last, err)
	}
	resp, b := post("/troupe.v1.QueryService/Query",
		fmt.Sprintf(`{"name":"statement","params":{"id":"z1","limit":50},"minPosition":%q}`, sent.Token))
	if enc := resp.Header.Get("Content-Encoding"); enc != "gzip" {
		t.Fatalf("a statement of 41 lines came with Content-Encoding %q (%d bytes), want gzip", enc, len(b))
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || !bytes.Contains(plain, []byte("deposit-number-39")) {
		t.Fatalf("statement: %v\n%.300s", err, plain)
	}
	if len(plain) < 1024 {
		t.Fatalf("the statement is %d bytes; the test wants one over 1 KiB", len(plain))
	}
}
