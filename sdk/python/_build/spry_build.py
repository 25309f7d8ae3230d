"""A PEP 517 build backend for the spry package, standard library only, so
that `pip install ./sdk/python` needs nothing from a package index."""

import base64
import hashlib
import os
import zipfile

NAME = "spry"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = f"{NAME}-{VERSION}"
TAG = "py3-none-any"

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: Spry's Python SDK: write zero-copy steps of Spry function chains
Requires-Python: >=3.8
"""

WHEEL = f"""Wheel-Version: 1.0
Generator: spry_build
Root-Is-Purelib: true
Tag: {TAG}
"""


def _files():
    pkg = os.path.join(HERE, NAME)
    for name in sorted(os.listdir(pkg)):
        if name.endswith(".py"):
            with open(os.path.join(pkg, name), "rb") as f:
                yield f"{NAME}/{name}", f.read()


def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def _wheel(wheel_directory, files):
    dist_info = f"{DIST}.dist-info"
    entries = list(files) + [(f"{dist_info}/METADATA", METADATA.encode()),
                             (f"{dist_info}/WHEEL", WHEEL.encode())]
    name = f"{DIST}-{TAG}.whl"
    record = [_record_line(p, d) for p, d in entries] + [f"{dist_info}/RECORD,,"]
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in entries:
            z.writestr(p, d)
        z.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _wheel(wheel_directory, _files())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    # A .pth file pointing at the source tree.
    return _wheel(wheel_directory, [(f"__editable__.{NAME}.pth", (HERE + "\n").encode())])


def build_sdist(sdist_directory, config_settings=None):
    import tarfile
    import io
    name = f"{DIST}.tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "_build/spry_build.py"] + [p for p, _ in _files()]:
            t.add(os.path.join(HERE, rel), arcname=f"{DIST}/{rel}")
        info = tarfile.TarInfo(f"{DIST}/PKG-INFO")
        data = METADATA.encode()
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return name
