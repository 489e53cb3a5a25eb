package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityIsRecordedAndKept(t *testing.T) {
	dir := t.TempDir()
	gen, err := loadIdentity(dir, "")
	if err != nil || ValidateNodeID(gen.NodeID) != nil || !strings.HasPrefix(gen.NodeID, "node-") {
		t.Fatalf("generated identity %+v, %v", gen, err)
	}
	again, err := loadIdentity(dir, "")
	if err != nil || again != gen {
		t.Fatalf("second start: %+v, %v; want the recorded %+v", again, err, gen)
	}
	if same, err := loadIdentity(dir, gen.NodeID); err != nil || same != gen {
		t.Fatalf("the recorded id given as a flag: %+v, %v", same, err)
	}
	if _, err := loadIdentity(dir, "other"); err == nil || !strings.Contains(err.Error(), gen.NodeID) || !strings.Contains(err.Error(), `"other"`) {
		t.Fatalf("a data dir of another node: %v; want a refusal naming both ids", err)
	}
	gen.ClusterID = "c0ffee"
	if err := saveIdentity(dir, gen); err != nil {
		t.Fatal(err)
	}
	if got, err := loadIdentity(dir, ""); err != nil || got.ClusterID != "c0ffee" {
		t.Fatalf("cluster id not kept: %+v, %v", got, err)
	}
	named, err := loadIdentity(t.TempDir(), "n7")
	if err != nil || named.NodeID != "n7" {
		t.Fatalf("flag id on a new dir: %+v, %v", named, err)
	}
	if err := os.WriteFile(filepath.Join(dir, identityFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(dir, ""); err == nil || !strings.Contains(err.Error(), "node.json") {
		t.Fatalf("corrupt node.json: %v", err)
	}
}
