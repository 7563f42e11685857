"""Generate the Python modules of etcd's v3 protos (raftkv/server/etcd/proto/).

Usage::

    python scripts/gen_etcd_protos.py            # regenerate the committed modules
    python scripts/gen_etcd_protos.py --out DIR  # generate into DIR instead (tests compare)

The sources are ``rpc.proto``, ``kv.proto`` and ``auth.proto`` in raftkv/server/etcd/proto/.
They may also be etcd's own files as published (etcd 3.4 layout): before running protoc this
script drops what only etcd's Go build needs — the ``gogoproto`` import and every
``(gogoproto.*)`` option, the ``google/api/annotations.proto`` import and the
``(google.api.http)`` gateway options — and maps etcd's import paths
(``etcd/mvcc/mvccpb/kv.proto``, ``etcd/auth/authpb/auth.proto``) onto this package.  protoc
(``python -m grpc_tools.protoc``, from grpcio-tools) then generates ``*_pb2.py``, ``*_pb2.pyi``
and ``*_pb2_grpc.py`` into a package layout (``raftkv/server/etcd/proto/``), so the generated
imports (``from raftkv.server.etcd.proto import kv_pb2``) resolve as they are.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "raftkv/server/etcd/proto"
SOURCES = ("kv.proto", "auth.proto", "rpc.proto")

_IMPORTS = {
    # etcd 3.4 paths, and the 3.5+ ones, onto this package
    "etcd/mvcc/mvccpb/kv.proto": f"{PACKAGE}/kv.proto",
    "etcd/auth/authpb/auth.proto": f"{PACKAGE}/auth.proto",
    "etcd/api/mvccpb/kv.proto": f"{PACKAGE}/kv.proto",
    "etcd/api/authpb/auth.proto": f"{PACKAGE}/auth.proto",
    "mvcc/mvccpb/kv.proto": f"{PACKAGE}/kv.proto",
    "auth/authpb/auth.proto": f"{PACKAGE}/auth.proto",
}
_DROPPED_IMPORTS = ("gogoproto/gogo.proto", "google/api/annotations.proto")


def _drop_option_block(text: str, name: str) -> str:
    """Remove every ``option (name) = { ... };`` statement (braces nest)."""
    pattern = re.compile(r"option\s*\(" + re.escape(name) + r"\)\s*=\s*\{")
    while True:
        m = pattern.search(text)
        if m is None:
            return text
        depth, i = 1, m.end()
        while depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ";":
            i += 1
        text = text[: m.start()] + text[i:]


def clean_proto(text: str) -> str:
    """The proto text without gogoproto and google.api.http, with imports onto this package."""
    out: list[str] = []
    for line in text.splitlines():
        m = re.match(r'\s*import\s+"([^"]+)"\s*;', line)
        if m and m.group(1) in _DROPPED_IMPORTS:
            continue
        if m and m.group(1) in _IMPORTS:
            line = line.replace(m.group(1), _IMPORTS[m.group(1)])
        if re.match(r"\s*option\s*\(gogoproto\.[^)]*\)\s*=[^;]*;", line):
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    text = _drop_option_block(text, "google.api.http")
    # field options: [(gogoproto.nullable) = false, (gogoproto.jsontag) = "x"] and the like
    text = re.sub(r"\s*\[\s*\(gogoproto\.[^\]]*\]", "", text)
    return text


def generate(out_dir: Path) -> list[Path]:
    """Generate the modules into ``out_dir`` (a directory that becomes the package)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        gen = Path(tmp) / "gen"
        (src / PACKAGE).mkdir(parents=True)
        gen.mkdir()
        for name in SOURCES:
            text = (ROOT / PACKAGE / name).read_text()
            (src / PACKAGE / name).write_text(clean_proto(text))
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{src}",
            f"--python_out={gen}",
            f"--pyi_out={gen}",
            f"--grpc_python_out={gen}",
            *(f"{PACKAGE}/{name}" for name in SOURCES),
        ]
        subprocess.run(cmd, check=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for f in sorted((gen / PACKAGE).iterdir()):
            dest = out_dir / f.name
            shutil.copyfile(f, dest)
            written.append(dest)
        return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / PACKAGE, help="where to write the modules")
    args = p.parse_args(argv)
    for f in generate(args.out):
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
