"""Running a handler once, outside any node, with the same semantics."""

from __future__ import annotations

from dataclasses import dataclass

from . import _pool as P
from ._serve import Request, Response, _call

_SELF = 1  # the owner id of the invoke pool's buffers


@dataclass
class Result:
    """What one step produced."""
    status: int  # the HTTP status the client would get (200 unless set)
    content_type: str
    body: bytes  # a copy of the output
    stop: bool  # the step ended the chain (an error, status >= 400, or stop())


def invoke(handler, method: str = "POST", target: str = "/", body=b"", headers=(),
           content_type: str = "", attrs=()) -> Result:
    """Runs handler once on a payload in a real shared-memory pool (made for
    the call), as a chain's step runs it. target is a path with an optional
    query ("/hello?x=1"); headers are (name, value) pairs the handler may
    read with req.header; attrs are (name, value) pairs of the invocation's
    attributes, as the node writes them for an event (CloudEvent attributes
    such as ("specversion", "1.0"), ("type", ...), and spry.activation,
    spry.cause, spry.trigger, spry.topic), read with req.event,
    req.activation_id, req.cause, req.trigger and req.topic."""
    if isinstance(body, str):
        body = body.encode()
    size = 64 << 10
    while size < len(body):
        size *= 2
    p = P.Pool.create(4, size)
    try:
        buf = p.alloc(_SELF)
        path, _, query = target.partition("?")
        p.write_meta(buf, method.encode(), path.encode(), query.encode(),
                     [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
        for k, v in attrs:
            p.append_attr(buf, k.encode("latin-1"), v.encode())
        p.buffer(buf)[:len(body)] = body
        p.set_data(buf, 0, len(body))
        if content_type:
            p.set_content_type(buf, content_type.encode("latin-1"))
        P._2i64.pack_into(p.mm, p.h(buf) + P.B_INGRESS, P.now(), 0)
        p.hop_start(buf, 0, P.now())
        res = Response(p, _SELF, buf, 0, 0)
        out, stop = res._finish(_call(handler, Request(p, buf, 0, 1), res))
        status = p.u16(p.h(out) + P.B_STATUS) or 200
        r = Result(status, p.content_type(out).decode("latin-1"), bytes(p.data(out)), stop)
        p.free(out, _SELF)
        return r
    finally:
        p.close()
