package bpf

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Instance ids are u16; every map is indexed by the full id space (or by
// the full port space), so lookups never miss for range reasons and the
// program needs no bounds arithmetic.
const maxEntries = 1 << 16

// Offsets into struct sk_msg_md (include/uapi/linux/bpf.h), a stable ABI.
const (
	mdData      = 0
	mdDataEnd   = 8
	mdLocalPort = 64 // host byte order
	mdSize      = 68
)

// Program constants from the kernel ABI.
const (
	skDrop      = 0
	skPass      = 1
	fIngress    = 1 // BPF_F_INGRESS
	descSize    = 16
	dstOffset   = 0 // desc.OffDst
	peerIDOff   = 0 // peers value: [2]uint32{id, app}
	peerAppOff  = 4
	cntSent     = 0 // counts value: [3]uint64{sent, received, dropped}
	cntReceived = 8
	cntDropped  = 16
)

// MaxDescs is the most descriptors one message may carry: a sender batches
// descriptors for one destination into one write of up to MaxDescs × 16
// bytes (transport.SendBatch), which the program moves whole.
const MaxDescs = 64

// mapSpecs are the program's maps. Names show up in bpftool; they must fit
// BPF_OBJ_NAME_LEN (15 characters).
func mapSpecs() (socks, peers, apps, counts *ebpf.MapSpec) {
	socks = &ebpf.MapSpec{Name: "spry_socks", Type: ebpf.SockMap, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries}
	// local port of a registered socket → {instance id, app id}
	peers = &ebpf.MapSpec{Name: "spry_peers", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: maxEntries}
	// instance id → app id (0: not registered)
	apps = &ebpf.MapSpec{Name: "spry_apps", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: maxEntries}
	// instance id → counters
	counts = &ebpf.MapSpec{Name: "spry_counts", Type: ebpf.Array, KeySize: 4, ValueSize: 24, MaxEntries: maxEntries}
	return
}

// verdict assembles the SK_MSG program. Registers that live across helper
// calls (r6-r9 survive calls):
//
//	r6  the sk_msg_md context
//	r7  sender instance id (0 while unknown)
//	r8  sender app id
//	r9  destination instance id
//
// Stack: fp-4 and fp-8 hold u32 map keys, fp-16 the message's count of
// descriptors (1 until its size is checked).
func verdict(socks, peers, apps, counts *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R7, 0),
		asm.Mov.Imm(asm.R8, 0),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),

		// Who sends: the sending socket's local port, bound by the daemon
		// and registered with it. The descriptor's Src is not consulted.
		asm.LoadMem(asm.R1, asm.R6, mdLocalPort, asm.Word),
		asm.StoreMem(asm.RFP, -4, asm.R1, asm.Word),
		asm.LoadMapPtr(asm.R1, peers.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "refuse"),
		asm.LoadMem(asm.R7, asm.R0, peerIDOff, asm.Word),
		asm.LoadMem(asm.R8, asm.R0, peerAppOff, asm.Word),
		asm.JEq.Imm(asm.R8, 0, "refuse"), // port not registered

		// Whole descriptors, 1 to MaxDescs of them: anything else would
		// break the receiver's framing of its byte stream. A message goes
		// whole to its first descriptor's destination (the sender puts
		// only descriptors for it in one message; receivers never trust
		// a descriptor's Dst).
		asm.LoadMem(asm.R1, asm.R6, mdSize, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "refuse"),
		asm.JGT.Imm(asm.R1, MaxDescs*descSize, "refuse"),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, descSize-1),
		asm.JNE.Imm(asm.R2, 0, "refuse"),
		asm.RSh.Imm(asm.R1, 4), // descSize = 1 << 4
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),

		// The destination id. A 16-byte write normally sits in one
		// scatterlist element; if it straddles two, pull it together.
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, dstOffset+2),
		asm.JLE.Reg(asm.R4, asm.R3, "have_dst"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Imm(asm.R3, descSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMsgPullData.Call(),
		asm.JNE.Imm(asm.R0, 0, "refuse"),
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, dstOffset+2),
		asm.JGT.Reg(asm.R4, asm.R3, "refuse"),
		asm.LoadMem(asm.R9, asm.R2, dstOffset, asm.Half).WithSymbol("have_dst"),

		// The destination must be registered, in the sender's app.
		asm.StoreMem(asm.RFP, -8, asm.R9, asm.Word),
		asm.LoadMapPtr(asm.R1, apps.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "refuse"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Word),
		asm.JNE.Reg(asm.R1, asm.R8, "refuse"), // another app, or none (0; r8 is not 0)

		// Onto the destination socket's receive queue. This fails when
		// the id is registered but its socket is gone (closed by a dying
		// instance: the kernel took it out of the sockmap).
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, socks.FD()),
		asm.Mov.Reg(asm.R3, asm.R9),
		asm.Mov.Imm(asm.R4, fIngress),
		asm.FnMsgRedirectMap.Call(),
		asm.JNE.Imm(asm.R0, skPass, "refuse"),

		// Count descriptors: sent by r7, received by r9.
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "count_rx"),
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, cntSent),
		asm.LoadMapPtr(asm.R1, counts.FD()).WithSymbol("count_rx"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, cntReceived),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),

		// Refused: count against the real sender (0 when unknown; a
		// malformed message counts as one) and swallow the message in
		// the sink. Not SK_DROP: that verdict sticks to the sending socket
		// (see the package doc).
		asm.StoreMem(asm.RFP, -4, asm.R7, asm.Word).WithSymbol("refuse"),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "sink"),
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.DWord),
		asm.AddAtomic.Mem(asm.R0, asm.R1, asm.DWord, cntDropped),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("sink"),
		asm.LoadMapPtr(asm.R2, socks.FD()),
		asm.Mov.Imm(asm.R3, SinkID),
		asm.Mov.Imm(asm.R4, fIngress),
		asm.FnMsgRedirectMap.Call(), // SK_PASS into the sink, SK_DROP if it is missing
		asm.Return(),
	}
}
