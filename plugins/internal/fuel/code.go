package fuel

import (
	"fmt"
	"math"
)

// Instruction kinds that the rewrite cares about.
const (
	kindPlain   = iota
	kindBlock   // block, if: open a label, not a region
	kindLoop    // loop: opens a region (a checkpoint at its header)
	kindElse    // else
	kindEnd     // end
	kindFuncRef // call, return_call, ref.func: carry a function index
)

const (
	opEnd = 0x0B
)

// MaxLocals bounds the locals of one function, as web browsers do: wazero
// allocates them up front, and a crafted body may declare billions.
const MaxLocals = 50000

// instr is one decoded instruction: where it lies in its source and, for
// kindFuncRef, where its function index starts.
type instr struct {
	op         byte
	kind       int
	start, end int
	idxOff     int
	idx        uint32
}

// fast classifies the opcodes decode handles without a switch: 1 for no
// immediate, 2 for one u32 immediate (the fast path takes one-byte ones).
var fast = func() (t [256]uint8) {
	for _, op := range []int{0x00, 0x01, 0x0F, 0x1A, 0x1B, 0xD1} {
		t[op] = 1
	}
	for op := 0x45; op <= 0xC4; op++ {
		t[op] = 1
	}
	for _, op := range []int{0x0C, 0x0D, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x41} {
		t[op] = 2
	}
	return t
}()

// decode reads one instruction at r.
func (in *instr) decode(r *reader) error {
	in.start = r.off
	in.kind = kindPlain
	if p := r.off; p+1 < len(r.b) {
		switch fast[r.b[p]] {
		case 1:
			in.op, r.off, in.end = r.b[p], p+1, p+1
			return nil
		case 2:
			if r.b[p+1] < 0x80 {
				in.op, r.off, in.end = r.b[p], p+2, p+2
				return nil
			}
		}
	}
	op := r.byte()
	in.op = op
	switch {
	case op == 0x00 || op == 0x01 || op == 0x0F || op == 0x1A || op == 0x1B:
		// unreachable, nop, return, drop, select
	case op == 0x02 || op == 0x04: // block, if
		r.blockType()
		in.kind = kindBlock
	case op == 0x03: // loop
		r.blockType()
		in.kind = kindLoop
	case op == 0x05:
		in.kind = kindElse
	case op == opEnd:
		in.kind = kindEnd
	case op == 0x0C || op == 0x0D: // br, br_if
		r.u32()
	case op == 0x0E: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x10 || op == 0x12: // call, return_call
		in.idxOff = r.off
		in.idx = r.u32()
		in.kind = kindFuncRef
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1C: // select t*
		n := r.u32()
		if n > uint32(len(r.b)) {
			r.fail(errTooLong)
		}
		r.bytes(n)
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3E: // loads and stores
		r.memarg()
	case op == 0x3F || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41: // i32.const
		r.sleb(5)
	case op == 0x42: // i64.const
		r.sleb(10)
	case op == 0x43: // f32.const
		r.bytes(4)
	case op == 0x44: // f64.const
		r.bytes(8)
	case op >= 0x45 && op <= 0xC4: // numeric, sign extension
	case op == 0xD0: // ref.null t
		r.byte()
	case op == 0xD1: // ref.is_null
	case op == 0xD2: // ref.func
		in.idxOff = r.off
		in.idx = r.u32()
		in.kind = kindFuncRef
	case op == 0xFC:
		if err := decodeFC(r); err != nil {
			return err
		}
	case op == 0xFD:
		if err := decodeSIMD(r); err != nil {
			return err
		}
	case op == 0xFE:
		if err := decodeAtomic(r); err != nil {
			return err
		}
	default:
		if r.err == nil {
			return fmt.Errorf("%w: opcode 0x%02x at offset %d", ErrUnsupported, op, in.start)
		}
	}
	if r.err != nil {
		return fmt.Errorf("%w: instruction at offset %d: %v", ErrMalformed, in.start, r.err)
	}
	in.end = r.off
	return nil
}

