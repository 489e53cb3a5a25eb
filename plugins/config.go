package plugins

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
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

	// MemoryBudget bounds, in bytes, the linear memory of every plugin
	// instance of this host together. Each instance reserves its manifest's
	// limit (memory_pages) while it lives: a plugin whose pool
	// (max_instances × memory_pages) exceeds the budget, or whose first
	// instance does not fit in what is left, is refused at load; a pool
	// that cannot grow within the budget makes its callers wait for a busy
	// instance. Zero means DefaultMemoryBudget(): a quarter of the memory
	// of the machine (or of the process's cgroup), at least 256 MiB.
	MemoryBudget int64

	// Tracer, when set, records a span per sidecar call and per
	// ambassador call (trace.go). Nil: no spans.
	Tracer trace.Tracer
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
	if c.MemoryBudget == 0 {
		c.MemoryBudget = DefaultMemoryBudget()
	}
}

// Validate checks a Config whose defaults are applied.
func (c *Config) Validate() error {
	if c.ReloadDebounce < 0 {
		return errors.New("plugins: negative ReloadDebounce")
	}
	if c.MemoryBudget < 0 {
		return errors.New("plugins: negative MemoryBudget")
	}
	return nil
}
