"""python3 -m spry HANDLER.py: run the handler(req, res) a file defines as
an instance (what the node does for python: functions)."""

import importlib.util
import os
import sys

from ._serve import serve


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m spry HANDLER.py  (a file that defines handler(req, res))", file=sys.stderr)
        return 2
    path = os.path.abspath(argv[1])
    sys.path.insert(0, os.path.dirname(path))  # the handler's own modules import as usual
    spec = importlib.util.spec_from_file_location("spry_handler", path)
    if spec is None:
        print(f"spry: {path} is not a Python file", file=sys.stderr)
        return 2
    mod = importlib.util.module_from_spec(spec)
    sys.modules["spry_handler"] = mod
    try:
        spec.loader.exec_module(mod)
    except FileNotFoundError as e:
        print(f"spry: {e}", file=sys.stderr)
        return 2
    h = getattr(mod, "handler", None)
    if h is None or not callable(h):
        print(f"spry: {path} defines no function handler(req, res)", file=sys.stderr)
        return 2
    serve(h)
    return 0


sys.exit(main(sys.argv))