func decodeFC(r *reader) error {
	switch sub := r.u32(); {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9, sub == 13: // data.drop, elem.drop
		r.u32()
	case sub == 10: // memory.copy mem mem
		r.u32()
		r.u32()
	case sub == 11: // memory.fill mem
		r.u32()
	case sub == 12, sub == 14: // table.init elem table, table.copy table table
		r.u32()
		r.u32()
	case sub >= 15 && sub <= 17: // table.grow/size/fill
		r.u32()
	default:
		if r.err == nil {
			return fmt.Errorf("%w: opcode 0xfc %d", ErrUnsupported, sub)
		}
	}
	return nil
}

func decodeSIMD(r *reader) error {
	switch sub := r.u32(); {
	case sub <= 11 || sub == 92 || sub == 93: // loads, stores, load_zero
		r.memarg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 14 && sub <= 20:
	case sub >= 21 && sub <= 34: // extract/replace lane
		r.byte()
	case sub >= 35 && sub <= 83:
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub >= 94 && sub <= 0x113: // the rest have no immediates
	default:
		if r.err == nil {
			return fmt.Errorf("%w: opcode 0xfd %d", ErrUnsupported, sub)
		}
	}
	return nil
}

func decodeAtomic(r *reader) error {
	switch sub := r.u32(); {
	case sub == 0x03: // atomic.fence
		r.byte()
	case sub <= 0x02 || sub >= 0x10 && sub <= 0x4E:
		r.memarg()
	default:
		if r.err == nil {
			return fmt.Errorf("%w: opcode 0xfe %d", ErrUnsupported, sub)
		}
	}
	return nil
}

// codeSection rewrites every function body (scratch is reused).
func (m *module) codeSection(body, scratch []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	if r.err != nil {
		return nil, fmt.Errorf("%w: code section: %v", ErrMalformed, r.err)
	}
	out := make([]byte, 0, len(body)+len(body)/4+16)
	out = appendU32(out, n)
	var w work
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		fn := r.bytes(size)
		if r.err != nil {
			return nil, fmt.Errorf("%w: code section: function %d: %v", ErrMalformed, i, r.err)
		}
		if int(i) >= len(m.funcTypes) || int(m.funcTypes[i]) >= len(m.typeParams) {
			return nil, fmt.Errorf("%w: function %d has no valid type", ErrMalformed, m.importedFuncs+i)
		}
		var err error
		if scratch, err = m.function(fn, scratch[:0], m.typeParams[m.funcTypes[i]], &w); err != nil {
			return nil, fmt.Errorf("function %d: %w", m.importedFuncs+i, err)
		}
		out = appendU32(out, uint32(len(scratch)))
		out = append(out, scratch...)
	}
	if r.off != len(body) {
		return nil, fmt.Errorf("%w: code section: %v", ErrMalformed, errTrailing)
	}
	return out, nil
}

// work holds the buffers of function, reused across bodies.
type work struct {
	costs   []uint32   // per region, in order of their checkpoints
	loops   []loopInfo // per loop region (costs[i+1] is loops[i]'s)
	regions []int      // stack of open regions
	ctrl    []int      // stack of open blocks (kindBlock or kindLoop)
	edits   []edit     // where pass 2 changes the body
	writes  []uint32   // locals written by local.set and local.tee, in order
	types   []byte     // value type of each local (params first)
	seen    []uint32   // per local: the last checkpoint that copied it
	stamp   uint32
	// entryLoop: the first loop's header is reached from the function's
	// entry by straight-line code, so every activation passes its
	// checkpoint before it can branch, call or return.
	entryLoop bool
}

// loopInfo is what a loop's checkpoint needs to know about its body.
type loopInfo struct {
	params       bool // the loop takes block parameters
	wStart, wEnd int  // its body's local writes: writes[wStart:wEnd]
}

// edit is a place where the output differs from the input: a checkpoint
// after a loop header, the counter written back to the global before a
// call or a return, reloaded after a call, or a function index to shift.
type edit struct {
	pos, end int // input bytes [pos, end) are replaced (empty for an insertion)
	idx      uint32
	what     int
}

