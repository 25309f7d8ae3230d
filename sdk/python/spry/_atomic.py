"""Atomic operations on shared memory, for the pool's counters and lists.

Python's standard library has no atomics, and the pool is shared with Go
processes that update the same words with lock-prefixed instructions, so a
lock of Python's own would not exclude them. The SDK therefore runs the very
instructions Go's sync/atomic uses: a few bytes of machine code (lock xadd,
lock cmpxchg, xchg, plain aligned loads), placed in an executable page with
mmap and called through ctypes. Every word the contract says is atomic is
read and written only through these functions; nothing does a read, then a
write, of a shared word (never a racy read-modify-write).

Only x86-64 is supported; elsewhere importing spry raises an error that says
so.
"""

from __future__ import annotations

import ctypes
import mmap
import platform

__all__ = [
    "load32", "load64", "store32", "store64", "add32", "add64",
    "cas32", "cas64", "swap32",
]

_machine = platform.machine().lower()
if _machine not in ("x86_64", "amd64"):
    raise ImportError(
        f"spry: the Python SDK's atomics support x86-64 only (this machine is {_machine}); "
        "use the Go SDK or an http: function here")

# x86-64 System V: arguments in rdi, rsi, rdx; result in rax.
_CODE = {
    "load32": (bytes.fromhex("8b07c3"), ctypes.c_uint32, [ctypes.c_void_p]),
    "load64": (bytes.fromhex("488b07c3"), ctypes.c_uint64, [ctypes.c_void_p]),
    # xchg with memory is locked: a sequentially consistent store (as Go's).
    "store32": (bytes.fromhex("8737c3"), None, [ctypes.c_void_p, ctypes.c_uint32]),
    "store64": (bytes.fromhex("488737c3"), None, [ctypes.c_void_p, ctypes.c_uint64]),
    # mov eax, esi; lock xadd [rdi], eax: returns the old value.
    "add32": (bytes.fromhex("89f0f00fc107c3"), ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_uint32]),
    "add64": (bytes.fromhex("4889f0f0480fc107c3"), ctypes.c_uint64, [ctypes.c_void_p, ctypes.c_uint64]),
    # mov eax, esi; lock cmpxchg [rdi], edx; sete al; movzx eax, al.
    "cas32": (bytes.fromhex("89f0f00fb1170f94c00fb6c0c3"), ctypes.c_uint32,
              [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32]),
    "cas64": (bytes.fromhex("4889f0f0480fb1170f94c00fb6c0c3"), ctypes.c_uint32,
              [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]),
    # mov eax, esi; xchg [rdi], eax: returns the old value.
    "swap32": (bytes.fromhex("89f08707c3"), ctypes.c_uint32, [ctypes.c_void_p, ctypes.c_uint32]),
}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mprotect.restype = ctypes.c_int

# Written while writable, then made read+execute only (never both at once
# once in use).
_page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
_base = ctypes.addressof(ctypes.c_char.from_buffer(_page))
_fns = {}
_off = 0
for _name, (_code, _res, _args) in _CODE.items():
    _page[_off:_off + len(_code)] = _code
    _fns[_name] = ctypes.CFUNCTYPE(_res, *_args)(_base + _off)
    _off += (len(_code) + 15) & ~15
if _libc.mprotect(_base, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
    raise ImportError("spry: cannot make the atomics page executable: " + str(ctypes.get_errno()))

load32 = _fns["load32"]
load64 = _fns["load64"]
store32 = _fns["store32"]
store64 = _fns["store64"]
add32 = _fns["add32"]
add64 = _fns["add64"]
cas32 = _fns["cas32"]
cas64 = _fns["cas64"]
swap32 = _fns["swap32"]

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF


def signed32(v: int) -> int:
    """The int32 that the 32 bits of v spell."""
    return v - (1 << 32) if v & 0x80000000 else v


def signed64(v: int) -> int:
    """The int64 that the 64 bits of v spell."""
    return v - (1 << 64) if v & (1 << 63) else v
