"""Spry's Python SDK: write a step of a Spry chain in Python.

A function is a handler, ``def handler(req, res)``, with the names of the Go
SDK::

    def handler(req, res):
        p = req.payload               # the body: a memoryview into the app's pool
        p[:] = bytes(p).upper()       # in place: the next step gets the same buffer
        # or: res.write(b"new output") (a fresh buffer), res.set_status(201),
        #     res.set_content_type("application/json"), res.stop(),
        #     res.set_header("Location", "/orders/7"), res.add_header("Set-Cookie", "a=1"),
        #     raise spry.Error(409, "taken")  (any other exception is a 502)
        # req.method, req.path, req.query, req.header(name), req.param("id") (route
        # "/orders/{id}"), req.full_path (on a /* route, req.path is the rest)
        # events: req.event (a CloudEvent's attributes, or None), req.activation_id,
        #     req.cause ("http", "async", "mqtt", "cloudevent", "cron"), req.trigger,
        #     req.topic (the MQTT topic)

In spry.yaml, ``python: ./fn/handler.py`` runs it (the node starts
``python3 -m spry ./fn/handler.py`` with the SDK that matches it); a program
may also call ``spry.serve(handler)`` itself. ``spry.invoke`` runs a handler
once without a node, for unit tests.

How the SDK speaks the function contract (the pool, the descriptors, the
atomic counters) is in docs/contract.md of the Spry repository.
"""

from ._pool import VERSION as LAYOUT_VERSION, PoolError
from ._serve import Error, Event, Handler, Request, Response, serve
from ._invoke import Result, invoke

__all__ = ["serve", "invoke", "Request", "Response", "Error", "Event", "Result", "Handler",
           "PoolError", "LAYOUT_VERSION"]
__version__ = "0.1.0"