const (
	editShift = iota
	editCheckpoint
	editStore // local.get $f global.set $fuel
	editLoad  // global.get $fuel local.set $f
)

// function rewrites one body: the first pass decodes it, sums each
// region's instructions and notes the edits and the locals each loop
// writes; the second copies the bytes between edits, inserting a
// checkpoint at the start and after each loop header.
//
// Inside a function the counter lives in a local of its own (a register in
// compiled code, so a loop's check has no memory round trip); it is loaded
// from the global at entry and after each call, and stored back before
// each call and each way out of the function.
func (m *module) function(fn, out []byte, params []byte, w *work) ([]byte, error) {
	w.costs, w.loops, w.regions, w.ctrl, w.edits, w.writes = w.costs[:0], w.loops[:0], w.regions[:0], w.ctrl[:0], w.edits[:0], w.writes[:0]
	r := &reader{b: fn}
	nl := r.u32()
	groupsStart := r.off
	var locals uint64
	for i := uint32(0); i < nl && r.err == nil; i++ {
		locals += uint64(r.u32())
		r.byte()
	}
	if r.err != nil {
		return out, fmt.Errorf("%w: locals: %v", ErrMalformed, r.err)
	}
	if locals+1 > MaxLocals {
		return out, fmt.Errorf("%w: %d locals, at most %d", ErrUnsupported, locals, MaxLocals)
	}
	codeStart := r.off
	m.local = uint32(len(params)) + uint32(locals)
	w.types = append(w.types[:0], params...)
	g := &reader{b: fn, off: groupsStart}
	for i := uint32(0); i < nl; i++ {
		n := g.u32()
		t := g.byte()
		for ; n > 0; n-- {
			w.types = append(w.types, t)
		}
	}

	w.costs = append(w.costs, 0)
	w.regions = append(w.regions, 0)
	w.entryLoop = false
	straight := true // no branch, call or return since the entry
	var in instr
	for {
		if r.off >= len(fn) {
			return out, fmt.Errorf("%w: body ends without end", ErrMalformed)
		}
		if err := in.decode(r); err != nil {
			return out, err
		}
		top := w.regions[len(w.regions)-1]
		if w.costs[top] < math.MaxInt32 {
			w.costs[top]++
		}
		switch in.op {
		case 0x11: // call_indirect
			w.edits = append(w.edits, edit{pos: in.start, end: in.start, what: editStore},
				edit{pos: in.end, end: in.end, what: editLoad})
		case 0x13, 0x0F: // return_call_indirect, return
			w.edits = append(w.edits, edit{pos: in.start, end: in.start, what: editStore})
		case 0x0C, 0x0D, 0x0E: // br, br_if, br_table: one to the function's label returns
			if branchesOut(fn[in.start+1:in.end], in.op, uint32(len(w.ctrl))) {
				w.edits = append(w.edits, edit{pos: in.start, end: in.start, what: editStore})
			}
		case 0x21, 0x22: // local.set, local.tee
			if len(w.regions) > 1 { // inside a loop
				ir := &reader{b: fn[in.start+1 : in.end]}
				w.writes = append(w.writes, ir.u32())
			}
		}
		if straight {
			switch {
			case in.kind == kindLoop:
				w.entryLoop = true
				straight = false
			case in.kind == kindBlock && in.op == 0x02: // block
			case in.kind != kindPlain:
				straight = false
			default:
				switch in.op {
				case 0x00, 0x0C, 0x0D, 0x0E, 0x0F, 0x11, 0x13: // unreachable, br*, return, call_indirect*
					straight = false
				}
			}
		}
		switch in.kind {
		case kindBlock:
			w.ctrl = append(w.ctrl, kindBlock)
		case kindLoop:
			w.ctrl = append(w.ctrl, kindLoop)
			w.regions = append(w.regions, len(w.costs))
			w.costs = append(w.costs, 0)
			w.loops = append(w.loops, loopInfo{params: m.blockParams(fn[in.start+1 : in.end]), wStart: len(w.writes)})
			w.edits = append(w.edits, edit{pos: in.end, end: in.end, what: editCheckpoint})
		case kindFuncRef:
			call := in.op == 0x10 || in.op == 0x12
			if call {
				w.edits = append(w.edits, edit{pos: in.start, end: in.start, what: editStore})
			}
			if m.shift(in.idx) != in.idx {
				w.edits = append(w.edits, edit{pos: in.idxOff, end: in.end, idx: m.shift(in.idx), what: editShift})
			}
			if in.op == 0x10 {
				w.edits = append(w.edits, edit{pos: in.end, end: in.end, what: editLoad})
			}
		case kindEnd:
			if len(w.ctrl) == 0 {
				if r.off != len(fn) {
					return out, fmt.Errorf("%w: bytes after the body's end", ErrMalformed)
				}
				w.edits = append(w.edits, edit{pos: in.start, end: in.start, what: editStore})
				return m.emitFunction(fn, out, nl, groupsStart, codeStart, w), nil
			}
			if w.ctrl[len(w.ctrl)-1] == kindLoop {
				top := w.regions[len(w.regions)-1]
				w.loops[top-1].wEnd = len(w.writes)
				w.regions = w.regions[:len(w.regions)-1]
			}
			w.ctrl = w.ctrl[:len(w.ctrl)-1]
		}
	}
}

