package fuel

import (
	"bytes"
	"errors"
	"fmt"
)

// Names the instrumented module uses to meet its host.
const (
	// ImportModule and ImportName name the refuel import, () -> i64. Its
	// result becomes the counter; it is called when the counter is spent.
	ImportModule = "troupe:fuel"
	ImportName   = "refuel"
	// ExportGlobal names the exported mutable i64 counter.
	ExportGlobal = "troupe:fuel"
	// Version changes whenever Instrument's output for the same input
	// changes: it belongs in the key of any cache of instrumented modules.
	Version = 4
)

var (
	// ErrMalformed is returned for bytes that are not a well-formed module.
	ErrMalformed = errors.New("fuel: malformed module")
	// ErrUnsupported is returned for a module that uses an instruction or a
	// construct outside the supported feature set.
	ErrUnsupported = errors.New("fuel: unsupported")
)

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secTable     = 4
	secMemory    = 5
	secGlobal    = 6
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
	secTag       = 13
)

// order ranks known sections as the binary format requires them.
func order(id byte) int {
	switch id {
	case secTag:
		return 55 // between memory and global
	case secDataCount:
		return 95 // between element and code
	case secCode:
		return 100
	case secData:
		return 110
	}
	return int(id) * 10
}

type section struct {
	id   byte
	body []byte
}

// module holds what Instrument learns about its input.
type module struct {
	sections []section

	types           uint32   // entries in the type section
	typeParams      [][]byte // parameter types of each type, one byte each
	funcTypes       []uint32 // type of each defined function
	importedFuncs   uint32
	importedGlobals uint32
	definedGlobals  uint32

	// indices of what Instrument adds
	refuelType, refuelFunc, fuelGlobal uint32
	local                              uint32 // the counter local of the function being rewritten
}

