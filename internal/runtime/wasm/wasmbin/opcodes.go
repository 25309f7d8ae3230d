package wasmbin

// Value types.
const (
	I32       byte = 0x7f
	I64       byte = 0x7e
	F32       byte = 0x7d
	F64       byte = 0x7c
	V128      byte = 0x7b
	FuncRef   byte = 0x70
	ExternRef byte = 0x6f
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

// External kinds (imports and exports).
const (
	kindFunc   = 0
	kindTable  = 1
	kindMemory = 2
	kindGlobal = 3
	kindTag    = 4
)

// Opcodes the rewriter emits or treats specially.
const (
	opUnreachable = 0x00
	opBlock       = 0x02
	opLoop        = 0x03
	opIf          = 0x04
	opEnd         = 0x0b
	opDelegate    = 0x18
	opDrop        = 0x1a
	opLocalGet    = 0x20
	opLocalSet    = 0x21
	opLocalTee    = 0x22
	opGlobalGet   = 0x23
	opGlobalSet   = 0x24
	opMemoryGrow  = 0x40
	opI32LeS      = 0x4c
	opTableSet    = 0x26
	opI32Const    = 0x41
	opI64Const    = 0x42
	opF32Const    = 0x43
	opF64Const    = 0x44
	opI32Add      = 0x6a
	opI32Sub      = 0x6b
	opI32Mul      = 0x6c
	opI64Add      = 0x7c
	opI64Sub      = 0x7d
	opI64Mul      = 0x7e
	opRefNull     = 0xd0
	opRefFunc     = 0xd2

	opPrefixMisc    = 0xfc
	opPrefixSIMD    = 0xfd
	opPrefixAtomics = 0xfe

	blockEmpty = 0x40
)

// Immediate shapes of the single-byte opcodes.
const (
	immNone       = iota + 1
	immBlockType  // block, loop, if, try
	immIndex      // one u32 (labels, functions, locals, globals, tables, tags)
	immTwoIndexes // call_indirect, return_call_indirect
	immBrTable
	immMemArg
	immMemIndex // memory.size, memory.grow
	immI32
	immI64
	immF32
	immF64
	immSelectT
	immHeapType // ref.null
	immTryTable
)

// imm gives the immediate shape of each single-byte opcode; 0 is an opcode
// this reader does not know.
var imm = func() (t [256]byte) {
	set := func(shape byte, ops ...int) {
		for _, op := range ops {
			t[op] = shape
		}
	}
	set(immNone, 0x00, 0x01, 0x05, 0x0b, 0x0f, 0x19, 0x1a, 0x1b, 0x0a, 0xd1, 0xd3, 0xd4)
	set(immBlockType, 0x02, 0x03, 0x04, 0x06)
	// catch, throw, rethrow, br, br_if, call, return_call, call_ref,
	// return_call_ref, delegate, local.*, global.*, table.get/set,
	// ref.func, br_on_null, br_on_non_null.
	set(immIndex, 0x07, 0x08, 0x09, 0x0c, 0x0d, 0x10, 0x12, 0x14, 0x15, 0x18,
		0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xd2, 0xd5, 0xd6)
	set(immTwoIndexes, 0x11, 0x13)
	set(immBrTable, 0x0e)
	for op := 0x28; op <= 0x3e; op++ {
		t[op] = immMemArg
	}
	set(immMemIndex, 0x3f, 0x40)
	set(immI32, 0x41)
	set(immI64, 0x42)
	set(immF32, 0x43)
	set(immF64, 0x44)
	for op := 0x45; op <= 0xc4; op++ {
		t[op] = immNone
	}
	set(immSelectT, 0x1c)
	set(immHeapType, 0xd0)
	set(immTryTable, 0x1f)
	return
}()

// skipMisc skips the immediates of a 0xfc-prefixed instruction.
func (r *reader) skipMisc(sub uint32) (tableWrite bool) {
	switch {
	case sub <= 7: // saturating truncations
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9: // data.drop
		r.u32()
	case sub == 10: // memory.copy
		r.u32()
		r.u32()
	case sub == 11: // memory.fill
		r.u32()
	case sub == 12: // table.init elem table
		r.u32()
		r.u32()
		return true
	case sub == 13: // elem.drop
		r.u32()
	case sub == 14: // table.copy
		r.u32()
		r.u32()
		return true
	case sub == 15, sub == 17: // table.grow, table.fill
		r.u32()
		return true
	case sub == 16: // table.size
		r.u32()
	default:
		r.fail("unknown instruction 0xfc %d", sub)
	}
	return false
}

// skipSIMD skips the immediates of a 0xfd-prefixed instruction.
func (r *reader) skipSIMD(sub uint32) {
	switch {
	case sub <= 11: // loads and v128.store
		r.memArg()
	case sub == 12, sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memArg()
		r.byte()
	case sub == 92, sub == 93: // load32_zero, load64_zero
		r.memArg()
	case sub <= 0x113: // everything else has no immediate
	default:
		r.fail("unknown instruction 0xfd %d", sub)
	}
}

// skipAtomic skips the immediates of a 0xfe-prefixed instruction.
func (r *reader) skipAtomic(sub uint32) {
	switch {
	case sub == 3: // atomic.fence
		r.byte()
	case sub <= 2, sub >= 0x10 && sub <= 0x4e: // notify, wait, loads, stores, read-modify-writes
		r.memArg()
	default:
		r.fail("unknown instruction 0xfe %d", sub)
	}
}

// memArg skips a memory argument: alignment (with the multi-memory flag)
// and offset.
func (r *reader) memArg() {
	align := r.u32()
	if align&0x40 != 0 {
		r.u32() // memory index
	}
	r.u32()
}
