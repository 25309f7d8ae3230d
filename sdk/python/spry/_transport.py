"""Descriptor transports a Python instance speaks: skmsg and uds.

A descriptor is 16 bytes, little-endian: dst u16, src u16, buf u32, gen u32,
chain u16, hop u8, flags u8. Sending never blocks: a full destination is
Full (try another instance, or later), a missing one Gone.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from . import _atomic as A

DESC = struct.Struct("<HHIIHBB")
SIZE = 16
MAX_BATCH = 64
DEPTH = 1024  # descriptors that may wait for one endpoint

FLAG_REPLY, FLAG_ERROR, FLAG_CONTROL = 1, 2, 4
FLAG_JOIN, FLAG_CALL, FLAG_RETURN, FLAG_ROUTE = 8, 16, 32, 64
CTL_READY, CTL_STOP, CTL_NO_INSTANCE = 1, 2, 3

OWNER_SHIFT = 48
LOW_MASK = (1 << OWNER_SHIFT) - 1


class Full(Exception):
    """The destination has DEPTH descriptors waiting."""


class Gone(Exception):
    """The destination has no endpoint."""


class Closed(Exception):
    """This endpoint was closed (the node stops it, or is gone)."""


def encode(dst, src, buf, gen, chain, hop, flags) -> bytes:
    return DESC.pack(dst, src, buf, gen, chain, hop, flags)


def attach(env, pool):
    """The instance's endpoint, from its environment and inherited fds."""
    try:
        ident = int(env.get("SPRY_ID", ""))
    except ValueError:
        ident = 0
    if not 0 < ident < 65536:
        raise RuntimeError(f"spry: SPRY_ID={env.get('SPRY_ID')!r} is not an instance id")
    fds = [int(f) for f in env.get("SPRY_TRANSPORT_FDS", "").split(",") if f]
    name = env.get("SPRY_TRANSPORT", "")
    if name == "skmsg":
        if len(fds) != 1:
            raise RuntimeError("spry: skmsg wants 1 inherited fd")
        return Skmsg(ident, fds[0], int(env.get("SPRY_ENDPOINT", "-1")), pool)
    if name == "uds":
        if len(fds) != 1:
            raise RuntimeError("spry: uds wants 1 inherited fd")
        return UDS(ident, fds[0], env.get("SPRY_UDS_DIR", ""))
    if name == "":
        raise RuntimeError("spry: not started by spry (SPRY_TRANSPORT is not set): run this file as a python: function in spry.yaml")
    raise RuntimeError(
        f"spry: transport {name!r} is not available to Python functions: they run on skmsg or uds "
        "(set transport: uds or skmsg, or leave it auto)")


class Skmsg:
    """A loopback TCP socket in the node's sockmap: the kernel redirects each
    16-byte write to the destination's socket. The endpoint table in the
    pool counts descriptors in flight to each endpoint (owner id in the top
    16 bits of the entry's first word, the count below), reserved with one
    compare-and-swap before the write."""

    def __init__(self, ident, fd, ep, pool):
        self.id = ident
        self.pool = pool
        if pool.ring_bytes < 64 or pool.endpoints == 0:
            raise RuntimeError("spry: skmsg: the pool has no endpoint table")
        if not 0 <= ep < pool.endpoints:
            raise RuntimeError(f"spry: skmsg endpoint entry {ep} out of range")
        self.self_word = pool.ring_entry(ep)
        if A.load64(self.self_word) >> OWNER_SHIFT != ident:
            raise RuntimeError(f"spry: skmsg endpoint entry {ep} does not belong to instance {ident}")
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        os.set_inheritable(fd, False)
        self.fd = fd
        self.cache = {}  # id -> entry address
        self.carry = b""
        self.closed = False

    def _find(self, dst, fresh):
        if not fresh:
            w = self.cache.get(dst)
            if w is not None and A.load64(w) >> OWNER_SHIFT == dst:
                return w
        p = self.pool
        for i in range(p.endpoints):
            w = p.ring_entry(i)
            if A.load64(w) >> OWNER_SHIFT == dst:
                self.cache[dst] = w
                return w
        return None

    def _reserve(self, dst):
        for fresh in (False, True):
            w = self._find(dst, fresh)
            if w is None:
                raise Gone()
            while True:
                v = A.load64(w)
                if v >> OWNER_SHIFT != dst:
                    break
                if v & LOW_MASK >= DEPTH:
                    raise Full()
                if A.cas64(w, v, v + 1):
                    return w
        raise Gone()

    @staticmethod
    def _unreserve(w, owner, n):
        while True:
            v = A.load64(w)
            if v >> OWNER_SHIFT != owner or v & LOW_MASK == 0:
                return
            if A.cas64(w, v, v - min(n, v & LOW_MASK)):
                return

    def send(self, d: bytes):
        if self.closed:
            raise Closed()
        dst = d[0] | d[1] << 8
        w = self._reserve(dst)
        try:
            self.sock.send(d, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            self._unreserve(w, dst, 1)
            raise Full()
        except OSError as e:
            self._unreserve(w, dst, 1)
            if e.errno in (errno.ENOMEM, errno.ENOBUFS):
                raise Full()
            raise Closed() from e

    def recv(self):
        """Blocks until descriptors arrive; returns them as a list of bytes."""
        while True:
            try:
                b = os.read(self.fd, MAX_BATCH * SIZE - len(self.carry))
            except BlockingIOError:
                continue  # a wake-up without data
            except OSError as e:
                raise Closed() from e
            if not b:
                raise Closed()
            b = self.carry + b
            n = len(b) // SIZE
            self.carry = b[n * SIZE:]
            if n:
                # A read that did not fill its batch emptied the kernel
                # queue: every reservation left is a sender's between its
                # reservation and its write, or one a dead sender leaked;
                # dropping them all bounds such a leak (as the Go SDK does).
                self._unreserve(self.self_word, self.id, DEPTH if n < MAX_BATCH else n)
                return [b[i * SIZE:(i + 1) * SIZE] for i in range(n)]

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class UDS:
    """A Unix datagram socket bound at DIR/<id>; one datagram per descriptor."""

    def __init__(self, ident, fd, directory):
        if not directory:
            raise RuntimeError("spry: SPRY_UDS_DIR is not set")
        self.id = ident
        self.dir = directory
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(True)
        os.set_inheritable(fd, False)
        self.closed = False

    def send(self, d: bytes):
        if self.closed:
            raise Closed()
        dst = d[0] | d[1] << 8
        try:
            self.sock.sendto(d, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL, os.path.join(self.dir, str(dst)))
        except BlockingIOError:
            raise Full()
        except (ConnectionRefusedError, FileNotFoundError, NotADirectoryError):
            raise Gone()

    def recv(self):
        try:
            first = self.sock.recv(64)
        except OSError as e:
            raise Closed() from e
        if self.closed:
            raise Closed()
        out = [first] if len(first) == SIZE else []
        for _ in range(MAX_BATCH - 1):
            try:
                b = self.sock.recv(64, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if len(b) == SIZE:
                out.append(b)
        return out

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
