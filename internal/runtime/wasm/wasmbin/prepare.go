package wasmbin

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Names the prepared module exports for the host.
const (
	// InterruptExport is an i32 global added to the module: while it is
	// not zero, the guest traps (unreachable) at its next safe point. The
	// guest's own code cannot name it.
	InterruptExport = "spry.interrupt"
	// FuelExport is an i32 global added to the module that counts down at
	// every function entry and loop header; at zero the guest passes a
	// safe point: it calls out of its compiled code into the host's Go
	// (memory.grow by 0 pages), where the Go runtime can stop it for a
	// garbage collection (compiled wasm cannot be preempted otherwise),
	// then checks InterruptExport and refills the fuel (SafePointEvery).
	// Setting it to 0 makes the next check a safe point at once.
	FuelExport = "spry.fuel"
	// SafePointEvery is how many checks pass between two safe points.
	SafePointEvery = 1 << 16
	// StartExport is the module's start function, which Prepare removes
	// from the start section so that instantiating does not run it.
	StartExport = "spry.start"
	// globalExportPrefix + index names each mutable global of the module.
	globalExportPrefix = "spry.g"
)

// Segment is a data segment that Prepare made passive: the host writes
// Bytes at Offset of the fresh memory itself, once, before initialising
// the guest.
type Segment struct {
	Offset uint32
	Bytes  []byte
}

// Global is a mutable global of the module, exported for snapshots.
type Global struct {
	Export string
	Type   byte // I32, I64, F32 or F64
}

// Limits are a memory's limits in 64 KiB pages; HasMax is false when the
// module leaves the maximum open.
type Limits struct {
	Min, Max uint32
	HasMax   bool
}

// Prepared is a module made ready for the sandbox host.
type Prepared struct {
	// Binary is the rewritten module: every function entry and loop
	// header checks InterruptExport; active data segments are gone
	// (passive, when code names segments); the start function is exported
	// as StartExport, not run; every mutable global is exported
	// (Globals).
	Binary []byte
	// Data are the former active data segments, in order.
	Data    []Segment
	Globals []Global
	Memory  Limits
	// Start reports that the module had a start function (StartExport).
	Start bool
	// NoSnapshot, when not empty, says why an instance of this module
	// cannot be cloned from a snapshot of another (its tables change at
	// run time, or it has a global a snapshot cannot carry): every
	// instance must then run its own initialisation.
	NoSnapshot string
	// Imports lists the module's imports as "module.name".
	Imports []string
	// Exports lists the module's own exports (functions, by name).
	Exports []string
}

type section struct {
	id      byte
	content []byte
}

// rank orders the non-custom sections as the format requires.
var rank = map[byte]int{
	secType: 1, secImport: 2, secFunction: 3, secTable: 4, secMemory: 5, secTag: 6,
	secGlobal: 7, secExport: 8, secStart: 9, secElement: 10, secDataCount: 11, secCode: 12, secData: 13,
}

