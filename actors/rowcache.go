package actors

// rowCache holds recently read rows of one projection's read model, as
// committed, so that a projection's Apply does not ask Badger again for
// the row it wrote a moment ago. Badger's Txn.Get looks a key up in every
// level of its tree even when the memtable has the newest version; with
// the projections of a busy node reading and writing the same rows over
// and over (an account's balance, its statement's head) those lookups
// were about half of the projections' time (docs/benchmarks.md, "Read
// models: a row cache and one commit per round"; ADR 0019).
//
// A rowCache is used only by its projection's writer, which holds the
// projection's apply lock (projection.applyMu): one writer at a time, so
// the cache equals what Badger last committed for every key it has.
// Queries read Badger, never the cache. Two generations bound its memory:
// rows are added to the current one; when that holds half the budget it
// becomes the old one (the previous old one is dropped), and a row found
// in the old generation moves back to the current.
type rowCache struct {
	budget    int // bytes over both generations
	cur, old  map[string]row
	curBytes  int
	hits, all uint64 // lookups that found a row, and all lookups (read by tests only)
}

// row is a cached row: its value, or absent (the key has no row).
type row struct {
	val    []byte
	absent bool
}

// rowCost is what a row counts against the budget: its key, its value and
// the map's overhead, about.
func rowCost(key string, r row) int { return len(key) + len(r.val) + 64 }

// defaultRowCacheBytes bounds each projection's row cache.
const defaultRowCacheBytes = 8 << 20

func newRowCache(budget int) *rowCache {
	return &rowCache{budget: budget, cur: map[string]row{}}
}

// get returns the cached row of key.
func (c *rowCache) get(key string) (row, bool) {
	c.all++
	if r, ok := c.cur[key]; ok {
		c.hits++
		return r, true
	}
	r, ok := c.old[key]
	if !ok {
		return row{}, false
	}
	c.hits++
	delete(c.old, key)
	c.add(key, r)
	return r, true
}

// put caches key's committed row.
func (c *rowCache) put(key string, r row) {
	if prev, ok := c.cur[key]; ok {
		c.curBytes -= rowCost(key, prev)
		delete(c.cur, key)
	}
	delete(c.old, key)
	c.add(key, r)
}

// update caches key's committed row if the cache holds the key.
func (c *rowCache) update(key string, r row) {
	_, inCur := c.cur[key]
	_, inOld := c.old[key]
	if inCur || inOld {
		c.put(key, r)
	}
}

func (c *rowCache) add(key string, r row) {
	cost := rowCost(key, r)
	if cost > c.budget/2 {
		return // a row this big is not worth keeping
	}
	if c.curBytes+cost > c.budget/2 {
		c.old, c.cur, c.curBytes = c.cur, make(map[string]row, len(c.cur)), 0
	}
	c.cur[key] = r
	c.curBytes += cost
}

// clear forgets every row (the read model was reset).
func (c *rowCache) clear() {
	c.cur, c.old, c.curBytes = map[string]row{}, nil, 0
}
