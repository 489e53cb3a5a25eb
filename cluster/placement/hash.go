package placement

// The hashing here is fixed: changing any constant or step changes every
// placement, which TestPinnedAssignments notices. It uses only integer
// arithmetic on fixed-size types, so the result is the same on every
// platform and Go version (hash/maphash would not be: it is seeded per
// process).

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
	golden    = 0x9e3779b97f4a7c15
)

// fnv1a64 is FNV-1a, 64 bits.
func fnv1a64(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix64 is the finaliser of SplitMix64: a bijection that spreads every
// input bit over the output. FNV-1a alone leaves similar ids (node-1,
// node-2) with similar high bits.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// memberKey is what a member's id contributes to the placement: the keys
// of its permutation of the shards, and a key that breaks the ties between
// members that rank a shard the same.
type memberKey struct {
	mul [3]uint32 // odd
	xor [3]uint32
	tie uint64
}

func newMemberKey(id string) memberKey {
	k := mix64(fnv1a64(id))
	var mk memberKey
	for i := range mk.mul {
		r := mix64(k + uint64(i+1)*golden)
		mk.mul[i] = uint32(r) | 1
		mk.xor[i] = uint32(r >> 32)
	}
	mk.tie = mix64(k ^ golden)
	return mk
}

// beats breaks a tie between two members that rank shard s the same: a
// hash of the member and the shard decides, so that no member is favoured
// over all shards.
func (k *memberKey) beats(o *memberKey, s int) bool {
	return mix64(k.tie+uint64(s)) > mix64(o.tie+uint64(s))
}

// permutation gives each member its order of preference of the shards: a
// permutation of [0, n) keyed by the member, built from three rounds of
// xor, multiplication by an odd number and xorshift on the smallest number
// of bits that covers n (each a bijection), walking the cycle for values
// at or above n. A member's ranks of the shards are therefore distinct and
// cover [0, n) exactly, which spreads first choices more evenly than plain
// rendezvous hashing, where a member's weights are uniform only on
// average: at 256 shards and 16 members the first choices per member have
// a standard deviation of 2.7 shards instead of 3.9.
type permutation struct {
	n, mask, shift uint32
}

func newPermutation(n int) permutation {
	bits := uint32(2)
	for uint64(1)<<bits < uint64(n) {
		bits++
	}
	return permutation{n: uint32(n), mask: 1<<bits - 1, shift: (bits + 1) / 2}
}

// rank is member k's rank of shard x (< n).
func (p permutation) rank(k *memberKey, x uint32) uint32 {
	for {
		x = ((x ^ k.xor[0]) * k.mul[0]) & p.mask
		x ^= x >> p.shift
		x = ((x ^ k.xor[1]) * k.mul[1]) & p.mask
		x ^= x >> p.shift
		x = ((x ^ k.xor[2]) * k.mul[2]) & p.mask
		x ^= x >> p.shift
		if x < p.n {
			return x
		}
	}
}

// offer gives member m every shard that it ranks better than the current
// owner does: own and rank hold each shard's best member so far and its
// rank. It is the inner loop of Assign, with rank written out and the
// comparison free of unpredictable branches.
func (p permutation) offer(m int32, keys []memberKey, own []int32, rank []uint32) {
	k := &keys[m]
	own = own[:len(rank)]
	for s := range rank {
		x := uint32(s)
		for {
			x = ((x ^ k.xor[0]) * k.mul[0]) & p.mask
			x ^= x >> p.shift
			x = ((x ^ k.xor[1]) * k.mul[1]) & p.mask
			x ^= x >> p.shift
			x = ((x ^ k.xor[2]) * k.mul[2]) & p.mask
			x ^= x >> p.shift
			if x < p.n {
				break
			}
		}
		b, o := rank[s], own[s]
		if x == b { // rare: a hash of the member and the shard decides
			if k.beats(&keys[o], s) {
				own[s] = m
			}
			continue
		}
		if x < b {
			b = x
			o = m
		}
		rank[s], own[s] = b, o
	}
}