// Instrument returns a metered copy of the module wasm (see the package
// documentation). The input is not modified. Equal inputs give equal
// outputs.
func Instrument(wasm []byte) ([]byte, error) {
	m, err := parse(wasm)
	if err != nil {
		return nil, err
	}
	m.refuelType = m.types
	m.refuelFunc = m.importedFuncs
	m.fuelGlobal = m.importedGlobals + m.definedGlobals

	out := make([]byte, 0, len(wasm)+len(wasm)/4+64)
	out = append(out, wasm[:8]...)
	have := map[byte]bool{}
	for _, s := range m.sections {
		if s.id != secCustom {
			have[s.id] = true
		}
	}
	var ins []section // sections to create
	for _, id := range []byte{secType, secImport, secGlobal, secExport} {
		if !have[id] {
			ins = append(ins, section{id: id})
		}
	}
	var scratch []byte
	emit := func(s section) error {
		var body []byte
		var err error
		switch s.id {
		case secType:
			body, err = m.typeSection(s.body)
		case secImport:
			body, err = m.importSection(s.body)
		case secGlobal:
			body, err = m.globalSection(s.body)
		case secExport:
			body, err = m.exportSection(s.body)
		case secStart:
			body, err = m.startSection(s.body)
		case secElement:
			body, err = m.elementSection(s.body)
		case secCode:
			body, err = m.codeSection(s.body, scratch[:0])
		case secCustom:
			body = m.customSection(s.body)
			if body == nil {
				return nil // dropped
			}
		default:
			body = s.body
		}
		if err != nil {
			return err
		}
		out = append(out, s.id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
		return nil
	}
	for _, s := range m.sections {
		if s.id != secCustom {
			for len(ins) > 0 && order(ins[0].id) < order(s.id) {
				if err := emit(ins[0]); err != nil {
					return nil, err
				}
				ins = ins[1:]
			}
		}
		if err := emit(s); err != nil {
			return nil, err
		}
	}
	for _, s := range ins {
		if err := emit(s); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parse splits the module into sections and counts what the rewrite needs.
func parse(wasm []byte) (*module, error) {
	if len(wasm) < 8 || !bytes.Equal(wasm[:4], []byte("\x00asm")) {
		return nil, fmt.Errorf("%w: invalid magic number", ErrMalformed)
	}
	if !bytes.Equal(wasm[4:8], []byte{1, 0, 0, 0}) {
		return nil, fmt.Errorf("%w: binary version %x, want 1", ErrUnsupported, wasm[4:8])
	}
	m := &module{}
	r := &reader{b: wasm, off: 8}
	last := 0
	for r.off < len(r.b) {
		id := r.byte()
		n := r.u32()
		body := r.bytes(n)
		if r.err != nil {
			return nil, fmt.Errorf("%w: section %d: %v", ErrMalformed, id, r.err)
		}
		if id > secTag {
			return nil, fmt.Errorf("%w: unknown section id %d", ErrMalformed, id)
		}
		if id != secCustom {
			if o := order(id); o <= last {
				return nil, fmt.Errorf("%w: section %d out of order or repeated", ErrMalformed, id)
			} else {
				last = o
			}
		}
		m.sections = append(m.sections, section{id: id, body: body})
		var err error
		switch id {
		case secType:
			m.types, m.typeParams, err = checkTypes(body)
		case secFunction:
			m.funcTypes, err = readFuncTypes(body)
		case secTable, secMemory:
			_, err = vecLen(body)
		case secData:
			err = checkData(body)
		case secImport:
			err = m.countImports(body)
		case secGlobal:
			m.definedGlobals, err = vecLen(body)
		case secTag:
			err = fmt.Errorf("%w: exception handling (tag section)", ErrUnsupported)
		}
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// vecLen reads the length of the vector a section holds. Every entry takes
// at least a byte, so a length beyond the section's size is malformed:
// checking it here keeps wazero's decoder (which allocates by the declared
// length) from being asked for gigabytes by a crafted file.
func vecLen(body []byte) (uint32, error) {
	r := &reader{b: body}
	n := r.u32()
	if r.err == nil && uint64(n) > uint64(len(body)-r.off) {
		r.err = errTooLong
	}
	if r.err != nil {
		return 0, fmt.Errorf("%w: %v", ErrMalformed, r.err)
	}
	return n, nil
}

// checkTypes checks the shape of the type section (function types whose
// parameter and result lists fit in the section) and returns its length
// and each type's parameter types.
func checkTypes(body []byte) (uint32, [][]byte, error) {
	n, err := vecLen(body)
	if err != nil {
		return 0, nil, err
	}
	r := &reader{b: body}
	r.u32()
	params := make([][]byte, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		if form := r.byte(); form != 0x60 && r.err == nil {
			return 0, nil, fmt.Errorf("%w: type %d: form 0x%02x", ErrUnsupported, i, form)
		}
		ps := r.bytes(r.u32()) // parameter types, one byte each
		r.bytes(r.u32())       // result types
		params = append(params, ps)
	}
	if r.err == nil && r.off != len(body) {
		r.err = errTrailing
	}
	if r.err != nil {
		return 0, nil, fmt.Errorf("%w: type section: %v", ErrMalformed, r.err)
	}
	return n, params, nil
}

// readFuncTypes reads the function section: the type of each defined
// function.
func readFuncTypes(body []byte) ([]uint32, error) {
	n, err := vecLen(body)
	if err != nil {
		return nil, err
	}
	r := &reader{b: body}
	r.u32()
	out := make([]uint32, 0, n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		out = append(out, r.u32())
	}
	if r.err == nil && r.off != len(body) {
		r.err = errTrailing
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: function section: %v", ErrMalformed, r.err)
	}
	return out, nil
}

// checkData checks that every data segment's bytes lie in the section.
func checkData(body []byte) error {
	n, err := vecLen(body)
	if err != nil {
		return err
	}
	r := &reader{b: body}
	r.u32()
	var in instr
	for i := uint32(0); i < n && r.err == nil; i++ {
		flags := r.u32()
		if flags == 2 {
			r.u32() // memory index
		}
		if flags == 0 || flags == 2 {
			for r.err == nil {
				if err := in.decode(r); err != nil {
					return err
				}
				if in.op == opEnd {
					break
				}
			}
		} else if flags != 1 && r.err == nil {
			return fmt.Errorf("%w: data segment %d: flags %d", ErrMalformed, i, flags)
		}
		r.bytes(r.u32())
	}
	if r.err == nil && r.off != len(body) {
		r.err = errTrailing
	}
	if r.err != nil {
		return fmt.Errorf("%w: data section: %v", ErrMalformed, r.err)
	}
	return nil
}

func (m *module) countImports(body []byte) error {
	r := &reader{b: body}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00: // func
			r.u32()
			m.importedFuncs++
		case 0x01: // table
			r.byte()
			r.limits()
		case 0x02: // memory
			r.limits()
		case 0x03: // global
			r.byte()
			r.byte()
			m.importedGlobals++
		default:
			if r.err == nil {
				return fmt.Errorf("%w: import kind 0x%02x", ErrUnsupported, kind)
			}
		}
	}
	if r.err == nil && r.off != len(r.b) {
		r.err = errTrailing
	}
	if r.err != nil {
		return fmt.Errorf("%w: import section: %v", ErrMalformed, r.err)
	}
	return nil
}

// shift maps a function index of the input to the output, where the refuel
// import precedes every defined function.
func (m *module) shift(idx uint32) uint32 {
	if idx >= m.importedFuncs {
		return idx + 1
	}
	return idx
}

func (m *module) typeSection(body []byte) ([]byte, error) {
	out := appendU32(nil, m.types+1)
	if len(body) > 0 {
		r := &reader{b: body}
		r.u32()
		out = append(out, body[r.off:]...)
	}
	return append(out, 0x60, 0x00, 0x01, 0x7E), nil // () -> i64
}

func (m *module) importSection(body []byte) ([]byte, error) {
	out := appendU32(nil, m.importedCount(body)+1)
	if len(body) > 0 {
		r := &reader{b: body}
		r.u32()
		out = append(out, body[r.off:]...)
	}
	out = appendName(out, ImportModule)
	out = appendName(out, ImportName)
	out = append(out, 0x00)
	return appendU32(out, m.refuelType), nil
}

func (m *module) importedCount(body []byte) uint32 {
	n, _ := vecLen(body) // checked by countImports
	return n
}

func (m *module) globalSection(body []byte) ([]byte, error) {
	out := appendU32(nil, m.definedGlobals+1)
	if len(body) > 0 {
		r := &reader{b: body}
		n := r.u32()
		for i := uint32(0); i < n; i++ {
			start := r.off
			r.byte() // valtype
			r.byte() // mutability
			if r.err != nil {
				return nil, fmt.Errorf("%w: global section: %v", ErrMalformed, r.err)
			}
			out = append(out, body[start:r.off]...)
			var err error
			if out, err = m.copyExpr(r, out); err != nil {
				return nil, fmt.Errorf("global %d: %w", i, err)
			}
		}
		if r.off != len(body) {
			return nil, fmt.Errorf("%w: global section: %v", ErrMalformed, errTrailing)
		}
	}
	// (global (mut i64) (i64.const 0)): the first checkpoint refuels.
	return append(out, 0x7E, 0x01, 0x42, 0x00, 0x0B), nil
}

func (m *module) exportSection(body []byte) ([]byte, error) {
	var n uint32
	var out []byte
	if len(body) > 0 {
		r := &reader{b: body}
		n = r.u32()
		out = appendU32(nil, n+1)
		for i := uint32(0); i < n; i++ {
			name := r.name()
			kind := r.byte()
			idx := r.u32()
			if r.err != nil {
				return nil, fmt.Errorf("%w: export section: %v", ErrMalformed, r.err)
			}
			if string(name) == ExportGlobal {
				return nil, fmt.Errorf("%w: the module already exports %q", ErrUnsupported, ExportGlobal)
			}
			if kind == 0x00 {
				idx = m.shift(idx)
			}
			out = appendName(out, string(name))
			out = append(out, kind)
			out = appendU32(out, idx)
		}
		if r.off != len(body) {
			return nil, fmt.Errorf("%w: export section: %v", ErrMalformed, errTrailing)
		}
	} else {
		out = appendU32(nil, 1)
	}
	out = appendName(out, ExportGlobal)
	out = append(out, 0x03)
	return appendU32(out, m.fuelGlobal), nil
}

func (m *module) startSection(body []byte) ([]byte, error) {
	r := &reader{b: body}
	idx := r.u32()
	if r.err != nil || r.off != len(body) {
		return nil, fmt.Errorf("%w: start section", ErrMalformed)
	}
	return appendU32(nil, m.shift(idx)), nil
}

func (m *module) elementSection(body []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n)
	bad := func(i uint32, err error) ([]byte, error) {
		if err == nil {
			err = r.err
		}
		return nil, fmt.Errorf("%w: element segment %d: %v", ErrMalformed, i, err)
	}
	for i := uint32(0); i < n; i++ {
		flags := r.u32()
		if r.err != nil {
			return bad(i, nil)
		}
		if flags > 7 {
			return bad(i, fmt.Errorf("flags %d", flags))
		}
		out = appendU32(out, flags)
		var err error
		if flags&2 != 0 && flags&1 == 0 { // explicit table index (2, 6)
			out = appendU32(out, r.u32())
		}
		if flags&1 == 0 { // active: offset expression (0, 2, 4, 6)
			if out, err = m.copyExpr(r, out); err != nil {
				return nil, err
			}
		}
		if flags&3 != 0 { // elemkind (1, 2, 3) or reftype (5, 6, 7)
			out = append(out, r.byte())
		}
		cnt := r.u32()
		if r.err != nil {
			return bad(i, nil)
		}
		out = appendU32(out, cnt)
		for j := uint32(0); j < cnt; j++ {
			if flags&4 == 0 {
				out = appendU32(out, m.shift(r.u32()))
			} else if out, err = m.copyExpr(r, out); err != nil {
				return nil, err
			}
			if r.err != nil {
				return bad(i, nil)
			}
		}
	}
	if r.err != nil {
		return bad(n, nil)
	}
	if r.off != len(body) {
		return nil, fmt.Errorf("%w: element section: %v", ErrMalformed, errTrailing)
	}
	return out, nil
}

// copyExpr copies a constant expression up to and including its end,
// shifting ref.func indices.
func (m *module) copyExpr(r *reader, out []byte) ([]byte, error) {
	var in instr
	for {
		if err := in.decode(r); err != nil {
			return nil, err
		}
		out = m.appendInstr(out, r.b, &in)
		if in.op == opEnd {
			return out, nil
		}
		if in.kind != kindPlain && in.kind != kindFuncRef {
			return nil, fmt.Errorf("%w: control instruction in a constant expression", ErrMalformed)
		}
	}
}

// appendInstr appends the instruction in (decoded from src) with its
// function index shifted.
func (m *module) appendInstr(out, src []byte, in *instr) []byte {
	if in.kind != kindFuncRef {
		return append(out, src[in.start:in.end]...)
	}
	out = append(out, src[in.start:in.idxOff]...)
	return appendU32(out, m.shift(in.idx))
}

// customSection returns the rewritten body of a custom section, or nil to
// drop it. The name section maps function indices, which shift; a name
// section that does not parse is dropped (names are for debugging only).
func (m *module) customSection(body []byte) []byte {
	r := &reader{b: body}
	name := r.name()
	if r.err != nil || string(name) != "name" {
		return body
	}
	out := append([]byte(nil), body[:r.off]...)
	for r.off < len(body) {
		id := r.byte()
		sub := r.bytes(r.u32())
		if r.err != nil {
			return nil
		}
		if id != 1 && id != 2 {
			out = append(out, id)
			out = appendU32(out, uint32(len(sub)))
			out = append(out, sub...)
			continue
		}
		s := &reader{b: sub}
		n := s.u32()
		nb := appendU32(nil, n)
		for i := uint32(0); i < n && s.err == nil; i++ {
			nb = appendU32(nb, m.shift(s.u32()))
			start := s.off
			if id == 1 {
				s.name()
			} else {
				k := s.u32()
				for j := uint32(0); j < k && s.err == nil; j++ {
					s.u32()
					s.name()
				}
			}
			if s.err != nil {
				return nil
			}
			nb = append(nb, sub[start:s.off]...)
		}
		if s.err != nil || s.off != len(sub) {
			return nil
		}
		out = append(out, id)
		out = appendU32(out, uint32(len(nb)))
		out = append(out, nb...)
	}
	return out
}
