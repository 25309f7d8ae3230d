"""The instance loop: receive descriptors, run the handler, pass the output on."""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Callable, Optional, Tuple

from . import _atomic as A
from . import _pool as P
from . import _transport as T

ENV_POOL_FD = "SPRY_POOL_FD"
ENV_SLOT = "SPRY_SLOT"
ENV_CONCURRENCY = "SPRY_CONCURRENCY"
ENV_FUNCTION = "SPRY_FUNCTION"

_RETRY = 2.0  # seconds a send waits for a full or missing destination


class Error(Exception):
    """An error with the HTTP status the client gets (400..599); any other
    exception a handler raises is a 502 with its message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self):
        return self.message


class Request:
    """The input of one step. payload is a memoryview into the app's pool:
    nothing was copied to give it to you, and it is valid only until the
    handler returns (copy what you keep, e.g. bytes(req.payload))."""

    __slots__ = ("_p", "_buf", "_hop", "_steps", "_meta", "_attrs", "_gathered")

    def __init__(self, pool, buf, hop, steps):
        self._p, self._buf, self._hop, self._steps, self._meta = pool, buf, hop, steps, None
        self._attrs = None
        self._gathered = None

    @property
    def payload(self) -> memoryview:
        """The body as this step received it (writable: change it in place,
        except in a fan-out's branch, whose input the other branches share).
        A large body the pool holds in several extents (see segments) is
        gathered into one copy the first time you ask."""
        pieces = self._p.pieces(self._buf)
        if len(pieces) == 1:
            return pieces[0]
        if self._gathered is None:
            self._gathered = memoryview(bytearray(b"".join(pieces)))
        return self._gathered

    @property
    def segments(self):
        """The payload's contiguous pieces, without copying: one, or one per
        extent of a large payload the pool holds in several."""
        return self._p.pieces(self._buf)

    def __len__(self):
        return self._p.size(self._buf)

    @property
    def step(self) -> str:
        """This step's name in its chain ("" in a call)."""
        return self._p.node_name(self._p.u16(self._p.h(self._buf) + P.B_CHAIN), self._hop)

    @property
    def is_join(self) -> bool:
        """Whether this step joins the branches of a fan-out (see inputs)."""
        return self._p.mm[self._p.h(self._buf) + P.B_KIND] == P.KIND_JOIN

    @property
    def inputs(self):
        """A join's inputs, one per branch of the fan-out in spry.yaml's
        order: an Input, or None for a branch whose output did not arrive."""
        return [None if i is None else Input(self._p, i) for i in self._p.inputs(self._buf)]

    def _m(self):
        if self._meta is None:
            self._meta = self._p.meta(self._buf)
        return self._meta

    @property
    def method(self) -> str:
        return self._m()[0].decode("latin-1")

    @property
    def path(self) -> str:
        """The request path; on a route ending in /* the rest that the *
        matched, from its slash ("/" when nothing is left), as in the Go SDK."""
        rest = self.param("*", None)
        if rest is not None:
            return rest or "/"
        return self._m()[1].decode("latin-1")

    @property
    def full_path(self) -> str:
        """The whole request path."""
        return self._m()[1].decode("latin-1")

    def param(self, name: str, default: str = ""):
        """A parameter of the chain's route ({name} in route:), as in the path."""
        n = name.encode("latin-1")
        for k, v in self._p.params(self._buf):
            if k == n:
                return v.decode("latin-1")
        return default

    @property
    def query(self) -> str:
        """The raw query string, without the '?'."""
        return self._m()[2].decode("latin-1")

    def header(self, name: str) -> str:
        """A request header the chain forwards (headers: in spry.yaml), or ""."""
        n = name.lower().encode("latin-1")
        for k, v in self._m()[3]:
            if k.lower() == n:
                return v.decode("latin-1")
        return ""

    @property
    def headers(self):
        """Every forwarded header, as (name, value) pairs."""
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._m()[3]]

    @property
    def content_type(self) -> str:
        return self._p.content_type(self._buf).decode("latin-1")

    def _attr_map(self):
        if self._attrs is None:
            a = {}
            for k, v in self._p.attrs(self._buf):  # the first of a name counts, as in Go
                a.setdefault(k.decode("latin-1"), v.decode("utf-8", "replace"))
            self._attrs = a
        return self._attrs

    @property
    def activation_id(self) -> str:
        """The id of the activation this request belongs to (an asynchronous
        invocation, a trigger's firing, a recorded request), or "" for a
        synchronous request that has none (GET /v1/activations/{id} on the
        node's admin API shows its record)."""
        return self._attr_map().get(_ATTR_ACTIVATION, "")

    @property
    def cause(self) -> str:
        """What made the request: "http" (a synchronous request), "async",
        "mqtt", "cloudevent" or "cron"."""
        return self._attr_map().get(_ATTR_CAUSE) or "http"

    @property
    def trigger(self) -> str:
        """The name of the trigger (spry.yaml triggers:) that caused the
        request, or ""."""
        return self._attr_map().get(_ATTR_TRIGGER, "")

    @property
    def topic(self) -> str:
        """The MQTT topic the payload was published on, or ""."""
        return self._attr_map().get(_ATTR_TOPIC, "")

    @property
    def event(self) -> Optional["Event"]:
        """The CloudEvent the request carries, or None. Its data is the
        payload; its attributes were parsed once by the gateway (binary,
        structured or batched mode) and are read from the buffer's metadata."""
        a = self._attr_map()
        if "specversion" not in a:
            return None
        return Event(a)

    @property
    def id(self) -> int:
        """The request's id, unique on this node while it runs."""
        return self._p.u32(self._p.h(self._buf) + P.B_REQID) | self._p.u32(self._p.h(self._buf) + P.B_REQID + 4) << 32

    @property
    def hop(self) -> int:
        """Which step of the chain this is, from 0."""
        return self._hop

    @property
    def steps(self) -> int:
        """The number of steps in the chain."""
        return self._steps

    def remaining(self) -> float:
        """Seconds left before the chain's deadline (negative once past)."""
        d = self._p.i64(self._p.h(self._buf) + P.B_DEADLINE)
        if d == 0:
            return float("inf")
        return (d - P.now()) / 1e9

    def hop_timing(self, hop: int) -> Tuple[float, float]:
        """When step hop started and ended, in seconds from the gateway's
        receipt of the request (0 when not recorded)."""
        s, e = self._p.hop_times(self._buf, hop)
        ingress = self._p.i64(self._p.h(self._buf) + P.B_INGRESS)
        return ((s - ingress) / 1e9 if s else 0.0, (e - ingress) / 1e9 if e else 0.0)


