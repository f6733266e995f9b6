"""Generates the gRPC stubs of qlorad's API into qlorad/_gen/v1/.

Run `python -m qlorad._generate` in a source checkout after changing proto/ (installing the
package runs it too, from setup.py). The protos are found in $QLORAD_PROTO_DIR, or in the proto/
directory of the checkout this file sits in.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTOS = ("common", "jobs", "workers")
PACKAGE_DIR = Path(__file__).resolve().parent
GEN_DIR = PACKAGE_DIR / "_gen"

# protoc names imports after the proto path ("qlorad/v1/jobs.proto" -> `from qlorad.v1 import`),
# which would resolve against this package, also called qlorad. Point them at qlorad._gen.v1.
_IMPORT = re.compile(r"^from qlorad\.v1 import ", re.MULTILINE)
_FIXED_IMPORT = "from qlorad._gen.v1 import "


def find_proto_dir() -> Path:
    env = os.environ.get("QLORAD_PROTO_DIR")
    candidates = [Path(env)] if env else list(PACKAGE_DIR.parents)
    for base in candidates:
        root = base if env else base / "proto"
        if (root / "qlorad" / "v1" / "jobs.proto").is_file():
            return root
    where = f"QLORAD_PROTO_DIR={env}" if env else f"any parent of {PACKAGE_DIR}"
    raise FileNotFoundError(f"qlorad/v1/jobs.proto not found under {where}; set QLORAD_PROTO_DIR")


def generate(proto_dir: Path | None = None, out_dir: Path = GEN_DIR) -> Path:
    """Writes <out_dir>/v1/{common,jobs,workers}_pb2{,_grpc}.py (+ .pyi); returns out_dir/v1."""
    from grpc_tools import protoc  # build-time dependency only

    proto_dir = Path(proto_dir) if proto_dir else find_proto_dir()
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    files = [str(proto_dir / "qlorad" / "v1" / f"{name}.proto") for name in PROTOS]
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={tmp}",
                f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *files]
        if protoc.main(args) != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {', '.join(files)}")
        produced = Path(tmp) / "qlorad" / "v1"
        for path in produced.iterdir():
            if path.suffix in (".py", ".pyi"):
                path.write_text(_IMPORT.sub(_FIXED_IMPORT, path.read_text()))
        target = Path(out_dir) / "v1"
        # Replace the whole directory so stubs of a removed proto do not linger.
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(produced, target)
    for package in (Path(out_dir), target):
        (package / "__init__.py").touch()
    return target


def generate_if_stale(proto_dir: Path | None = None, out_dir: Path = GEN_DIR) -> bool:
    """Generates the stubs when they are missing or older than one of the protos (a checkout
    whose proto/ changed since they were made: stale stubs fail far from the cause, e.g. a
    KeyError for a new field). Returns whether it generated them."""
    proto_dir = Path(proto_dir) if proto_dir else find_proto_dir()
    made = Path(out_dir) / "v1" / "jobs_pb2_grpc.py"
    protos = [proto_dir / "qlorad" / "v1" / f"{name}.proto" for name in PROTOS]
    if made.exists() and all(p.stat().st_mtime <= made.stat().st_mtime for p in protos):
        return False
    generate(proto_dir, out_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qlorad._generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proto-dir", type=Path, help="directory holding qlorad/v1/*.proto")
    parser.add_argument("--out", type=Path, default=GEN_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    target = generate(args.proto_dir, args.out)
    print(f"wrote gRPC stubs to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
