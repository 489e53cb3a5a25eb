package actors

import (
	"fmt"
	"testing"
)

func TestRowCacheKeepsToItsBudget(t *testing.T) {
	const budget = 10_000
	c := newRowCache(budget)
	val := make([]byte, 36) // with a 4-byte key: 100 bytes a row
	for i := range 1000 {
		c.put(fmt.Sprintf("k%03d", i), row{val: val})
		if c.curBytes > budget/2 {
			t.Fatalf("after %d rows the current generation holds %d bytes, over half the budget %d", i+1, c.curBytes, budget)
		}
		if n := len(c.cur) + len(c.old); n*100 > budget {
			t.Fatalf("after %d rows the cache holds %d rows (%d bytes), over its budget %d", i+1, n, n*100, budget)
		}
	}
	// The newest rows are there, the oldest gone.
	if _, ok := c.get("k999"); !ok {
		t.Fatal("the last row put is not cached")
	}
	if _, ok := c.get("k000"); ok {
		t.Fatal("the first of 1,000 rows is still cached in a budget of 100")
	}
}

func TestRowCacheKeepsWhatIsReadAgain(t *testing.T) {
	c := newRowCache(1000) // 500 bytes a generation: 7 rows of 68 bytes
	c.put("hot", row{val: []byte("1")})
	for i := range 30 {
		c.put(fmt.Sprintf("c%02d", i), row{val: []byte("x")})
		if _, ok := c.get("hot"); !ok {
			t.Fatalf("a row read after every put was dropped after %d puts", i+1)
		}
	}
}

func TestRowCacheUpdateOnlyWhatItHolds(t *testing.T) {
	c := newRowCache(1 << 20)
	c.update("new", row{val: []byte("v")})
	if _, ok := c.get("new"); ok {
		t.Fatal("update cached a row the cache did not hold")
	}
	c.put("k", row{val: []byte("1")})
	c.update("k", row{absent: true})
	if r, ok := c.get("k"); !ok || !r.absent {
		t.Fatalf("after a delete's update the row is %+v (cached %v), want absent", r, ok)
	}
	c.clear()
	if _, ok := c.get("k"); ok {
		t.Fatal("clear left a row")
	}
	c.put("big", row{val: make([]byte, 1<<20)})
	if _, ok := c.get("big"); ok {
		t.Fatal("a row bigger than half the budget was cached")
	}
}
