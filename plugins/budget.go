package plugins

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// pageSize is a wasm page.
const pageSize = 64 << 10

// DefaultMemoryBudget returns the node-wide plugin memory budget used when
// Config.MemoryBudget is zero: a quarter of the memory this process may use
// (the cgroup limit when there is one, else the machine's memory), at least
// 256 MiB. With neither known it is 1 GiB.
func DefaultMemoryBudget() int64 {
	limit := machineMemory()
	if cg := cgroupMemoryLimit(); cg > 0 && (limit == 0 || cg < limit) {
		limit = cg
	}
	if limit == 0 {
		return 1 << 30
	}
	return max(limit/4, 256<<20)
}

// machineMemory reads MemTotal from /proc/meminfo (0 when unknown).
func machineMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// cgroupMemoryLimit reads the cgroup v2 (or v1) memory limit of this
// process (0 when there is none).
func cgroupMemoryLimit() int64 {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n < 1<<60 {
			return n
		}
	}
	return 0
}

// budget accounts the linear memory plugins may reach, node-wide. Each
// instance reserves its limit (limits.memory_pages) for its whole life: a
// reservation is what the guest may grow to, so the sum of reservations
// bounds what plugins can take from the node, whatever they do.
type budget struct {
	limit int64
	mu    sync.Mutex
	used  int64
}

// BudgetError refuses a plugin (or an extra instance of one) that would take
// plugin memory past the node-wide budget.
type BudgetError struct {
	Plugin string
	// Demand is what was asked: one instance's limit, or the whole pool's.
	Demand int64
	What   string // "its pool of N instances" or "one more instance"
	Budget int64
	// InUse is what other instances hold.
	InUse int64
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("plugins: memory budget: plugin %s needs %s for %s, the node-wide plugin memory budget is %s with %s in use (Config.MemoryBudget, --plugin-memory-budget)",
		e.Plugin, sizeString(e.Demand), e.What, sizeString(e.Budget), sizeString(e.InUse))
}

// checkPool refuses a manifest whose whole pool could never fit.
func (b *budget) checkPool(m *Manifest) error {
	per := int64(m.Limits.MemoryPages) * pageSize
	all := per * int64(m.Limits.MaxInstances)
	if all > b.limit {
		b.mu.Lock()
		used := b.used
		b.mu.Unlock()
		return &BudgetError{Plugin: m.Name, Demand: all, Budget: b.limit, InUse: used,
			What: fmt.Sprintf("its pool (limits.max_instances %d × limits.memory_pages %d)", m.Limits.MaxInstances, m.Limits.MemoryPages)}
	}
	return nil
}

// reserve takes one instance's reservation.
func (b *budget) reserve(plugin string, n int64, what string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return &BudgetError{Plugin: plugin, Demand: n, What: what, Budget: b.limit, InUse: b.used}
	}
	b.used += n
	return nil
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// InUse is the plugin memory reserved now, for tests and metrics.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// sizeString renders bytes in binary units ("32 MiB", "4 GiB").
func sizeString(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
