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
VERSION = 5  # the pool layout version this SDK speaks

PAGE = 4096
HEADER_SIZE = 2048  # one buffer header
MAX_HOPS = 16
MAX_STEPS = 16
STATS_SIZE = 512
MAX_CTYPE = 127
OFF_META = 448
MAX_META = HEADER_SIZE - OFF_META

# Pool header (page 0).
H_MAGIC, H_VERSION, H_LAYOUT = 0, 8, 16
H_REGIONS = 48  # route, stats, ring, hdr, arena, total, stride: 7 x u64
H_HEAD, H_FREE, H_ALLOC_FAILS, H_RECLAIMED, H_STALE = 112, 120, 176, 184, 192

# Routing region.
ROUTE_HEADER = 64  # gateway u32 @0, epoch u32 @4
FN_ENTRY = 16  # base u32 @0, max u32 @4, hwm u32 @8
CHAIN_ENTRY = 40  # nsteps u32 @0, steps [16]u16 @8
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
B_INGRESS, B_DEADLINE, B_CTYPE, B_TIMES = 40, 48, 64, 192

FLAG_STOP = 1  # buffer flag: the chain ends here
SECTION_PARAMS, SECTION_RESP_HEADER, SECTION_ATTRIBUTES = 1, 2, 3  # metadata section tags
FLAG_CONTENT_TYPE = 2  # buffer flag: a step chose the content type (else the client gets application/octet-stream)

OWNER_FREE = 0
OWNER_DAEMON = 0xFFFF


def own(gen: int, holder: int, transit: int = 0) -> int:
    """An ownership word."""
    return (gen & A.M32) | holder << 32 | transit << 48

_layout = struct.Struct("<7I")
_regions = struct.Struct("<7Q")
_u16 = struct.Struct("<H")
_u32 = struct.Struct("<I")
_i64 = struct.Struct("<q")
_u64 = struct.Struct("<Q")
_2i64 = struct.Struct("<qq")


class PoolError(Exception):
    """The pool is not one this SDK can use."""


def now() -> int:
    """CLOCK_MONOTONIC in nanoseconds: the clock every process stamps hops with."""
    return time.monotonic_ns()


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def regions(buffers, buffer_size, functions, chains, slots, endpoints, ring_bytes):
    """The offsets of a pool's regions, as the daemon computes them."""
    route = PAGE
    stats = route + _page_up(ROUTE_HEADER + functions * FN_ENTRY + chains * CHAIN_ENTRY + slots * SLOT_INFO)
    ring = stats + _page_up(slots * STATS_SIZE)
    hdr = ring + _page_up(endpoints * ring_bytes if ring_bytes else 0)
    arena = hdr + _page_up(buffers * HEADER_SIZE)
    stride = (buffer_size + 63) & ~63
    total = arena + _page_up(buffers * stride)
    return route, stats, ring, hdr, arena, total, stride


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
         self.endpoints, self.ring_bytes) = _layout.unpack_from(mm, H_LAYOUT)
        got = _regions.unpack_from(mm, H_REGIONS)
        want = regions(self.buffers, self.buffer_size, self.functions, self.chains, self.slots,
                       self.endpoints, self.ring_bytes)
        if got != want:
            raise PoolError("spry: pool region offsets disagree with its layout")
        self.route, self.stats, self.ring, self.hdr, self.arena, total, self.stride = got
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
        r = regions(buffers, buffer_size, functions, chains, slots, 0, 0)
        fd = os.memfd_create("spry-pool-python", os.MFD_CLOEXEC)
        os.ftruncate(fd, r[5])
        mm = mmap.mmap(fd, r[5], flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        struct.pack_into("<QI", mm, 0, MAGIC, VERSION)
        _layout.pack_into(mm, H_LAYOUT, buffers, buffer_size, functions, chains, slots, 0, 0)
        _regions.pack_into(mm, H_REGIONS, *r)
        p = cls(mm, fd)
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

    def data(self, idx: int) -> memoryview:
        """Buffer idx's payload, clamped to the buffer."""
        h = self.h(idx)
        n, = _u32.unpack_from(self.mm, h + B_LEN)
        off, = _u32.unpack_from(self.mm, h + B_OFF)
        off = min(off, self.buffer_size)
        n = min(n, self.buffer_size - off)
        start = self.arena + idx * self.stride + off
        return self.mv[start:start + n]

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
        # ingress, deadline: bytes 12..56, owned by the new holder.
        mm[h + B_LEN:h + 56] = bytes(56 - B_LEN)

    def free(self, idx: int, holder: int) -> bool:
        """Returns buffer idx, held by holder, to the free list (its generation
        moves on). False, and nothing done, when holder does not hold it."""
        if idx >= self.buffers or holder == OWNER_FREE:
            return False
        b = self.base + self.h(idx)
        w = A.load64(b + B_OWN)
        if (w >> 32) & 0xFFFF != holder or w >> 48 != 0:
            return False
        if not A.cas64(b + B_OWN, w, own((w & A.M32) + 1, OWNER_FREE)):
            return False
        head = self.base + H_HEAD
        while True:
            old = A.load64(head)
            A.store32(b + B_NEXT, old & A.M32)
            if A.cas64(head, old, ((((old >> 32) + 1) & A.M32) << 32) | (idx + 1)):
                A.add64(self.base + H_FREE, 1)
                return True

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
        """Carries the request's identity to a fresh output buffer."""
        d, s, mm = self.h(dst), self.h(src), self.mm
        mm[d + B_REQID:d + B_REQID + 8] = mm[s + B_REQID:s + B_REQID + 8]
        mm[d + B_STATUS:d + 36] = mm[s + B_STATUS:s + 36]  # status, flags, hops, chain, ctypeLen
        mm[d + B_INGRESS:d + 56] = mm[s + B_INGRESS:s + 56]
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

    def step(self, chain: int, hop: int):
        """The function running step hop of chain, or None past its end."""
        if chain >= self.chains or hop < 0:
            return None
        e = self.chain_tab + chain * CHAIN_ENTRY
        if hop >= min(self.u32(e), MAX_STEPS):
            return None
        return self.u16(e + 8 + 2 * hop)

    def steps(self, chain: int) -> int:
        if chain >= self.chains:
            return 0
        return min(self.u32(self.chain_tab + chain * CHAIN_ENTRY), MAX_STEPS)

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