// Prepare rewrites a module for the sandbox host (see Prepared). It
// refuses modules it cannot make safe: no memory of their own, an
// imported memory, 64-bit or several memories, data at a non-constant
// offset, instructions it does not know.
func Prepare(bin []byte) (*Prepared, error) {
	if len(bin) < 8 || string(bin[:4]) != "\x00asm" {
		return nil, fmt.Errorf("%w: not a WebAssembly module (bad magic)", ErrFormat)
	}
	if v := binary.LittleEndian.Uint32(bin[4:8]); v != 1 {
		return nil, fmt.Errorf("%w: version %d (want 1; components are not supported)", ErrFormat, v)
	}
	r := &reader{b: bin, off: 8}
	var secs []section
	seen := map[byte]bool{}
	for !r.done() {
		id := r.byte()
		content := r.bytes(r.u32())
		if r.err != nil {
			return nil, r.err
		}
		if id != secCustom {
			if _, ok := rank[id]; !ok {
				return nil, fmt.Errorf("%w: unknown section %d", ErrFormat, id)
			}
			if seen[id] {
				return nil, fmt.Errorf("%w: section %d twice", ErrFormat, id)
			}
			seen[id] = true
		}
		secs = append(secs, section{id, content})
	}
	if r.err != nil {
		return nil, r.err
	}

	p := &Prepared{}
	m := &module{p: p}
	for _, s := range secs {
		if err := m.read(s); err != nil {
			return nil, err
		}
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	out := append([]byte(nil), bin[:8]...)
	emitted := map[byte]bool{}
	// emitUpTo writes the sections Prepare adds whose place comes before
	// a section of rank next.
	emitUpTo := func(next int) {
		if !emitted[secGlobal] && next > rank[secGlobal] {
			out = appendSection(out, secGlobal, m.globalSection())
			emitted[secGlobal] = true
		}
		if !emitted[secExport] && next > rank[secExport] {
			out = appendSection(out, secExport, m.exportSection())
			emitted[secExport] = true
		}
	}
	for _, s := range secs {
		if s.id != secCustom {
			emitUpTo(rank[s.id])
		}
		switch s.id {
		case secGlobal:
			out = appendSection(out, secGlobal, m.globalSection())
			emitted[secGlobal] = true
		case secExport:
			out = appendSection(out, secExport, m.exportSection())
			emitted[secExport] = true
		case secStart:
			// Dropped: exported instead.
		case secCode:
			code, err := m.instrument(s.content)
			if err != nil {
				return nil, err
			}
			out = appendSection(out, secCode, code)
		case secData:
			if m.dataRefs || m.dataCount {
				out = appendSection(out, secData, m.passiveData())
			}
			// Else no code names a segment: the host writes them at
			// initialisation, and instantiating copies nothing.
		default:
			out = appendSection(out, s.id, s.content)
		}
	}
	emitUpTo(1 << 30)
	p.Binary = out
	return p, nil
}

// module is what Prepare learns of a module while reading it.
type module struct {
	p             *Prepared
	importFuncs   uint32
	importGlobals uint32
	memories      int
	globals       [][]byte // each defined global's bytes: type, mut, init expr
	globalTypes   []byte
	globalMut     []bool
	exports       []byte // the export section's entries, verbatim
	nexports      uint32
	exportNames   map[string]bool
	start         *uint32
	data          [][]byte // each segment's bytes as written (passive form)
	funcs         uint32   // defined functions (function section)
	typeParams    []uint32 // parameters of each type
	funcTypes     []uint32 // type of each defined function
	bodies        uint32
	tableWrite    bool
	dataRefs      bool // code names data segments (memory.init, data.drop)
	dataCount     bool // the module has a data count section
}

func (m *module) read(s section) error {
	r := &reader{b: s.content}
	switch s.id {
	case secImport:
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			mod, name := r.name(), r.name()
			m.p.Imports = append(m.p.Imports, mod+"."+name)
			switch kind := r.byte(); kind {
			case kindFunc:
				r.u32()
				m.importFuncs++
			case kindTable:
				r.valType()
				r.limits()
			case kindMemory:
				return fmt.Errorf("%w: the module imports its memory (%s.%s); a function must define its own", ErrFormat, mod, name)
			case kindGlobal:
				r.valType()
				r.byte()
				m.importGlobals++
			case kindTag:
				r.byte()
				r.u32()
			default:
				r.fail("unknown import kind %d", kind)
			}
		}
	case secType:
		n := r.u32()
		if uint64(n) > uint64(len(r.b)) {
			r.fail("%d types", n)
		}
		for ; n > 0 && r.err == nil; n-- {
			if form := r.byte(); form != 0x60 {
				r.fail("unsupported type form %#x (only function types)", form)
				break
			}
			params := r.u32()
			if uint64(params) > uint64(len(r.b)) {
				r.fail("%d parameters", params)
			}
			for i := uint32(0); i < params && r.err == nil; i++ {
				r.valType()
			}
			for results := r.u32(); results > 0 && r.err == nil; results-- {
				r.valType()
			}
			m.typeParams = append(m.typeParams, params)
		}
	case secFunction:
		m.funcs = r.u32()
		if uint64(m.funcs) > uint64(len(r.b)) {
			r.fail("%d functions", m.funcs)
		}
		for i := uint32(0); i < m.funcs && r.err == nil; i++ {
			t := r.u32()
			if r.err == nil && t >= uint32(len(m.typeParams)) {
				r.fail("function %d has type %d of %d", i, t, len(m.typeParams))
			}
			m.funcTypes = append(m.funcTypes, t)
		}
	case secMemory:
		n := r.u32()
		if n > 1 {
			return fmt.Errorf("%w: %d memories; a function has one", ErrFormat, n)
		}
		for ; n > 0 && r.err == nil; n-- {
			flags, min, max, hasMax := r.limits()
			if flags&2 != 0 {
				return fmt.Errorf("%w: shared memory (threads) is not supported", ErrFormat)
			}
			m.p.Memory = Limits{Min: min, Max: max, HasMax: hasMax}
			m.memories++
		}
	case secGlobal:
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			start := r.off
			t := r.valType()
			mut := r.byte()
			if mut > 1 {
				r.fail("bad global mutability %d", mut)
			}
			r.constExpr()
			m.globals = append(m.globals, r.b[start:r.off:r.off])
			m.globalTypes = append(m.globalTypes, t)
			m.globalMut = append(m.globalMut, mut == 1)
		}
	case secExport:
		m.exportNames = map[string]bool{}
		m.nexports = r.u32()
		start := r.off
		for i := uint32(0); i < m.nexports && r.err == nil; i++ {
			name := r.name()
			kind := r.byte()
			r.u32()
			if m.exportNames[name] {
				r.fail("export %q twice", name)
			}
			m.exportNames[name] = true
			if kind == kindFunc {
				m.p.Exports = append(m.p.Exports, name)
			}
		}
		m.exports = r.b[start:r.off:r.off]
	case secStart:
		f := r.u32()
		m.start = &f
		m.p.Start = true
	case secData:
		for n := r.u32(); n > 0 && r.err == nil; n-- {
			switch flags := r.u32(); flags {
			case 0, 2:
				if flags == 2 && r.u32() != 0 {
					return fmt.Errorf("%w: data for a memory other than 0", ErrFormat)
				}
				off, ok := constOffset(r.constExpr())
				b := r.bytes(r.u32())
				if r.err != nil {
					break
				}
				if !ok {
					return fmt.Errorf("%w: a data segment's offset is not a constant", ErrFormat)
				}
				m.p.Data = append(m.p.Data, Segment{Offset: off, Bytes: b})
				m.data = append(m.data, passiveSegment(b))
			case 1:
				start := r.off - 1
				r.bytes(r.u32())
				m.data = append(m.data, r.b[start:r.off:r.off])
			default:
				r.fail("unknown data segment flags %d", flags)
			}
		}
	case secCode:
		// Read in instrument.
	case secDataCount:
		m.dataCount = true
	case secElement, secTable, secTag, secCustom:
		// Kept as they are.
	}
	if r.err == nil && s.id != secCustom && s.id != secCode && s.id != secElement &&
		s.id != secTable && s.id != secTag && s.id != secDataCount && r.off != len(r.b) {
		r.fail("%d bytes left over in section %d", len(r.b)-r.off, s.id)
	}
	return r.err
}

