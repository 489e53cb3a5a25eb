package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// goBlock is a fenced Go block of a Markdown file.
var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// Every Go snippet of docs/guide.md appears verbatim in this example's
// source, so the guide cannot drift from code that compiles and is tested.
// A snippet that is not from the example belongs in a fence other than go.
func TestGuideSnippetsComeFromTheExample(t *testing.T) {
	guide, err := os.ReadFile("../../../docs/guide.md")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var src strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
		src.WriteString("\n")
	}
	blocks := goBlock.FindAllStringSubmatch(string(guide), -1)
	if len(blocks) < 10 {
		t.Fatalf("docs/guide.md has %d Go snippets; the guide shows at least 10 parts of the example", len(blocks))
	}
	for i, b := range blocks {
		snippet := strings.Trim(b[1], "\n")
		if !strings.Contains(src.String(), snippet) {
			first, _, _ := strings.Cut(snippet, "\n")
			t.Errorf("snippet %d of docs/guide.md (%q) is not in actors/examples/quickstart: copy it from the example again", i+1, first)
		}
	}
}