_ATTR_ACTIVATION, _ATTR_CAUSE, _ATTR_TRIGGER, _ATTR_TOPIC = (
    "spry.activation", "spry.cause", "spry.trigger", "spry.topic")
_CORE = ("id", "source", "type", "specversion", "subject", "time", "datacontenttype", "dataschema")


class Event:
    """A CloudEvent's context attributes (CloudEvents 1.0), as the Go SDK's
    sdk.Event. event["type"] and event.get(name) read any attribute."""

    __slots__ = ("_a",)

    def __init__(self, attrs):
        self._a = attrs

    id = property(lambda self: self._a.get("id", ""), doc="The event's id.")
    source = property(lambda self: self._a.get("source", ""), doc="The event's source (a URI reference).")
    type = property(lambda self: self._a.get("type", ""), doc="The event's type.")
    specversion = property(lambda self: self._a.get("specversion", ""), doc='The CloudEvents version ("1.0").')
    subject = property(lambda self: self._a.get("subject", ""), doc='The event\'s subject, or "".')
    time = property(lambda self: self._a.get("time", ""), doc='The event\'s time as sent (RFC 3339), or "".')
    datacontenttype = property(lambda self: self._a.get("datacontenttype", ""),
                               doc='The media type of the data (the payload), or "".')
    dataschema = property(lambda self: self._a.get("dataschema", ""), doc='The event\'s dataschema, or "".')

    def get(self, name: str, default: str = "") -> str:
        """The context attribute name (an extension, or a core one), or default."""
        return self._a.get(name, default)

    def __getitem__(self, name: str) -> str:
        return self._a[name]

    def __contains__(self, name: str) -> bool:
        return name in self._a

    @property
    def extensions(self):
        """The extension attributes (all but the CloudEvents core ones), as a dict."""
        return {k: v for k, v in self._a.items() if k not in _CORE and not k.startswith("spry.")}

    def __repr__(self):
        return f"Event(id={self.id!r}, source={self.source!r}, type={self.type!r})"