func (m *module) check() error {
	if m.memories == 0 {
		return fmt.Errorf("%w: the module defines no memory", ErrFormat)
	}
	for i, t := range m.globalTypes {
		if !m.globalMut[i] {
			continue
		}
		switch t {
		case I32, I64, F32, F64:
			m.p.Globals = append(m.p.Globals, Global{
				Export: globalExportPrefix + strconv.Itoa(int(m.importGlobals)+i), Type: t})
		default:
			m.p.NoSnapshot = "it has a mutable global of a reference or vector type"
		}
	}
	if m.importGlobals > 0 {
		m.p.NoSnapshot = "it imports globals"
	}
	for _, name := range []string{InterruptExport, FuelExport, StartExport} {
		if m.exportNames[name] {
			return fmt.Errorf("%w: the module exports %q, a name spry reserves", ErrFormat, name)
		}
	}
	for _, g := range m.p.Globals {
		if m.exportNames[g.Export] {
			return fmt.Errorf("%w: the module exports %q, a name spry reserves", ErrFormat, g.Export)
		}
	}
	return nil
}

// constOffset evaluates a data segment's offset expression: i32.const N end.
func constOffset(expr []byte) (uint32, bool) {
	if len(expr) < 2 || expr[0] != opI32Const {
		return 0, false
	}
	r := &reader{b: expr, off: 1}
	v := r.sleb(32)
	if r.err != nil || r.off != len(expr)-1 || expr[len(expr)-1] != opEnd {
		return 0, false
	}
	return uint32(v), true
}

func passiveSegment(b []byte) []byte {
	out := appendU32([]byte{1}, uint32(len(b)))
	return append(out, b...)
}

// interruptIndex and fuelIndex are the indexes of the added globals.
func (m *module) interruptIndex() uint32 { return m.importGlobals + uint32(len(m.globals)) }
func (m *module) fuelIndex() uint32      { return m.interruptIndex() + 1 }

