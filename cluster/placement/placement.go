package placement

import (
	"math/bits"
	"slices"
)

// Assign returns the owner of every one of shards shards: owners[s] is the
// member that should own shard s. It is a pure function of shards and of
// the set of member ids: the order of members does not matter, a repeated
// id counts once, and an empty id is ignored (an owner of "" means no
// owner). With no members every owner is ""; with shards ≤ 0 the result is
// empty.
//
// No member gets more than MaxLoad(shards, n) shards, n being the number
// of distinct members. Assign is safe for concurrent use. It takes time
// in O(shards × members) and memory in O(shards); shards must stay below
// 1<<31.
func Assign(shards int, members []string) []string {
	if shards <= 0 {
		return []string{}
	}
	owners := make([]string, shards)
	ms := canonical(members)
	n := len(ms)
	switch n {
	case 0:
		return owners
	case 1:
		for s := range owners {
			owners[s] = ms[0]
		}
		return owners
	}
	keys := make([]memberKey, n)
	for i, id := range ms {
		keys[i] = newMemberKey(id)
	}

	// 1. Every shard goes to the member that ranks it best.
	p := newPermutation(shards)
	own := make([]int32, shards)
	rank := make([]uint32, shards)
	for s := range rank {
		rank[s] = p.rank(&keys[0], uint32(s))
	}
	for m := 1; m < n; m++ {
		p.offer(int32(m), keys, own, rank)
	}
	load := make([]int, n)
	for _, m := range own {
		load[m]++
	}

	// 2. A member over capacity keeps the shards it ranks best and sheds
	// the rest. Shards are grouped by owner (counting sort) so that only
	// the members over capacity sort their own shards.
	c := MaxLoad(shards, n)
	start := make([]int, n+1)
	for m := range n {
		start[m+1] = start[m] + load[m]
	}
	byOwner := make([]uint64, shards) // rank<<32 | shard, grouped by owner
	next := slices.Clone(start[:n])
	for s := range shards {
		m := own[s]
		byOwner[next[m]] = uint64(rank[s])<<32 | uint64(s)
		next[m]++
	}
	var shed []uint32
	for m := range n {
		if load[m] <= c {
			continue
		}
		mine := byOwner[start[m]:start[m+1]]
		slices.Sort(mine) // ranks of one member are distinct
		for _, v := range mine[c:] {
			shed = append(shed, uint32(v))
		}
		load[m] = c
	}

	// 3. The overflow goes, in shard order, to the member that ranks each
	// shard best among those with room left. Capacity c × n ≥ shards, so
	// there is always room.
	slices.Sort(shed)
	for _, s := range shed {
		best, bestRank := -1, uint32(0)
		for m := range n {
			if load[m] >= c {
				continue
			}
			r := p.rank(&keys[m], s)
			if best < 0 || r < bestRank || (r == bestRank && keys[m].beats(&keys[best], int(s))) {
				best, bestRank = m, r
			}
		}
		own[s] = int32(best)
		load[best]++
	}

	for s, m := range own {
		owners[s] = ms[m]
	}
	return owners
}

// MaxLoad is the most shards Assign gives one of members members:
// floor(1.1 × shards/members), lowered to floor(shards/members + 1 % of
// shards) when that is smaller (so that a member joining a small cluster
// takes little more than its share), and never below ceil(shards/members),
// so that every shard has a place. It is 0 when there are no members or no
// shards.
func MaxLoad(shards, members int) int {
	if shards <= 0 || members <= 0 {
		return 0
	}
	s, n := uint64(shards), uint64(members)
	c := mulDiv(s, 11, 10*n)
	if d := mulDiv(s, 100+n, 100*n); d < c {
		c = d
	}
	if f := (s + n - 1) / n; c < f {
		c = f
	}
	return int(min(c, s))
}

// mulDiv is floor(a × b / d) without overflow (the quotient fits: it is
// at most about 1.1 × a here).
func mulDiv(a, b, d uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	q, _ := bits.Div64(hi, lo, d)
	return q
}

// canonical returns the distinct non-empty ids of members, sorted.
func canonical(members []string) []string {
	ms := make([]string, 0, len(members))
	for _, m := range members {
		if m != "" {
			ms = append(ms, m)
		}
	}
	slices.Sort(ms)
	return slices.Compact(ms)
}

// Move is one shard that changes owner. An owner of "" is no owner.
type Move struct {
	Shard    int
	From, To string
}

// Diff compares two placements of the same shards and returns how many
// shards changed owner and, in shard order, which. A shard that exists in
// only one of them (the slices differ in length) counts as owned by "" in
// the other.
func Diff(before, after []string) (moved int, moves []Move) {
	for s := range max(len(before), len(after)) {
		var from, to string
		if s < len(before) {
			from = before[s]
		}
		if s < len(after) {
			to = after[s]
		}
		if from != to {
			moves = append(moves, Move{Shard: s, From: from, To: to})
		}
	}
	return len(moves), moves
}

// Loads counts the shards of each owner in a placement; unowned shards
// (owner "") are not counted.
func Loads(owners []string) map[string]int {
	l := make(map[string]int)
	for _, o := range owners {
		if o != "" {
			l[o]++
		}
	}
	return l
}