// blockParams reports whether a block type (its encoding bt) takes
// parameters: only a type index can, when its type has some.
func (m *module) blockParams(bt []byte) bool {
	if len(bt) == 0 {
		return false
	}
	switch bt[0] {
	case 0x40, 0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F:
		return false
	}
	var v int64
	var shift uint
	for _, c := range bt {
		v |= int64(c&0x7F) << shift
		shift += 7
		if c&0x80 == 0 {
			if c&0x40 != 0 && shift < 64 {
				v |= -1 << shift
			}
			break
		}
	}
	// An index outside the type section is invalid: say it has parameters,
	// the conservative shape (wazero refuses the module anyway).
	return v < 0 || v >= int64(len(m.typeParams)) || len(m.typeParams[v]) > 0
}

// branchesOut reports whether a branch's immediates (imm) name depth, the
// function body's label.
func branchesOut(imm []byte, op byte, depth uint32) bool {
	r := &reader{b: imm}
	if op != 0x0E {
		return r.u32() == depth
	}
	n := r.u32()
	for i := uint32(0); i <= n && r.err == nil; i++ {
		if r.u32() == depth {
			return true
		}
	}
	return false
}

func (m *module) emitFunction(fn, out []byte, groups uint32, groupsStart, codeStart int, w *work) []byte {
	// The locals with one more group: (1 x i64), the counter.
	out = appendU32(out, groups+1)
	out = append(out, fn[groupsStart:codeStart]...)
	out = append(out, 0x01, 0x7E)
	out = m.load(out)
	if w.entryLoop && uint64(w.costs[0])*4 <= uint64(w.costs[1]) {
		// The first loop's checkpoint runs at least once per activation
		// before anything else can happen: it also charges what lies
		// outside loops (adding at most a quarter to its cost), and the entry
		// needs no checkpoint of its own. Go's compiler wraps most
		// function bodies in such a loop (its resumption points), so this
		// saves one checkpoint per call there.
		w.costs[1] += w.costs[0]
	} else {
		out = m.checkpoint(out, w.costs[0], nil, false, w)
	}
	if cap(w.seen) < int(m.local) {
		w.seen = make([]uint32, m.local)
	}
	w.seen = w.seen[:m.local]
	clear(w.seen)
	w.stamp = 0
	next := 1
	cur := codeStart
	for _, e := range w.edits {
		out = append(out, fn[cur:e.pos]...)
		switch e.what {
		case editCheckpoint:
			l := &w.loops[next-1]
			out = m.checkpoint(out, w.costs[next], w.writes[l.wStart:l.wEnd], !l.params, w)
			next++
		case editStore:
			out = m.store(out)
		case editLoad:
			out = m.load(out)
		default:
			out = appendU32(out, e.idx)
		}
		cur = e.end
	}
	return append(out, fn[cur:]...)
}