func (m *module) globalSection() []byte {
	out := appendU32(nil, uint32(len(m.globals)+2))
	for _, g := range m.globals {
		out = append(out, g...)
	}
	// The interrupt flag: a mutable i32, 0; the fuel, full.
	out = append(out, I32, 1, opI32Const, 0, opEnd)
	out = append(out, I32, 1, opI32Const)
	out = appendS64(out, SafePointEvery)
	return append(out, opEnd)
}

func (m *module) exportSection() []byte {
	n := m.nexports + 2 + uint32(len(m.p.Globals))
	if m.start != nil {
		n++
	}
	out := appendU32(nil, n)
	out = append(out, m.exports...)
	out = appendName(out, InterruptExport)
	out = append(out, kindGlobal)
	out = appendU32(out, m.interruptIndex())
	out = appendName(out, FuelExport)
	out = append(out, kindGlobal)
	out = appendU32(out, m.fuelIndex())
	for _, g := range m.p.Globals {
		idx, _ := strconv.Atoi(g.Export[len(globalExportPrefix):])
		out = appendName(out, g.Export)
		out = append(out, kindGlobal)
		out = appendU32(out, uint32(idx))
	}
	if m.start != nil {
		out = appendName(out, StartExport)
		out = append(out, kindFunc)
		out = appendU32(out, *m.start)
	}
	return out
}

func (m *module) passiveData() []byte {
	out := appendU32(nil, uint32(len(m.data)))
	for _, d := range m.data {
		out = append(out, d...)
	}
	return out
}

// The checks Prepare puts into every function: at its entry,
//
//	i32.const SafePointEvery  local.set $f          ;; the loops' own fuel
//	global.get $fuel  i32.const 1  i32.sub  global.set $fuel
//	global.get $fuel  i32.const 0  i32.le_s
//	if  <safe point>  i32.const SafePointEvery  global.set $fuel  end
//
// and after every loop instruction (once per iteration),
//
//	local.get $f  i32.const 1  i32.sub  local.tee $f  i32.const 0  i32.le_s
//	if  <safe point>  i32.const SafePointEvery  local.set $f  end
//
// where a safe point is
//
//	i32.const 0  memory.grow 0  drop          ;; a call into the host's Go
//	global.get $interrupt  if  unreachable  end
//
// $f is a local added to the function: a loop's counter stays in a
// register, so a tight loop pays a decrement and a branch per iteration.
// Calls count down the global $fuel, which Interrupt empties so that the
// next call stops the guest at once (a loop stops within SafePointEvery
// iterations). The guest's code can name neither global nor the local.

// safePoint returns the safe point sequence.
func (m *module) safePoint() []byte {
	seq := []byte{opI32Const, 0, opMemoryGrow, 0, opDrop, opGlobalGet}
	seq = appendU32(seq, m.interruptIndex())
	return append(seq, opIf, blockEmpty, opUnreachable, opEnd)
}

// entryCheck returns the check at the entry of a function whose loop
// counter is local f.
func (m *module) entryCheck(f uint32) []byte {
	fuel := appendU32(nil, m.fuelIndex())
	seq := appendS64([]byte{opI32Const}, SafePointEvery)
	seq = appendU32(append(seq, opLocalSet), f)
	seq = append(append(seq, opGlobalGet), fuel...)
	seq = append(seq, opI32Const, 1, opI32Sub, opGlobalSet)
	seq = append(append(seq, fuel...), opGlobalGet)
	seq = append(append(seq, fuel...), opI32Const, 0, opI32LeS, opIf, blockEmpty)
	seq = append(seq, m.safePoint()...)
	seq = appendS64(append(seq, opI32Const), SafePointEvery)
	seq = append(append(seq, opGlobalSet), fuel...)
	return append(seq, opEnd)
}

// loopCheck returns the check after a loop instruction.
func (m *module) loopCheck(f uint32) []byte {
	seq := appendU32([]byte{opLocalGet}, f)
	seq = append(seq, opI32Const, 1, opI32Sub, opLocalTee)
	seq = appendU32(seq, f)
	seq = append(seq, opI32Const, 0, opI32LeS, opIf, blockEmpty)
	seq = append(seq, m.safePoint()...)
	seq = appendS64(append(seq, opI32Const), SafePointEvery)
	seq = appendU32(append(seq, opLocalSet), f)
	return append(seq, opEnd)
}

