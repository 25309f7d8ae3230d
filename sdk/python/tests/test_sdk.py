"""Unit tests of the Python SDK without a node (python3 -m unittest)."""

import ctypes
import threading
import unittest

import spry
from spry import _atomic as A
from spry import _pool as P


class InvokeTest(unittest.TestCase):
    def test_in_place(self):
        def upper(req, res):
            p = req.payload
            p[:] = bytes(p).upper()

        r = spry.invoke(upper, body=b"hello")
        self.assertEqual((r.status, r.body, r.stop), (200, b"HELLO", False))

    def test_fresh_buffer_and_metadata(self):
        def meta(req, res):
            res.write(f"{req.method} {req.path} {req.query} {req.header('x-test')} ".encode())
            res.write(req.payload)
            res.set_content_type("text/plain")
            res.set_status(201)

        r = spry.invoke(meta, "PUT", "/a/b?x=1", b"body", headers=[("X-Test", "v")])
        self.assertEqual((r.status, r.content_type, r.body), (201, "text/plain", b"PUT /a/b x=1 v body"))

    def test_params_and_response_headers(self):
        def h(req, res):
            res.set_header("Location", "/a")
            res.add_header("Set-Cookie", "a=1")
            res.add_header("Set-Cookie", "b=2")
            res.set_header("location", "/b")
            res.write(f"{req.param('id')} {req.path} {req.full_path}".encode())
            res.set_header("Cache-Control", "no-store")  # after write: on the fresh buffer

        p = P.Pool.create(4, 4096)
        try:
            buf = p.alloc(1)
            p.write_meta(buf, b"GET", b"/users/7/files/a.txt", b"", [])
            # what the gateway writes for route /users/{id}/files/*: a params section
            body = bytes([2]) + bytes([2]) + b"id" + P._u16.pack(1) + b"7" + bytes([1]) + b"*" + P._u16.pack(6) + b"/a.txt"
            h0 = p.h(buf)
            n = p.u16(h0 + P.B_META_LEN)
            sec = bytes([P.SECTION_PARAMS]) + P._u16.pack(len(body)) + body
            p.mm[h0 + P.OFF_META + n:h0 + P.OFF_META + n + len(sec)] = sec
            P._u16.pack_into(p.mm, h0 + P.B_META_LEN, n + len(sec))
            res = spry._serve.Response(p, 1, buf)
            out, stop = res._finish(spry._serve._call(h, spry._serve.Request(p, buf, 0, 1), res))
            self.assertEqual(bytes(p.data(out)), b"7 /a.txt /users/7/files/a.txt")
            self.assertEqual(p.resp_headers(out), [(b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
                                                   (b"location", b"/b"), (b"Cache-Control", b"no-store")])
        finally:
            p.close()

    def test_bad_header_fails_the_step(self):
        r = spry.invoke(lambda req, res: res.set_header("Content-Length", "5"))
        self.assertEqual((r.status, r.stop), (502, True))
        self.assertIn(b"the gateway sets it", r.body)

    def test_set_len(self):
        def shorten(req, res):
            b = res.buffer()
            b[:2] = b"ok"
            res.set_len(2)

        self.assertEqual(spry.invoke(shorten, body=b"longer input").body, b"ok")

    def test_errors(self):
        def taken(req, res):
            raise spry.Error(409, "name taken")

        r = spry.invoke(taken)
        self.assertEqual((r.status, r.body, r.stop), (409, b"name taken", True))

        def crash(req, res):
            raise KeyError("k")

        r = spry.invoke(crash)
        self.assertEqual((r.status, r.body, r.stop), (502, b"KeyError: 'k'", True))

    def test_event_readers(self):
        seen = {}

        def h(req, res):
            e = req.event
            seen.update(cause=req.cause, act=req.activation_id, trig=req.trigger, topic=req.topic,
                        ev=e and (e.id, e.source, e.type, e.specversion, e.subject, e.time,
                                  e.datacontenttype, e.dataschema, e["type"], e.get("traceparent"),
                                  e.get("nope", "-"), "id" in e, e.extensions))

        # A synchronous request: no activation, no event.
        spry.invoke(h)
        self.assertEqual(seen, dict(cause="http", act="", trig="", topic="", ev=None))
        # A CloudEvent that came in asynchronously, as the gateway writes it.
        spry.invoke(h, body=b"{}", attrs=[
            ("specversion", "1.0"), ("id", "e1"), ("source", "/s"), ("type", "t.created"),
            ("subject", "sub"), ("time", "2026-01-02T03:04:05Z"), ("datacontenttype", "application/json"),
            ("traceparent", "00-ab"), ("spry.activation", "18ec8810cc3ee615a7a82c5533d1ab10"),
            ("spry.cause", "cloudevent"), ("id", "a later duplicate does not count")])
        self.assertEqual(seen, dict(
            cause="cloudevent", act="18ec8810cc3ee615a7a82c5533d1ab10", trig="", topic="",
            ev=("e1", "/s", "t.created", "1.0", "sub", "2026-01-02T03:04:05Z", "application/json", "",
                "t.created", "00-ab", "-", True, {"traceparent": "00-ab"})))
        # An MQTT message by a trigger: no CloudEvent.
        spry.invoke(h, attrs=[("spry.cause", "mqtt"), ("spry.trigger", "sensors"),
                              ("spry.topic", "site/7/temp"), ("spry.activation", "ab" * 16)])
        self.assertEqual(seen, dict(cause="mqtt", act="ab" * 16, trig="sensors", topic="site/7/temp", ev=None))

    def test_attributes_after_params(self):
        # Sections in any order and number read as one list; unknown tags are skipped.
        p = P.Pool.create(4, 4096)
        try:
            buf = p.alloc(1)
            p.write_meta(buf, b"POST", b"/x", b"", [(b"a", b"b")])
            h = p.h(buf)
            n = p.u16(h + P.B_META_LEN)
            unknown = bytes([9]) + P._u16.pack(2) + b"zz"
            p.mm[h + P.OFF_META + n:h + P.OFF_META + n + len(unknown)] = unknown
            P._u16.pack_into(p.mm, h + P.B_META_LEN, n + len(unknown))
            p.append_attr(buf, b"spry.cause", b"cron")
            p.append_attr(buf, b"spry.trigger", b"nightly")
            self.assertEqual(p.attrs(buf), [(b"spry.cause", b"cron"), (b"spry.trigger", b"nightly")])
            with self.assertRaises(ValueError):
                p.append_attr(buf, b"big", b"x" * P.MAX_META)
            self.assertEqual(len(p.attrs(buf)), 2)
        finally:
            p.close()

    def test_status_ends_chain(self):
        r = spry.invoke(lambda req, res: res.set_status(404))
        self.assertTrue(r.stop)
        r = spry.invoke(lambda req, res: res.stop())
        self.assertEqual((r.status, r.stop), (200, True))

    def test_too_large(self):
        def big(req, res):
            res.write(b"x" * (1 << 20))

        r = spry.invoke(big)
        self.assertEqual(r.status, 502)
        self.assertIn(b"larger than a pool buffer", r.body)


class PoolTest(unittest.TestCase):
    def test_alloc_free_generations(self):
        p = P.Pool.create(4, 1024)
        try:
            got = [p.alloc(7) for _ in range(4)]
            self.assertEqual(sorted(got), [0, 1, 2, 3])
            self.assertIsNone(p.alloc(7))
            self.assertEqual(p.free_buffers(), 0)
            g = p.gen(got[0])
            self.assertTrue(p.holds(got[0], g, 7))
            self.assertFalse(p.free(got[0], 8), "only the holder frees")
            self.assertTrue(p.free(got[0], 7))
            self.assertFalse(p.free(got[0], 7), "a double free is refused")
            self.assertFalse(p.holds(got[0], g, 7), "a freed buffer's descriptor is stale")
            for i in got[1:]:
                p.free(i, 7)
            self.assertEqual(p.free_buffers(), 4)
        finally:
            p.close()

    def test_version_mismatch(self):
        p = P.Pool.create(2, 1024)
        try:
            P._u32.pack_into(p.mm, P.H_VERSION, P.VERSION + 1)
            with self.assertRaisesRegex(P.PoolError, f"layout version {P.VERSION + 1}, this Python SDK speaks {P.VERSION}"):
                P.Pool(p.mm)
        finally:
            P._u32.pack_into(p.mm, P.H_VERSION, P.VERSION)
            p.close()

    def test_concurrent_alloc_free(self):
        # Threads hammer the free list; every buffer comes back exactly once.
        p = P.Pool.create(8, 1024)
        errors = []

        def work():
            for _ in range(2000):
                i = p.alloc(3)
                if i is None:
                    continue
                if not p.free(i, 3):
                    errors.append(i)

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(p.free_buffers(), 8)
        p.close()


class TransferTest(unittest.TestCase):
    def test_transfer_accept_cancel(self):
        p = P.Pool.create(2, 1024)
        try:
            i = p.alloc(5)
            g = p.transfer(i, 5, 9)
            self.assertIsNotNone(g)
            self.assertIsNone(p.transfer(i, 5, 9), "one transfer at a time")
            self.assertFalse(p.accept(i, g, 4, 9), "a forged source is refused")
            self.assertFalse(p.accept(i, g + 1, 5, 9), "a stale generation is refused")
            self.assertTrue(p.accept(i, g, 5, 9))
            self.assertFalse(p.accept(i, g, 5, 9), "a duplicate is refused")
            self.assertTrue(p.holds(i, g, 9))
            g = p.transfer(i, 9, 5)
            self.assertTrue(p.cancel(i, g, 9, 5))
            self.assertTrue(p.holds(i, g, 9))
            self.assertTrue(p.free(i, 9))
        finally:
            p.close()


class AtomicTest(unittest.TestCase):
    def test_ops(self):
        w = (ctypes.c_uint64 * 2)()
        a = ctypes.addressof(w)
        self.assertEqual(A.add64(a, 5), 0)
        self.assertEqual(A.add64(a, A.M64), 5)  # -1
        self.assertEqual(A.load64(a), 4)
        self.assertFalse(A.cas64(a, 3, 9))
        self.assertTrue(A.cas64(a, 4, 9))
        self.assertEqual(A.load64(a), 9)
        self.assertEqual(A.add32(a + 8, A.M32), 0)
        self.assertEqual(A.signed32(A.load32(a + 8)), -1)
        self.assertEqual(A.swap32(a + 8, 7), A.M32)
        self.assertTrue(A.cas32(a + 8, 7, 8))
        A.store64(a, 1 << 40)
        self.assertEqual(A.load64(a), 1 << 40)

    def test_add_is_atomic(self):
        w = (ctypes.c_uint64 * 1)()
        a = ctypes.addressof(w)

        def work():
            for _ in range(20000):
                A.add64(a, 1)

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(A.load64(a), 80000)


class NotStartedBySpry(unittest.TestCase):
    def test_clear_error(self):
        import subprocess
        import sys
        import os
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPRY_")}
        out = subprocess.run([sys.executable, "-c", "import spry; spry.serve(lambda q, r: None)"],
                             env=env, capture_output=True, text=True)
        self.assertEqual(out.returncode, 2)
        self.assertIn("not started by spry", out.stderr)


if __name__ == "__main__":
    unittest.main()