class Input:
    """One input of a join: what one branch of the fan-out produced (a view
    of the pool, valid until the handler returns)."""

    __slots__ = ("_p", "_buf")

    def __init__(self, pool, buf):
        self._p, self._buf = pool, buf

    @property
    def payload(self) -> memoryview:
        pieces = self._p.pieces(self._buf)
        return pieces[0] if len(pieces) == 1 else memoryview(b"".join(pieces))

    @property
    def status(self) -> int:
        """The branch's status: 200 unless it set one or failed."""
        s = self._p.u16(self._p.h(self._buf) + P.B_STATUS)
        return s if 100 <= s <= 999 else 200

    @property
    def content_type(self) -> str:
        return self._p.content_type(self._buf).decode("latin-1")


class Response:
    """The output of one step. By default a step passes its input on
    unchanged; a handler changes it in place (req.payload, or buffer() and
    set_len()) or writes a new output with write(), into a fresh buffer."""

    __slots__ = ("_p", "_self", "_in", "_out", "_n", "_status", "_stop", "_err", "_outcome",
                 "_chain", "_node", "_next")

    def __init__(self, pool, me, buf, chain=0, node=0):
        self._p, self._self, self._in = pool, me, buf
        self._out, self._n, self._status, self._stop, self._err = None, 0, 0, False, None
        self._outcome = 0  # the status this step answered with (0: none of its own)
        self._chain, self._node, self._next = chain, node, 0

    def _fresh(self):
        p = self._p
        if self._out is None:
            i = p.alloc(self._self)
            if i is None:
                self._err = Error(503, "spry: pool exhausted")
                raise self._err
            self._out = i
            p.copy_meta(i, self._in)
        return self._out

    def buffer(self) -> memoryview:
        """The whole room for in-place output: the input buffer from the start
        of the payload to its end. Write there and call set_len. In a
        fan-out's branch (its input is shared) and in a join, a fresh
        buffer's room."""
        p = self._p
        if self._out is not None or p.reads_shared(self._in) or p.mm[p.h(self._in) + P.B_NSEG]:
            return p.buffer(self._fresh())
        off = p.u32(p.h(self._in) + P.B_OFF)
        return p.buffer(self._in)[off:]

    def set_len(self, n: int):
        """The in-place output is the first n bytes of buffer()."""
        room = len(self.buffer())
        if n < 0 or n > room:
            self._err = Error(502, f"spry: output larger than a pool buffer ({room} bytes)")
            return
        if self._out is not None:
            self._n = n
            return
        off = self._p.u32(self._p.h(self._in) + P.B_OFF)
        self._p.set_data(self._in, off, n)

    def next(self, step: str):
        """Chooses the step the output goes to, among those spry.yaml lets
        this step go to (next: or choose:); any other ends the request with
        a 502 naming the step."""
        p = self._p
        succ, choose = p.node_next(self._chain, self._node)
        for k, s in enumerate(succ):
            if p.node_name(self._chain, s) == step:
                if choose and self._next and self._next != 1 << k:
                    self._err = Error(502, f"spry: step {p.node_name(self._chain, self._node)} chose two next steps, and its chain lets it choose one")
                    return
                self._next |= 1 << k
                return
        allowed = ", ".join(p.node_name(self._chain, s) for s in succ)
        why = f"it goes on to {allowed}" if allowed else "it ends the chain"
        self._err = Error(502, f"spry: step {p.node_name(self._chain, self._node)} chose next step {step!r}, which its chain does not allow ({why})")

    def write(self, data) -> int:
        """Appends data (bytes-like or str) to the output, in a fresh buffer
        allocated at the first call."""
        if isinstance(data, str):
            data = data.encode()
        if self._err is not None:
            raise self._err
        p = self._p
        buf = p.buffer(self._fresh())
        if len(data) > len(buf) - self._n:
            self._err = Error(502, f"spry: output larger than a pool buffer ({len(buf)} bytes; "
                                   "the Python SDK writes outputs of one buffer, the Go SDK larger ones)")
            raise self._err
        buf[self._n:self._n + len(data)] = data
        self._n += len(data)
        return len(data)

    def set_status(self, code: int):
        """The HTTP status the client gets; 400 or more ends the chain here."""
        if 100 <= code <= 999:
            self._status = code

    def set_content_type(self, ct: str):
        ct = ct.encode("latin-1")
        self._p.set_content_type(self._in, ct, chosen=True)
        if self._out is not None:
            self._p.set_content_type(self._out, ct, chosen=True)

    def stop(self):
        """End the chain after this step: the output goes back to the client."""
        self._stop = True

    _GATEWAY_HEADERS = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                        b"upgrade", b"trailer", b"te", b"date", b"proxy-connection"}
    _TOKEN = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

    def set_header(self, name: str, value: str):
        """Sets a response header the client gets (Location, Cache-Control,
        Set-Cookie, CORS), replacing its values; add_header adds one. As in
        the Go SDK: Content-Type goes to set_content_type, the framing
        headers are the gateway's, and a bad header fails the step (502)."""
        self._header(name, value, True)

    def add_header(self, name: str, value: str):
        self._header(name, value, False)

    def _header(self, name: str, value: str, replace: bool):
        if self._err is not None:
            return
        k, v = name.encode("latin-1"), value.encode("latin-1")
        why = ""
        if not k or any(c not in self._TOKEN for c in k):
            why = "not a valid header name"
        elif any(c < 0x20 and c != 0x09 or c == 0x7f for c in v):
            why = "the value has a control character (CR, LF, …)"
        elif k.lower() in self._GATEWAY_HEADERS:
            why = "the gateway sets it"
        if why:
            self._err = Error(502, f'sdk: response header "{name}": {why}')
            return
        if k.lower() == b"content-type":
            self.set_content_type(value)
            return
        buf = self._out if self._out is not None else self._in
        if replace:
            self._p.del_resp_header(buf, k)
        try:
            self._p.add_resp_header(buf, k, v)
        except ValueError:
            self._err = Error(502, f'sdk: response header "{name}": the response headers do not fit the buffer\'s metadata ({P.MAX_META} bytes with the request\'s)')

    def _finish(self, err: Optional[BaseException]):
        """Settles the output into one buffer: (buffer, stop)."""
        p = self._p
        if err is None:
            err = self._err
        out = self._in
        if self._out is not None:
            p.set_data(self._out, 0, self._n)
            # The input goes: a join's with its inputs, a branch's with
            # its reference to the shared payload.
            p.free(self._in, self._self)
            out = self._out
        elif p.mm[p.h(self._in) + P.B_KIND] == P.KIND_JOIN:
            p.drop_inputs(self._in)  # the join ran: its output is its own buffer
        h = p.h(out)
        P._u16.pack_into(p.mm, h + P.B_CHOSEN, self._next)
        if err is not None:
            status = 502
            if isinstance(err, Error) and 400 <= err.status <= 599:
                status = err.status
            msg = str(err) if isinstance(err, Error) else f"{type(err).__name__}: {err}"
            b = msg.encode("utf-8", "replace")[:p.buffer_size]
            p.clear(out, self._self)  # its payload may be shared: the message goes in its own
            P._u16.pack_into(p.mm, h + P.B_CHOSEN, 0)
            p.buffer(out)[:len(b)] = b
            p.set_data(out, 0, len(b))
            p.set_content_type(out, b"text/plain; charset=utf-8", chosen=True)
            P._u16.pack_into(p.mm, h + P.B_STATUS, status)
            p.mm[h + P.B_FLAGS] |= P.FLAG_STOP
            self._outcome = status
            return out, True
        self._outcome = self._status
        if self._status:
            P._u16.pack_into(p.mm, h + P.B_STATUS, self._status)
        if self._stop or self._status >= 400:
            p.mm[h + P.B_FLAGS] |= P.FLAG_STOP
            return out, True
        return out, bool(p.mm[h + P.B_FLAGS] & P.FLAG_STOP)