// instrument rewrites the code section: each body gets the interrupt check
// at its entry and after every loop instruction.
func (m *module) instrument(code []byte) ([]byte, error) {
	r := &reader{b: code}
	n := r.u32()
	if r.err == nil && n != m.funcs {
		return nil, fmt.Errorf("%w: %d function bodies for %d functions", ErrFormat, n, m.funcs)
	}
	out := appendU32(make([]byte, 0, len(code)+len(code)/8), n)
	var body []byte
	for i := uint32(0); i < n && r.err == nil; i++ {
		b := r.bytes(r.u32())
		if r.err != nil {
			break
		}
		var err error
		body, err = m.instrumentBody(body[:0], b, m.typeParams[m.funcTypes[i]])
		if err != nil {
			return nil, fmt.Errorf("function %d: %w", m.importFuncs+i, err)
		}
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	if r.err == nil && r.off != len(r.b) {
		r.fail("bytes after the last function body")
	}
	m.bodies = n
	return out, r.err
}

func (m *module) instrumentBody(out, b []byte, params uint32) ([]byte, error) {
	r := &reader{b: b}
	// Locals: vec of (count, type), and one more for the loop counter.
	var locals uint64
	groups := r.u32()
	afterCount := r.off
	for n := groups; n > 0 && r.err == nil; n-- {
		locals += uint64(r.u32())
		r.valType()
		if locals > 50000 {
			r.fail("too many locals")
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	f := params + uint32(locals)
	out = appendU32(out, groups+1)
	out = append(out, b[afterCount:r.off]...)
	out = append(out, 1, I32)
	out = append(out, m.entryCheck(f)...)
	loop := m.loopCheck(f)
	depth := 1
	for r.err == nil && depth > 0 {
		start := r.off
		op := r.byte()
		switch op {
		case opPrefixMisc:
			sub := r.u32()
			if r.skipMisc(sub) {
				m.tableWrite = true
			}
			if sub == 8 || sub == 9 { // memory.init, data.drop
				m.dataRefs = true
			}
		case opPrefixSIMD:
			r.skipSIMD(r.u32())
		case opPrefixAtomics:
			r.skipAtomic(r.u32())
		default:
			switch imm[op] {
			case 0:
				r.fail("unknown instruction %#x", op)
			case immNone:
				if op == opEnd {
					depth--
				}
			case immBlockType:
				r.sleb(33)
				depth++
			case immIndex:
				r.u32()
				switch op {
				case opTableSet:
					m.tableWrite = true
				case opDelegate: // ends its try block
					depth--
				}
			case immTwoIndexes:
				r.u32()
				r.u32()
			case immBrTable:
				n := r.u32()
				if uint64(n) > uint64(len(r.b)) {
					r.fail("br_table of %d labels", n)
				}
				for ; n > 0 && r.err == nil; n-- {
					r.u32()
				}
				r.u32()
			case immMemArg:
				r.memArg()
			case immMemIndex:
				r.u32()
			case immI32:
				r.sleb(32)
			case immI64:
				r.sleb(64)
			case immF32:
				r.bytes(4)
			case immF64:
				r.bytes(8)
			case immSelectT:
				n := r.u32()
				if uint64(n) > uint64(len(r.b)) {
					r.fail("select of %d types", n)
				}
				for ; n > 0 && r.err == nil; n-- {
					r.valType()
				}
			case immHeapType:
				r.sleb(33)
			case immTryTable:
				r.sleb(33)
				n := r.u32()
				if uint64(n) > uint64(len(r.b)) {
					r.fail("try_table of %d catches", n)
				}
				for ; n > 0 && r.err == nil; n-- {
					switch k := r.byte(); k {
					case 0, 1: // catch, catch_ref: tag, label
						r.u32()
						r.u32()
					case 2, 3: // catch_all, catch_all_ref: label
						r.u32()
					default:
						r.fail("unknown catch kind %d", k)
					}
				}
				depth++
			}
		}
		if r.err != nil {
			break
		}
		out = append(out, b[start:r.off]...)
		if op == opLoop {
			out = append(out, loop...)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the body's end", ErrFormat, len(b)-r.off)
	}
	if m.tableWrite && m.p.NoSnapshot == "" {
		m.p.NoSnapshot = "it changes its tables at run time"
	}
	return out, nil
}
