"""The contract handler (see internal/contract) as a Python http.server on
$PORT, for the http: adapter. It stops on SIGTERM."""
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, out = 200, body
        if u.path == "/inplace":
            out = body.upper()
        elif u.path == "/status":
            status = int(q["code"][0])
            out = f"status {status}".encode()
        elif u.path == "/error":
            status, out = 500, b"boom"
        elif u.path == "/meta":
            out = f"{self.command} {u.path} {u.query} {self.headers.get('X-Contract', '')}".encode()
        elif u.path == "/sleep":
            time.sleep(int(q["ms"][0]) / 1000)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_POST = do_PUT = do_GET = handle_one

    def log_message(self, *a):
        pass


srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
srv.serve_forever()
