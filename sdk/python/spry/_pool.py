"""The app's shared-memory pool, as docs/contract.md lays it out.

Offsets and sizes here are the contract's; a pool whose header carries
another magic or layout version is refused with an error that says which
version this SDK speaks.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time

from . import _atomic as A

MAGIC = 0x4C4F4F5059525053  # "SPRYPOOL", little-endian
VERSION = 6  # the pool layout version this SDK speaks

PAGE = 4096
HEADER_SIZE = 4096  # one buffer header
MAX_HOPS = 32  # nodes with timestamps
MAX_NODES = 32  # steps of a chain's graph
MAX_STEPS = MAX_NODES
MAX_NEXT = 16
MAX_NAME = 64
MAX_DEPTH = 4
MAX_SEGS = 12
CHUNK = 64 << 10  # the unit of the large-extent region
EXT_ALIGN = 2 << 20
STATS_SIZE = 512
MAX_CTYPE = 127
OFF_META = 1040
MAX_META = HEADER_SIZE - OFF_META
NO_NODE = 0xFF
CALL_NODE = 0xFF  # the node of a call's buffer

# Pool header (page 0).
H_MAGIC, H_VERSION, H_LAYOUT = 0, 8, 16  # layout: 8 x u32
H_REGIONS = 48  # route, stats, ring, hdr, arena, extmap, ext, total, stride: 9 x u64
H_HEAD, H_FREE, H_ALLOC_FAILS, H_RECLAIMED, H_STALE = 128, 136, 192, 200, 208
H_EXT_CURSOR, H_EXT_USED, H_EXT_FAILS = 256, 264, 272

# Routing region.
ROUTE_HEADER = 64  # gateway u32 @0, epoch u32 @4
FN_ENTRY = 80  # base u32 @0, max u32 @4, hwm u32 @8, nameLen u8 @12, name [64] @16
CHAIN_ENTRY = 8 + MAX_NODES * 96  # nnodes u32 @0, nodes @8
NODE_ENTRY = 96  # fn u16 @0, flags u8 @2, nnext u8 @3, join u8 @4, jord u8 @5, quorum u16 @6,
#                  waitMs u32 @8, nameLen u8 @12, next [16]u8 @16, name [64] @32
NODE_CHOOSE, NODE_JOIN = 1, 2
SLOT_INFO = 16  # id u32 @0, state u32 @4, fn u32 @8, capacity u32 @12

# Slot states.
SLOT_EMPTY, SLOT_STARTING, SLOT_READY, SLOT_DRAINING, SLOT_DEAD = range(5)

# Slot counters (STATS_SIZE each).
S_QUEUE, S_INFLIGHT, S_ARRIVALS, S_SERVED, S_ERRORS = 0, 64, 72, 80, 88
S_BUSY_NANOS, S_BUSY_SINCE, S_STALE, S_CLIENT_ERRORS, S_LATENCY = 96, 104, 112, 120, 128

# Latency histogram bucket bounds (ns); a last bucket counts the rest, then
# the sum of all observations.
BOUNDS = [b * 1000 for b in (50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
                             100000, 250000, 500000, 1000000, 2500000, 10000000)]

# Buffer header fields. B_OWN is the ownership word: generation (bits
# 0..31) | holder << 32 | transit destination << 48, changed only by CAS.
B_OWN, B_NEXT, B_LEN, B_REQID, B_OFF = 0, 8, 12, 16, 24
B_STATUS, B_FLAGS, B_HOPS, B_CHAIN, B_CTYPE_LEN, B_META_LEN = 28, 30, 31, 32, 34, 36
B_INGRESS, B_DEADLINE, B_SENT = 40, 48, 56
# Where the buffer is in its graph, its payload's extents, shared data and
# a join's inputs (see docs/contract.md).
B_NODE, B_PHASE, B_NSEG, B_DEPTH, B_KIND, B_REF_BIT, B_CHOSEN = 64, 65, 66, 67, 68, 69, 70
B_REF, B_REF_GEN, B_HELD = 72, 76, 80
B_CALL = 88  # caller u16, callee u16, depth u8, pad [3], tag u32
B_FRAMES = 104  # [4] x (at i64, join u8, pad u8, slot u16, of u16, width u16)
B_SEGS = 168  # [12] x (first u32, count u32)
B_INPUTS = 264  # [16] x (buffer+1 u32, gen u32)
B_WIDTH, B_OF, B_ARRIVED, B_OKAYS = 392, 393, 394, 395
B_CTYPE, B_TIMES = 400, 528

PHASE_QUEUED, PHASE_RUNNING, PHASE_DONE = 0, 1, 2
KIND_DATA, KIND_JOIN = 0, 1

FLAG_STOP = 1  # buffer flag: the chain ends here
SECTION_PARAMS, SECTION_RESP_HEADER, SECTION_ATTRIBUTES = 1, 2, 3  # metadata section tags
FLAG_CONTENT_TYPE = 2  # buffer flag: a step chose the content type (else the client gets application/octet-stream)

OWNER_FREE = 0
OWNER_JOINED = 0xFFFD  # a join's input, owned through the join's buffer
OWNER_SHARED = 0xFFFE  # a shared buffer, owned through its tokens
OWNER_DAEMON = 0xFFFF


def own(gen: int, holder: int, transit: int = 0) -> int:
    """An ownership word."""
    return (gen & A.M32) | holder << 32 | transit << 48

_layout = struct.Struct("<8I")
_regions = struct.Struct("<9Q")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_i64 = struct.Struct("<q")
_u64 = struct.Struct("<Q")
_2i64 = struct.Struct("<qq")
_2u32 = struct.Struct("<II")


class PoolError(Exception):
    """The pool is not one this SDK can use."""


def now() -> int:
    """CLOCK_MONOTONIC in nanoseconds: the clock every process stamps hops with."""
    return time.monotonic_ns()


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def regions(buffers, buffer_size, functions, chains, slots, endpoints, ring_bytes, chunks):
    """The offsets of a pool's regions, as the daemon computes them."""
    route = PAGE
    stats = route + _page_up(ROUTE_HEADER + functions * FN_ENTRY + chains * CHAIN_ENTRY + slots * SLOT_INFO)
    ring = stats + _page_up(slots * STATS_SIZE)
    hdr = ring + _page_up(endpoints * ring_bytes if ring_bytes else 0)
    arena = hdr + _page_up(buffers * HEADER_SIZE)
    stride = (buffer_size + 63) & ~63
    extmap = arena + _page_up(buffers * stride)
    if chunks == 0:
        return route, stats, ring, hdr, arena, extmap, extmap, extmap, stride
    ext = (extmap + _page_up((chunks + 63) // 64 * 8) + EXT_ALIGN - 1) & ~(EXT_ALIGN - 1)
    return route, stats, ring, hdr, arena, extmap, ext, ext + chunks * CHUNK, stride


class Pool:
    """One mapping of an app's pool."""

    def __init__(self, mm: mmap.mmap, owned_fd: int = -1):
        self.mm = mm
        self.mv = memoryview(mm)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        self.fd = owned_fd
        if len(mm) < PAGE:
            raise PoolError(f"spry: not a spry pool ({len(mm)} bytes)")
        magic, version = struct.unpack_from("<QI", mm, 0)
        if magic != MAGIC:
            raise PoolError(f"spry: not a spry pool (magic {magic:#x})")
        if version != VERSION:
            raise PoolError(
                f"spry: the pool has layout version {version}, this Python SDK speaks {VERSION}: "
                "use the SDK that comes with your spry binary (python: functions get it automatically)")
        (self.buffers, self.buffer_size, self.functions, self.chains, self.slots,
         self.endpoints, self.ring_bytes, self.chunks) = _layout.unpack_from(mm, H_LAYOUT)
        got = _regions.unpack_from(mm, H_REGIONS)
        want = regions(self.buffers, self.buffer_size, self.functions, self.chains, self.slots,
                       self.endpoints, self.ring_bytes, self.chunks)
        if got != want:
            raise PoolError("spry: pool region offsets disagree with its layout")
        self.route, self.stats, self.ring, self.hdr, self.arena, self.extmap, self.ext, total, self.stride = got
        if total != len(mm):
            raise PoolError(f"spry: {len(mm)} bytes mapped, the layout needs {total}")
        self.fns = self.route + ROUTE_HEADER
        self.chain_tab = self.fns + self.functions * FN_ENTRY
        self.slot_tab = self.chain_tab + self.chains * CHAIN_ENTRY

    # ---- opening ----

    @classmethod
    def attach(cls, fd: int) -> "Pool":
        """Maps the pool behind the inherited fd; the routing table read-only."""
        size = os.fstat(fd).st_size
        if size < PAGE:
            raise PoolError(f"spry: fd {fd} is not a spry pool ({size} bytes)")
        mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        p = cls(mm, fd)
        libc = A._libc
        if libc.mprotect(p.base + p.route, p.stats - p.route, mmap.PROT_READ) != 0:
            raise PoolError("spry: cannot protect the routing table: errno " + str(ctypes.get_errno()))
        return p

    @classmethod
    def create(cls, buffers: int, buffer_size: int, functions: int = 1, chains: int = 1,
               slots: int = 1) -> "Pool":
        """Makes a private pool, laid out and initialised as the daemon does
        (for invoke: running a handler without a node)."""
        r = regions(buffers, buffer_size, functions, chains, slots, 0, 0, 0)
        fd = os.memfd_create("spry-pool-python", os.MFD_CLOEXEC)
        os.ftruncate(fd, r[7])
        mm = mmap.mmap(fd, r[7], flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        struct.pack_into("<QI", mm, 0, MAGIC, VERSION)
        _layout.pack_into(mm, H_LAYOUT, buffers, buffer_size, functions, chains, slots, 0, 0, 0)
        _regions.pack_into(mm, H_REGIONS, *r)
        p = cls(mm, fd)
        for k in range(chains):  # each chain: a graph of one step, function 0
            _u32.pack_into(mm, p.chain_tab + k * CHAIN_ENTRY, 1)
            mm[p.chain_tab + k * CHAIN_ENTRY + 8 + 4] = NO_NODE
            mm[p.chain_tab + k * CHAIN_ENTRY + 8 + 5] = NO_NODE
        for i in range(buffers):
            h = p.hdr + i * HEADER_SIZE
            _u64.pack_into(mm, h + B_OWN, own(1, OWNER_FREE))
            _u32.pack_into(mm, h + B_NEXT, i + 2 if i + 1 < buffers else 0)
        _u64.pack_into(mm, H_HEAD, 1)
        _u64.pack_into(mm, H_FREE, buffers)
        return p

    def close(self):
        self.mv.release()
        try:
            self.mm.close()
        except BufferError:
            pass  # the ctypes view keeps it mapped until the process ends
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # ---- header ----

    def free_buffers(self) -> int:
        return A.signed64(A.load64(self.base + H_FREE))

    def gateway(self) -> int:
        return A.load32(self.base + self.route)

    # ---- buffers ----

    def h(self, idx: int) -> int:
        """The offset of buffer idx's header."""
        return self.hdr + idx * HEADER_SIZE

    def buffer(self, idx: int) -> memoryview:
        """Buffer idx's whole payload area."""
        off = self.arena + idx * self.stride
        return self.mv[off:off + self.buffer_size]

    def _holder(self, idx: int) -> int:
        """The buffer that holds idx's payload: idx, or the shared buffer it
        reads (a fan-out's branch)."""
        for _ in range(MAX_DEPTH + 1):
            r = self.u32(self.h(idx) + B_REF)
            if r == 0 or r > self.buffers:
                break
            idx = r - 1
        return idx

    def _seg(self, first, count) -> memoryview:
        """Chunks [first, first+count) of the extent region, clamped."""
        a = min(first * CHUNK, self.chunks * CHUNK)
        e = min((first + count) * CHUNK, self.chunks * CHUNK)
        return self.mv[self.ext + a:self.ext + e]

    def pieces(self, idx: int):
        """Buffer idx's payload as a list of contiguous memoryviews: one,
        or one per extent of a large payload the pool holds in several."""
        i = self._holder(idx)
        h = self.h(i)
        n, off = self.u32(h + B_LEN), self.u32(h + B_OFF)
        nseg = min(self.mm[h + B_NSEG], MAX_SEGS)
        if nseg == 0:
            off = min(off, self.buffer_size)
            n = min(n, self.buffer_size - off)
            start = self.arena + i * self.stride + off
            return [self.mv[start:start + n]]
        out = []
        for k in range(nseg):
            first, count = _2u32.unpack_from(self.mm, h + B_SEGS + 8 * k)
            seg = self._seg(first, count)
            if k == 0:
                seg = seg[min(off, len(seg)):]
            take = min(n, len(seg))
            out.append(seg[:take])
            n -= take
        return out

    def data(self, idx: int) -> memoryview:
        """Buffer idx's payload when it is contiguous (its first piece otherwise)."""
        return self.pieces(idx)[0]

    def size(self, idx: int) -> int:
        return self.u32(self.h(self._holder(idx)) + B_LEN)

    def reads_shared(self, idx: int) -> bool:
        """Does buffer idx read a shared buffer's payload (a fan-out's branch)?"""
        return self.u32(self.h(idx) + B_REF) != 0

    def gen(self, idx: int) -> int:
        return A.load64(self.base + self.h(idx) + B_OWN) & A.M32

    def holds(self, idx: int, gen: int, holder: int) -> bool:
        """Does holder hold buffer idx at generation gen, with no transfer under way?"""
        return idx < self.buffers and A.load64(self.base + self.h(idx) + B_OWN) == own(gen, holder)

    def transfer(self, idx: int, frm: int, to: int):
        """Marks buffer idx, held by frm, in transit to to; returns the
        generation the descriptor carries, or None when frm does not hold it."""
        if idx >= self.buffers or to == 0:
            return None
        a = self.base + self.h(idx) + B_OWN
        w = A.load64(a)
        gen, holder, transit = w & A.M32, (w >> 32) & 0xFFFF, w >> 48
        if holder != frm or transit != 0:
            return None
        return gen if A.cas64(a, w, own(gen, frm, to)) else None

    def cancel(self, idx: int, gen: int, frm: int, to: int) -> bool:
        """Undoes a transfer whose descriptor was not sent; False when the
        daemon took the buffer meanwhile (leave it alone then)."""
        return idx < self.buffers and bool(A.cas64(self.base + self.h(idx) + B_OWN, own(gen, frm, to), own(gen, frm)))

    def accept(self, idx: int, gen: int, frm: int, to: int) -> bool:
        """Completes the transfer a received descriptor announces; False for a
        stale, forged or duplicate one (drop it unread)."""
        return idx < self.buffers and to != 0 and bool(
            A.cas64(self.base + self.h(idx) + B_OWN, own(gen, frm, to), own(gen, to)))

    def alloc(self, owner: int):
        """A buffer off the free list for owner, or None when the pool is empty."""
        head = self.base + H_HEAD
        while True:
            old = A.load64(head)
            top = old & A.M32
            if top == 0 or top > self.buffers:
                A.add64(self.base + H_ALLOC_FAILS, 1)
                return None
            nxt = A.load32(self.base + self.h(top - 1) + B_NEXT)
            if A.cas64(head, old, ((((old >> 32) + 1) & A.M32) << 32) | nxt):
                A.add64(self.base + H_FREE, A.M64)  # -1
                i = top - 1
                a = self.base + self.h(i) + B_OWN
                A.store64(a, own(A.load64(a) & A.M32, owner))
                self._reset(i)
                return i

    def _reset(self, idx: int):
        h = self.h(idx)
        mm = self.mm
        # length, reqID, off, status, flags, hops, chain, ctypeLen, metaLen,
        # ingress, deadline, sent (bytes 12..64), the graph fields up to the
        # held word (64..80), the call frame (88..100), a join's counts
        # (392..396): the new holder's.
        mm[h + B_LEN:h + 80] = bytes(80 - B_LEN)
        mm[h + B_CALL:h + B_CALL + 12] = bytes(12)
        mm[h + B_WIDTH:h + B_WIDTH + 4] = bytes(4)

    def free(self, idx: int, holder: int) -> bool:
        """Returns buffer idx, held by holder, to the free list (its generation
        moves on), with its payload: its extents, its reference to a shared
        buffer, a join's inputs. False, and nothing done, when holder does
        not hold it."""
        return self._free(idx, None, holder, holder)

    def _free(self, idx, gen, holder, me) -> bool:
        if idx >= self.buffers or holder == OWNER_FREE:
            return False
        b = self.base + self.h(idx)
        w = A.load64(b + B_OWN)
        if (w >> 32) & 0xFFFF != holder or w >> 48 != 0 or (gen is not None and w & A.M32 != gen):
            return False
        if holder in (OWNER_SHARED, OWNER_JOINED):
            # Nobody holds these: take it first, so that one freer drops
            # its payload.
            taken = own(w & A.M32, me)
            if me in (OWNER_FREE, OWNER_SHARED, OWNER_JOINED) or not A.cas64(b + B_OWN, w, taken):
                return False
            w = taken
        self._drop_payload(idx, me)
        if not A.cas64(b + B_OWN, w, own((w & A.M32) + 1, OWNER_FREE)):
            return False
        head = self.base + H_HEAD
        while True:
            old = A.load64(head)
            A.store32(b + B_NEXT, old & A.M32)
            if A.cas64(head, old, ((((old >> 32) + 1) & A.M32) << 32) | (idx + 1)):
                A.add64(self.base + H_FREE, 1)
                return True

    def _drop_payload(self, idx, me):
        """Forgets, then gives back, what buffer idx's header owns (as the Go
        SDK: a process that dies in between leaks, never frees twice)."""
        h = self.h(idx)
        mm = self.mm
        nseg = min(mm[h + B_NSEG], MAX_SEGS)
        if nseg:
            segs = [_2u32.unpack_from(mm, h + B_SEGS + 8 * k) for k in range(nseg)]
            mm[h + B_NSEG] = 0
            for first, count in segs:
                self._release(first, count)
        r = self.u32(h + B_REF)
        if r:
            if r <= self.buffers:
                self._unref(r - 1, self.u32(h + B_REF_GEN), mm[h + B_REF_BIT], me)
            _u32.pack_into(mm, h + B_REF, 0)
        width = min(mm[h + B_WIDTH], MAX_NEXT)
        if mm[h + B_KIND] == KIND_JOIN and width:
            ins = [_2u32.unpack_from(mm, h + B_INPUTS + 8 * k) for k in range(width)]
            mm[h + B_WIDTH] = 0
            for i1, gen in ins:
                if 0 < i1 <= self.buffers:
                    self._free(i1 - 1, gen, OWNER_JOINED, me)

    def _unref(self, idx, gen, bit, me):
        """Drops reference bit of shared buffer idx; the last one frees it."""
        if bit >= 32:
            return
        a = self.base + self.h(idx) + B_HELD
        m = 1 << bit
        while True:
            w = A.load64(a)
            if w >> 32 != gen or w & m == 0:
                return
            if A.cas64(a, w, w & ~m):
                if w & A.M32 == m:
                    self._free(idx, gen, OWNER_SHARED, me)
                return

    def _release(self, first, count):
        """Gives back chunks [first, first+count) of the extent region."""
        if count == 0 or first + count > self.chunks:
            return
        for i in range(first // 64, (first + count - 1) // 64 + 1):
            lo = max(first, i * 64) - i * 64
            hi = min(first + count, i * 64 + 64) - i * 64
            m = ((1 << (hi - lo)) - 1) << lo
            a = self.base + self.extmap + 8 * i
            while True:
                w = A.load64(a)
                if A.cas64(a, w, w & ~m & A.M64):
                    break
        A.add64(self.base + H_EXT_USED, (-count) & A.M64)

    def clear(self, idx, holder):
        """Makes buffer idx's payload empty and its own (an error message goes there)."""
        b = self.base + self.h(idx)
        if (A.load64(b + B_OWN) >> 32) & 0xFFFF != holder:
            return
        self._drop_payload(idx, holder)
        self.set_data(idx, 0, 0)

    def drop_inputs(self, idx):
        """Frees a join's inputs now (the join ran)."""
        h = self.h(idx)
        width = min(self.mm[h + B_WIDTH], MAX_NEXT)
        if self.mm[h + B_KIND] != KIND_JOIN or not width:
            return
        me = (A.load64(self.base + h + B_OWN) >> 32) & 0xFFFF
        ins = [_2u32.unpack_from(self.mm, h + B_INPUTS + 8 * k) for k in range(width)]
        self.mm[h + B_WIDTH] = 0
        for i1, gen in ins:
            if 0 < i1 <= self.buffers:
                self._free(i1 - 1, gen, OWNER_JOINED, me)

    # A join's inputs (the buffer a join step runs on lists them).

    def inputs(self, idx):
        """A join's inputs: a list, None where one did not arrive."""
        h = self.h(idx)
        if self.mm[h + B_KIND] != KIND_JOIN:
            return []
        out = []
        for k in range(min(self.mm[h + B_WIDTH], MAX_NEXT)):
            i1, gen = _2u32.unpack_from(self.mm, h + B_INPUTS + 8 * k)
            ok = 0 < i1 <= self.buffers and A.load64(self.base + self.h(i1 - 1) + B_OWN) == own(gen, OWNER_JOINED)
            out.append(i1 - 1 if ok else None)
        return out

    # Plain fields of a buffer header: written only by the buffer's owner.

    def u16(self, off):
        return _u16.unpack_from(self.mm, off)[0]

    def u32(self, off):
        return _u32.unpack_from(self.mm, off)[0]

    def i64(self, off):
        return _i64.unpack_from(self.mm, off)[0]

    def set_data(self, idx, off, n):
        h = self.h(idx)
        _u32.pack_into(self.mm, h + B_LEN, n)
        _u32.pack_into(self.mm, h + B_OFF, off)

    def content_type(self, idx) -> bytes:
        h = self.h(idx)
        n = min(self.mm[h + B_CTYPE_LEN], MAX_CTYPE)
        return self.mm[h + B_CTYPE:h + B_CTYPE + n]

    def set_content_type(self, idx, ct: bytes, chosen: bool = False):
        """Set the content type; chosen marks it a step's choice for the reply."""
        h = self.h(idx)
        ct = ct[:MAX_CTYPE]
        self.mm[h + B_CTYPE:h + B_CTYPE + len(ct)] = ct
        self.mm[h + B_CTYPE_LEN] = len(ct)
        if chosen:
            self.mm[h + B_FLAGS] |= FLAG_CONTENT_TYPE

    def place(self, idx, node, phase):
        """Records where buffer idx is in its graph."""
        h = self.h(idx)
        self.mm[h + B_NODE] = node
        self.mm[h + B_PHASE] = phase

    def hop_start(self, idx, hop, t):
        if 0 <= hop < MAX_HOPS:
            h = self.h(idx)
            _2i64.pack_into(self.mm, h + B_TIMES + hop * 16, t, 0)
            if self.mm[h + B_HOPS] < hop + 1:
                self.mm[h + B_HOPS] = hop + 1

    def hop_end(self, idx, hop, t):
        if 0 <= hop < MAX_HOPS:
            _i64.pack_into(self.mm, self.h(idx) + B_TIMES + hop * 16 + 8, t)

    def hop_times(self, idx, hop):
        if 0 <= hop < MAX_HOPS:
            return _2i64.unpack_from(self.mm, self.h(idx) + B_TIMES + hop * 16)
        return 0, 0

    def copy_meta(self, dst, src):
        """Carries the request's identity, and its place in the graph, to a
        fresh output buffer (not the payload)."""
        d, s, mm = self.h(dst), self.h(src), self.mm
        mm[d + B_REQID:d + B_REQID + 8] = mm[s + B_REQID:s + B_REQID + 8]
        mm[d + B_STATUS:d + 36] = mm[s + B_STATUS:s + 36]  # status, flags, hops, chain, ctypeLen
        mm[d + B_INGRESS:d + 64] = mm[s + B_INGRESS:s + 64]
        mm[d + B_NODE:d + B_NODE + 2] = mm[s + B_NODE:s + B_NODE + 2]  # node, phase
        mm[d + B_DEPTH] = min(mm[s + B_DEPTH], MAX_DEPTH)
        mm[d + B_CHOSEN:d + B_CHOSEN + 2] = mm[s + B_CHOSEN:s + B_CHOSEN + 2]
        mm[d + B_CALL:d + B_SEGS] = mm[s + B_CALL:s + B_SEGS]  # the call and join frames
        mm[d + B_CTYPE:d + B_TIMES + MAX_HOPS * 16] = mm[s + B_CTYPE:s + B_TIMES + MAX_HOPS * 16]
        n = min(self.u16(s + B_META_LEN), MAX_META)
        mm[d + OFF_META:d + OFF_META + n] = mm[s + OFF_META:s + OFF_META + n]
        _u16.pack_into(mm, d + B_META_LEN, n)

    def meta(self, idx):
        """The request's method, path, query and forwarded headers."""
        h = self.h(idx)
        n = min(self.u16(h + B_META_LEN), MAX_META)
        m = bytes(self.mm[h + OFF_META:h + OFF_META + n])
        off = 0

        def get(width):
            nonlocal off
            if off + width > len(m):
                off = len(m)
                return b""
            k = m[off] if width == 1 else _u16.unpack_from(m, off)[0]
            if off + width + k > len(m):
                off = len(m)
                return b""
            s = m[off + width:off + width + k]
            off += width + k
            return s

        method, path, query = get(1), get(2), get(2)
        headers = []
        if off < len(m):
            count = m[off]
            off += 1
            for _ in range(count):
                if off >= len(m):
                    break
                k = get(1)
                v = get(2)
                headers.append((k, v))
        return method, path, query, headers

    # ---- metadata sections (layout 4): u8 tag | u16 len | body, after the headers ----

    def _sections_start(self, idx) -> int:
        h = self.h(idx)
        n = min(self.u16(h + B_META_LEN), MAX_META)
        m = self.mm[h + OFF_META:h + OFF_META + n]
        off = 0
        for width in (1, 2, 2):
            if off + width > n:
                return n
            k = m[off] if width == 1 else _u16.unpack_from(m, off)[0]
            off += width + k
        if off >= n:
            return n
        count = m[off]
        off += 1
        for _ in range(count):
            if off >= n:
                return n
            off += 1 + m[off]
            if off + 2 > n:
                return n
            off += 2 + _u16.unpack_from(m, off)[0]
        return min(off, n)

    def sections(self, idx):
        """The metadata sections: (tag, body, start, end) each, offsets
        relative to the metadata."""
        h = self.h(idx)
        n = min(self.u16(h + B_META_LEN), MAX_META)
        m = bytes(self.mm[h + OFF_META:h + OFF_META + n])
        off = self._sections_start(idx)
        out = []
        while off + 3 <= n:
            ln = _u16.unpack_from(m, off + 1)[0]
            if off + 3 + ln > n:
                break
            out.append((m[off], m[off + 3:off + 3 + ln], off, off + 3 + ln))
            off += 3 + ln
        return out

    @staticmethod
    def _pairs(body, start=0):
        out, off = [], start
        while off < len(body):
            k = body[off + 1:off + 1 + body[off]]
            off += 1 + body[off]
            if off + 2 > len(body):
                break
            ln = _u16.unpack_from(body, off)[0]
            out.append((k, body[off + 2:off + 2 + ln]))
            off += 2 + ln
        return out

    def params(self, idx):
        """The route's parameters, as (name, value) pairs."""
        out = []
        for tag, body, _, _ in self.sections(idx):
            if tag == SECTION_PARAMS and body:
                out += self._pairs(body, 1)[:body[0]]
        return out

    def resp_headers(self, idx):
        """The response headers steps set, as (name, value) pairs, in order."""
        return [self._pairs(body)[0] for tag, body, _, _ in self.sections(idx)
                if tag == SECTION_RESP_HEADER and body]

    def attrs(self, idx):
        """The invocation's attributes (section tag 3: CloudEvent attributes,
        spry.activation, spry.cause, spry.trigger, spry.topic), as (name,
        value) pairs in order; several sections read as one list."""
        out = []
        for tag, body, _, _ in self.sections(idx):
            if tag == SECTION_ATTRIBUTES and body:
                out += self._pairs(body, 1)[:body[0]]
        return out

    def append_attr(self, idx, name: bytes, value: bytes):
        """Adds an attribute, as a section of its own after the metadata
        written so far (what the gateway does; spry.invoke uses it)."""
        h = self.h(idx)
        n = min(self.u16(h + B_META_LEN), MAX_META)
        body = bytes([1, len(name)]) + name + _u16.pack(len(value)) + value
        sec = bytes([SECTION_ATTRIBUTES]) + _u16.pack(len(body)) + body
        if not name or len(name) > 0xff or len(value) > 0xffff or n + len(sec) > MAX_META:
            raise ValueError("attribute does not fit in the buffer's metadata")
        self.mm[h + OFF_META + n:h + OFF_META + n + len(sec)] = sec
        _u16.pack_into(self.mm, h + B_META_LEN, n + len(sec))

    def add_resp_header(self, idx, name: bytes, value: bytes):
        h = self.h(idx)
        n = min(self.u16(h + B_META_LEN), MAX_META)
        body = bytes([len(name)]) + name + _u16.pack(len(value)) + value
        sec = bytes([SECTION_RESP_HEADER]) + _u16.pack(len(body)) + body
        if len(name) > 0xff or n + len(sec) > MAX_META:
            raise ValueError("full")
        self.mm[h + OFF_META + n:h + OFF_META + n + len(sec)] = sec
        _u16.pack_into(self.mm, h + B_META_LEN, n + len(sec))

    def del_resp_header(self, idx, name: bytes):
        h = self.h(idx)
        for tag, body, start, end in reversed(self.sections(idx)):
            if tag == SECTION_RESP_HEADER and body and body[1:1 + body[0]].lower() == name.lower():
                n = min(self.u16(h + B_META_LEN), MAX_META)
                base = h + OFF_META
                self.mm[base + start:base + n - (end - start)] = self.mm[base + end:base + n]
                _u16.pack_into(self.mm, h + B_META_LEN, n - (end - start))

    def write_meta(self, idx, method: bytes, path: bytes, query: bytes, headers=()):
        """Writes request metadata (for invoke)."""
        out = bytearray()
        out += bytes([len(method)]) + method
        out += _u16.pack(len(path)) + path + _u16.pack(len(query)) + query
        out.append(len(headers))
        for k, v in headers:
            out += bytes([len(k)]) + k + _u16.pack(len(v)) + v
        if len(out) > MAX_META:
            raise ValueError("spry: request metadata too large")
        h = self.h(idx)
        self.mm[h + OFF_META:h + OFF_META + len(out)] = out
        _u16.pack_into(self.mm, h + B_META_LEN, len(out))

    # ---- routing table (read-only) ----

    def _node(self, chain: int, node: int):
        """The offset of node of chain's graph, or None."""
        if chain >= self.chains or node < 0:
            return None
        e = self.chain_tab + chain * CHAIN_ENTRY
        if node >= min(self.u32(e), MAX_NODES):
            return None
        return e + 8 + node * NODE_ENTRY

    def step(self, chain: int, node: int):
        """The function running node of chain, or None."""
        n = self._node(chain, node)
        return None if n is None else self.u16(n)

    def steps(self, chain: int) -> int:
        if chain >= self.chains:
            return 0
        return min(self.u32(self.chain_tab + chain * CHAIN_ENTRY), MAX_NODES)

    def node_next(self, chain: int, node: int):
        """node's successors (node indexes) and whether they are
        alternatives (choose:), or ([], False) for none."""
        n = self._node(chain, node)
        if n is None:
            return [], False
        nn = self.steps(chain)
        succ = [x for x in self.mm[n + 16:n + 16 + min(self.mm[n + 3], MAX_NEXT)] if x < nn]
        return succ, bool(self.mm[n + 2] & NODE_CHOOSE)

    def node_name(self, chain: int, node: int) -> str:
        n = self._node(chain, node)
        if n is None:
            return ""
        return bytes(self.mm[n + 32:n + 32 + min(self.mm[n + 12], MAX_NAME)]).decode("utf-8", "replace")

    def top_join(self, idx):
        """The join node of the innermost fan-out buffer idx is a branch of, or None."""
        h = self.h(idx)
        d = min(self.mm[h + B_DEPTH], MAX_DEPTH)
        if d == 0:
            return None
        return self.mm[h + B_FRAMES + 16 * (d - 1) + 8]

    def pick(self, fn: int, start: int):
        """The ready slot of fn with the least (queued + running + 1) / capacity,
        as (slot, instance id, endpoint), or None. The endpoint is where the
        descriptor goes: the instance's own, or the sandbox host's that runs it."""
        if fn >= self.functions:
            return None
        f = self.base + self.fns + fn * FN_ENTRY
        base, mx = self.u32(self.fns + fn * FN_ENTRY), self.u32(self.fns + fn * FN_ENTRY + 4)
        n = min(A.load32(f + 8), mx)
        best = None
        best_load = best_cap = 0
        for k in range(n):
            s = base + (start + k) % n
            si = self.base + self.slot_tab + s * SLOT_INFO
            if A.load32(si + 4) != SLOT_READY:
                continue
            st = self.base + self.stats + s * STATS_SIZE
            load = max(A.signed32(A.load32(st + S_QUEUE)), 0) + max(A.signed32(A.load32(st + S_INFLIGHT)), 0) + 1
            cap = max(A.load32(si + 12), 1)
            if best is None or load * best_cap < best_load * cap:
                w = A.load32(si)
                i = w & 0xFFFF
                if i == 0:
                    continue
                best, best_load, best_cap = (s, i, (w >> 16) or i), load, cap
        return best

    def stats_addr(self, slot: int) -> int:
        return self.base + self.stats + slot * STATS_SIZE

    def ring_entry(self, e: int) -> int:
        """The address of endpoint table entry e."""
        return self.base + self.ring + e * self.ring_bytes


def observe(st: int, d: int):
    """Records a latency of d ns in the histogram of the slot counters at st."""
    d = max(d, 0)
    i = 0
    while i < len(BOUNDS) and d > BOUNDS[i]:
        i += 1
    A.add64(st + S_LATENCY + 8 * i, 1)
    A.add64(st + S_LATENCY + 8 * (len(BOUNDS) + 1), d)
