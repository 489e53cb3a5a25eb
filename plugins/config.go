package plugins

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Host. The zero value is valid: no plugin directory, no
// disk cache, logs discarded, no metrics.
type Config struct {
	// Dir is the plugin directory: NAME.wasm with NAME.toml beside it.
	// Empty means no plugins; the host still works (every delivery is
	// allowed unchanged). A directory that does not exist yet is not an
	// error: Reload picks it up once it exists.
	Dir string

	// CacheDir holds wazero's compilation cache, so that a restart loads a
	// Go plugin in tens of milliseconds instead of half a second. Empty
	// means an in-memory cache only (shared by reloads of this Host).
	CacheDir string

	// Node names this node in PluginRequest.context.node.
	Node string

	// Logger receives the host's logs and the guests' log calls (with a
	// "plugin" attribute). Nil discards them.
	Logger *slog.Logger

	// Metrics registers the per-plugin metrics (calls, rejects, failures,
	// latency, loads). Nil means no metrics.
	Metrics prometheus.Registerer

	// NoWatch turns hot reload off. By default the host watches Dir and
	// reloads plugins whose files change (Reload still works either way).
	NoWatch bool

	// ReloadDebounce is how long the watcher waits after the last change
	// in Dir before reloading, so that a file being copied is read whole.
	// Zero means 200ms.
	ReloadDebounce time.Duration

	// Getenv resolves "env:NAME" secrets. Nil means os.LookupEnv.
	Getenv func(string) (string, bool)
}

func (c *Config) applyDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ReloadDebounce == 0 {
		c.ReloadDebounce = 200 * time.Millisecond
	}
	if c.Getenv == nil {
		c.Getenv = os.LookupEnv
	}
}

// Validate checks a Config whose defaults are applied.
func (c *Config) Validate() error {
	if c.ReloadDebounce < 0 {
		return errors.New("plugins: negative ReloadDebounce")
	}
	return nil
}
