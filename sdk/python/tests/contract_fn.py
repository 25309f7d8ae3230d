"""The contract handler (see internal/contract in the Spry repository) on
the Python SDK; run as python3 -m spry contract_fn.py."""
import time
from urllib.parse import parse_qs

import spry


def handler(req: spry.Request, res: spry.Response) -> None:
    q = parse_qs(req.query)
    path = req.path
    if path == "/inplace":
        p = req.payload
        p[:] = bytes(p).upper()
    elif path == "/fresh":
        res.write(b"fresh:")
        res.write(req.payload)
    elif path == "/status":
        code = int(q["code"][0])
        res.set_status(code)
        res.write(f"status {code}")
    elif path == "/error":
        raise RuntimeError("boom")
    elif path == "/meta":
        res.write(f"{req.method} {req.path} {req.query} {req.header('X-Contract')}")
    elif path == "/sleep":
        time.sleep(int(q["ms"][0]) / 1000)
