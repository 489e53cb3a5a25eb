package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("TROUPE_NODE", "http://127.0.0.1:1")
	var out, errOut bytes.Buffer
	if code := run([]string{"send", "account/a", "Open", "{}"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Fatalf("TROUPE_NODE not used: %d %q", code, errOut.String())
	}
	t.Setenv("TROUPE_TIMEOUT", "soon")
	errOut.Reset()
	if code := run([]string{"send", "account/a", "Open", "{}"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), `TROUPE_TIMEOUT="soon"`) {
		t.Fatalf("a bad TROUPE_TIMEOUT: %d %q", code, errOut.String())
	}
	// A flag on the command line wins over the environment.
	errOut.Reset()
	if code := run([]string{"send", "--timeout", "1s", "--node", "http://127.0.0.1:2", "account/a", "Open", "{}"}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), "127.0.0.1:2") {
		t.Fatalf("flags did not win: %d %q", code, errOut.String())
	}
	// A bad value of a node setting names the variable too.
	t.Setenv("TROUPE_SYNC", "sometimes")
	errOut.Reset()
	if code := run([]string{"dev", "--data-dir", t.TempDir()}, &out, &errOut); code == 0 || !strings.Contains(errOut.String(), `TROUPE_SYNC="sometimes"`) {
		t.Fatalf("a bad TROUPE_SYNC: %d %q", code, errOut.String())
	}
}