// load appends global.get $fuel local.set $f.
func (m *module) load(out []byte) []byte {
	out = append(out, 0x23)
	out = appendU32(out, m.fuelGlobal)
	out = append(out, 0x21)
	return appendU32(out, m.local)
}

// store appends local.get $f global.set $fuel.
func (m *module) store(out []byte) []byte {
	out = append(out, 0x20)
	out = appendU32(out, m.local)
	out = append(out, 0x24)
	return appendU32(out, m.fuelGlobal)
}

// checkpoint appends, with $f the function's counter local:
//
//	local.get $f  i64.const cost  i64.sub  local.tee $f
//	i64.const 0  i64.ge_s
//	if
//	else
//	  (copies of the locals the loop writes)
//	  call $refuel  local.set $f
//	end
//
// or, at the header of a loop without block parameters (restart), an else
// branch that starts the iteration over once refuelled:
//
//	else
//	  (copies)  call $refuel  i64.const cost  i64.add  local.set $f  br 1
//	end
//
// The shape is for wazero's optimizing compiler, which spills every value
// that lives across a call and then stores it at each definition and
// reloads it at each use. A refuel call inside a loop therefore used to put
// the loop's variables in memory on the fast path (+50 % on a tight byte
// loop). Here the fast path is the if's empty then branch, which the
// compiler lays out as a fall-through and whose register state the code
// after the checkpoint inherits; the loop's variables cross the call only
// as copies made on the slow path (an identity operation the compiler does
// not fold), so the variables themselves stay in registers. The restart
// shape also keeps the refuelled path from merging back into the fast one:
// re-running the check charges the region against the new chunk (cost is
// added back first, so it passes). See docs/adr/0009-bounded-plugin-calls.md.
func (m *module) checkpoint(out []byte, cost uint32, writes []uint32, restart bool, w *work) []byte {
	out = append(out, 0x20)
	out = appendU32(out, m.local)
	out = append(out, 0x42)
	out = appendS64(out, int64(cost))
	out = append(out, 0x7D, 0x22)
	out = appendU32(out, m.local)
	out = append(out, 0x42, 0x00, 0x59, 0x04, 0x40, 0x05) // i64.const 0 i64.ge_s if else
	if len(writes) > 0 {
		w.stamp++
		for _, x := range writes {
			if x >= m.local || w.seen[x] == w.stamp {
				continue
			}
			w.seen[x] = w.stamp
			out = copyLocal(out, x, w.types[x])
		}
	}
	out = append(out, 0x10)
	out = appendU32(out, m.refuelFunc)
	if restart {
		out = append(out, 0x42)
		out = appendS64(out, int64(cost))
		out = append(out, 0x7C) // i64.add
	}
	out = append(out, 0x21)
	out = appendU32(out, m.local)
	if restart {
		out = append(out, 0x0C, 0x01) // br 1: the loop
	}
	return append(out, 0x0B)
}

// copyLocal appends local.get x, an identity operation of x's type, and
// local.set x: a new value the optimizing compiler does not merge with the
// old one. Reference types have no such operation and are left alone.
func copyLocal(out []byte, x uint32, t byte) []byte {
	var op []byte
	switch t {
	case 0x7F:
		op = []byte{0x41, 0x00, 0x6A} // i32.const 0 i32.add
	case 0x7E:
		op = []byte{0x42, 0x00, 0x7C} // i64.const 0 i64.add
	case 0x7D:
		op = []byte{0xBC, 0xBE} // i32.reinterpret_f32 f32.reinterpret_i32
	case 0x7C:
		op = []byte{0xBD, 0xBF} // i64.reinterpret_f64 f64.reinterpret_i64
	case 0x7B:
		op = []byte{0xFD, 0x4D, 0xFD, 0x4D} // v128.not v128.not
	default:
		return out
	}
	out = append(out, 0x20)
	out = appendU32(out, x)
	out = append(out, op...)
	out = append(out, 0x21)
	return appendU32(out, x)
}