Handler = Callable[[Request, Response], None]


def _call(h: Handler, req: Request, res: Response) -> Optional[BaseException]:
    try:
        h(req, res)
        return None
    except Exception as e:  # a handler's error is the request's, not the instance's
        if not isinstance(e, Error):
            traceback.print_exc()
        return e


class _Stop(BaseException):
    pass


class Instance:
    """One running instance."""

    def __init__(self, env=os.environ):
        if not env.get("SPRY_TRANSPORT"):
            raise RuntimeError("spry: not started by spry: run this file as a python: function in spry.yaml")
        try:
            fd = int(env.get(ENV_POOL_FD, ""))
        except ValueError:
            raise RuntimeError(f"spry: {ENV_POOL_FD}={env.get(ENV_POOL_FD)!r} is not an fd") from None
        self.p = P.Pool.attach(fd)
        os.set_inheritable(fd, False)
        try:
            self.slot = int(env.get(ENV_SLOT, ""))
        except ValueError:
            self.slot = -1
        if not 0 <= self.slot < self.p.slots:
            raise RuntimeError(f"spry: {ENV_SLOT}={env.get(ENV_SLOT)!r} is not a slot of this pool")
        try:
            self.conc = max(int(env.get(ENV_CONCURRENCY, "1")), 1)
        except ValueError:
            self.conc = 1
        self.name = env.get(ENV_FUNCTION, "")
        self.c = T.attach(env, self.p)
        self.id = self.c.id
        self.st = self.p.stats_addr(self.slot)
        self.rot = 0
        self.stopping = False
        self.in_recv = False
        self.lock = threading.Lock()  # the rotation counter, with concurrency > 1

    # ---- sending ----

    def _send_patiently(self, d: bytes):
        deadline = time.monotonic() + _RETRY
        wait = 20e-6
        while True:
            try:
                return self.c.send(d)
            except T.Full:
                if time.monotonic() > deadline:
                    raise
                time.sleep(wait)
                wait = min(2 * wait, 5e-3)

    def _pass(self, dst, buf, chain, hop, flags, ep=0):
        """Hands buffer buf to endpoint dst: transfer, send, cancel if the
        send failed. Returns True when sent, False when the daemon has the
        buffer (lost); raises Full or Gone with the buffer held again. An
        instance in a sandbox host takes its descriptors at the host's
        endpoint ep: the transfer names the instance, the send the host."""
        p = self.p
        gen = p.transfer(buf, self.id, dst)
        if gen is None:
            return False
        try:
            self.c.send(T.encode(ep or dst, self.id, buf, gen, chain, hop, flags))
            return True
        except (T.Full, T.Gone, T.Closed):
            if not p.cancel(buf, gen, self.id, dst):
                return False
            raise

    def _to(self, dst, buf, chain, hop, flags):
        """Hands buf to dst (the gateway, or a caller), retrying while it is
        full; True when it got it (or the daemon has it)."""
        deadline = time.monotonic() + _RETRY
        wait = 20e-6
        while True:
            try:
                self._pass(dst, buf, chain, hop, flags)
                return True
            except T.Full:
                if time.monotonic() > deadline:
                    return False
                time.sleep(wait)
                wait = min(2 * wait, 5e-3)
            except (T.Gone, T.Closed):
                return False

    def _gateway(self, buf, chain, hop, flags):
        if not self._to(self.p.gateway(), buf, chain, hop, flags):
            # The gateway is gone or wedged: this process still holds the
            # buffer; the daemon takes it back when the instance stops.
            print(f"spry: function {self.name}: send to the gateway failed", file=sys.stderr)

    def _fail(self, chain, hop, buf, status, msg):
        p = self.p
        w = A.load64(p.base + p.h(buf) + P.B_OWN)
        if (w >> 32) & 0xFFFF != self.id or w >> 48:
            return  # not ours any more (its request is over: the node took it)
        b = msg.encode()
        p.clear(buf, self.id)
        p.buffer(buf)[:len(b)] = b
        p.set_data(buf, 0, len(b))
        p.set_content_type(buf, b"text/plain; charset=utf-8", chosen=True)
        h = p.h(buf)
        P._u16.pack_into(p.mm, h + P.B_STATUS, status)
        P._u16.pack_into(p.mm, h + P.B_CHOSEN, 0)
        p.mm[h + P.B_FLAGS] |= P.FLAG_STOP
        self._route(chain, hop, buf)

    def _route(self, chain, node, buf):
        """Sends buf, the output of node (done), where its chain's graph
        sends it: a call's caller, the gateway (the answer, a join's input,
        or a fan-out, which the gateway splits), or the next step's
        least-loaded instance."""
        p = self.p
        h = p.h(buf)
        p.place(buf, node, P.PHASE_DONE)
        if node == P.CALL_NODE:
            caller = p.u16(h + P.B_CALL)
            if not self._to(caller, buf, chain, node, T.FLAG_RETURN):
                p.free(buf, self.id)  # the caller is gone: nobody wants the answer
            return
        join = p.top_join(buf)
        if p.mm[h + P.B_FLAGS] & P.FLAG_STOP:
            if join is None:
                return self._gateway(buf, chain, node, T.FLAG_REPLY)
            p.place(buf, join, P.PHASE_QUEUED)
            return self._gateway(buf, chain, join, T.FLAG_JOIN)
        succ, choose = p.node_next(chain, node)
        chosen = p.u16(h + P.B_CHOSEN)
        if not succ:
            if join is None:
                return self._gateway(buf, chain, node, T.FLAG_REPLY)
            p.place(buf, join, P.PHASE_QUEUED)
            return self._gateway(buf, chain, join, T.FLAG_JOIN)
        if len(succ) > 1 and not choose:
            # A fan-out: the gateway makes the branches.
            return self._gateway(buf, chain, node, T.FLAG_ROUTE)
        k = (chosen & -chosen).bit_length() - 1 if chosen else 0
        nxt = succ[k] if k < len(succ) else succ[0]
        if join is not None and nxt == join:
            p.place(buf, join, P.PHASE_QUEUED)
            return self._gateway(buf, chain, join, T.FLAG_JOIN)
        self._forward(chain, nxt, buf)

    def _forward(self, chain, node, buf):
        """Direct function routing: node's least-loaded instance."""
        p = self.p
        fn = p.step(chain, node)
        if fn is None:
            return self._fail(chain, node, buf, 502, "spry: the buffer's place in its graph is not valid")
        p.place(buf, node, P.PHASE_QUEUED)
        P._i64.pack_into(p.mm, p.h(buf) + P.B_SENT, P.now())
        deadline = time.monotonic() + _RETRY
        wait = 20e-6
        asked = False
        while True:
            with self.lock:
                self.rot = (self.rot + 1) & A.M32
                rot = self.rot
            pick = p.pick(fn, rot)
            if pick is not None:
                slot, dst, ep = pick
                st = p.stats_addr(slot)
                A.add32(st + P.S_QUEUE, 1)  # before the send: the receiver decrements it
                try:
                    if not self._pass(dst, buf, chain, node, 0, ep):
                        A.add32(st + P.S_QUEUE, A.M32)
                    return  # sent, or the daemon took the buffer and answers it
                except (T.Full, T.Gone, T.Closed):
                    A.add32(st + P.S_QUEUE, A.M32)  # -1
                if self.stopping:
                    # Keep the finished output: the daemon's reclaim sends it
                    # on when this process exits.
                    return
            elif not asked:
                # The next function may be scaled to zero: ask the daemon, once.
                asked = True
                try:
                    self.c.send(T.encode(p.gateway(), self.id, T.CTL_NO_INSTANCE, 0, fn, 0, T.FLAG_CONTROL))
                except Exception:
                    pass
            if time.monotonic() > deadline:
                return self._fail(chain, node, buf, 503, "no instance of the next step could take the request")
            time.sleep(wait)
            wait = min(2 * wait, 5e-3)

    # ---- one step ----

    def _step(self, h: Handler, buf, gen, chain, hop, flags=0):
        p, st = self.p, self.st
        hdr = p.h(buf)
        node = P.CALL_NODE if flags & T.FLAG_CALL else hop
        p.place(buf, node, P.PHASE_RUNNING)
        start = P.now()
        dl = p.i64(hdr + P.B_DEADLINE)
        if dl != 0 and start > dl:
            # Past the deadline: the handler does not run, and the buffer
            # goes back as the 504 it is.
            return self._fail(chain, node, buf, 504, "spry: the request's deadline passed before this step ran")
        if A.add32(st + P.S_INFLIGHT, 1) == 0:
            A.store64(st + P.S_BUSY_SINCE, start)
        arrived = p.i64(hdr + P.B_SENT) or p.i64(hdr + P.B_INGRESS)
        p.hop_start(buf, node, start)
        req = Request(p, buf, -1 if node == P.CALL_NODE else node, p.steps(chain))
        res = Response(p, self.id, buf, chain, node)
        err = _call(h, req, res)
        out, stop = res._finish(err)
        end = P.now()
        p.hop_end(out, node, end)
        A.add64(st + P.S_BUSY_NANOS, end - start)
        if arrived:
            P.observe(st, end - arrived)
        if res._outcome >= 500:
            A.add64(st + P.S_ERRORS, 1)
        elif res._outcome >= 400:
            A.add64(st + P.S_CLIENT_ERRORS, 1)
        A.add64(st + P.S_SERVED, 1)
        A.store64(st + P.S_BUSY_SINCE, end)
        A.add32(st + P.S_INFLIGHT, A.M32)  # -1
        self._route(chain, node, out)

    # ---- the loop ----

    def _on_signal(self, signum, frame):
        self.stopping = True
        if self.in_recv:
            raise _Stop()

    def serve(self, h: Handler):
        if not callable(h):
            raise TypeError("spry.serve: want a handler(req, res)")
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        work = None
        threads = []
        if self.conc > 1:
            work = queue.Queue(self.conc)

            def worker():
                while True:
                    d = work.get()
                    if d is None:
                        return
                    self._step(h, *d)

            for _ in range(self.conc):
                t = threading.Thread(target=worker, daemon=True)
                t.start()
                threads.append(t)
        p = self.p
        self._send_patiently(T.encode(p.gateway(), self.id, T.CTL_READY, 0, 0, 0, T.FLAG_CONTROL))
        st = self.st
        try:
            while not self.stopping:
                self.in_recv = True
                try:
                    if self.stopping:
                        break
                    batch = self.c.recv()
                except (_Stop, T.Closed):
                    break
                finally:
                    self.in_recv = False
                for d in batch:
                    dst, src, buf, gen, chain, hop, flags = T.DESC.unpack(d)
                    if flags & T.FLAG_CONTROL:
                        continue
                    if flags & T.FLAG_RETURN:
                        # An answer to a call: this SDK makes none (a late
                        # one of a Go handler's? no: answers go to callers).
                        if p.accept(buf, gen, src, self.id):
                            p.free(buf, self.id)
                        continue
                    A.add32(st + P.S_QUEUE, A.M32)  # -1
                    # Taking the buffer is the one compare-and-swap that only
                    # the transfer this descriptor announces lets succeed.
                    if not p.accept(buf, gen, src, self.id):
                        A.add64(st + P.S_STALE, 1)
                        continue
                    A.add64(st + P.S_ARRIVALS, 1)
                    if work is None:
                        self._step(h, buf, gen, chain, hop, flags)
                    else:
                        work.put((buf, gen, chain, hop, flags))
        finally:
            if work is not None:
                for _ in threads:
                    work.put(None)
                for t in threads:
                    t.join()


def serve(handler: Handler):
    """Runs handler as a Spry function instance until the node stops it
    (SIGTERM: what runs finishes, then the process exits 0). It does not
    return: on a setup error (e.g. not started by spry) it prints the reason
    and exits with status 2."""
    try:
        inst = Instance()
    except (RuntimeError, P.PoolError, OSError) as e:
        print(f"spry function: {e}", file=sys.stderr)
        sys.exit(2)
    inst.serve(handler)
    sys.exit(0)
