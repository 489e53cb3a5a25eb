package node

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// identityFile records, in the data dir, which node the data belongs to
// and which cluster (once the node has been in one).
const identityFile = "node.json"

// identity is what a data dir says about its node.
type identity struct {
	// NodeID is the node's stable id: serf name, NATS server name.
	NodeID string `json:"node_id"`
	// ClusterID is the id of the cluster this data belongs to ("" for a
	// node that has never been in one).
	ClusterID string `json:"cluster_id,omitempty"`
}

// validID is the shape of node and cluster ids: they become serf names,
// NATS server names and subject tokens.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// ValidateNodeID reports whether id can name a node.
func ValidateNodeID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("node: node id %q: want 1 to 63 letters, digits, '-' or '_', starting with a letter or digit", id)
	}
	return nil
}

// loadIdentity reads the data dir's identity, creating it on first use:
// with want as the node id, or a generated one. A data dir that belongs to
// another node is refused: its history is that node's.
func loadIdentity(dir, want string) (identity, error) {
	path := filepath.Join(dir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		id := identity{NodeID: want}
		if id.NodeID == "" {
			id.NodeID = "node-" + randomHex(4)
		}
		return id, saveIdentity(dir, id)
	case err != nil:
		return identity{}, fmt.Errorf("node: read %s: %w", path, err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return identity{}, fmt.Errorf("node: %s is not a node identity: %w", path, err)
	}
	if err := ValidateNodeID(id.NodeID); err != nil {
		return identity{}, fmt.Errorf("node: %s: %w", path, err)
	}
	if want != "" && want != id.NodeID {
		return identity{}, fmt.Errorf("node: data dir %s belongs to node %q, not %q: start it with --node-id %s, or use another data dir", dir, id.NodeID, want, id.NodeID)
	}
	return id, nil
}

// saveIdentity writes the identity atomically (temp file, fsync, rename).
func saveIdentity(dir string, id identity) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, identityFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("node: write %s: %w", path, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("node: write %s: %w", path, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
