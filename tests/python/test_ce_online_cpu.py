"""qlorad::linear_ce_online's CPU implementation in CI (which has no GPU and runs tests/python):
every test of tests/gpu/test_ce_online.py on the CPU, with the operator library of the build that
QLORAD_BIN_DIR belongs to (BUILD/bin -> BUILD/kernels/libqlorad_ops.so; QLORAD_OPS_LIB overrides)."""
import os
import pathlib
import sys

import pytest

pytest.importorskip("torch")
_ROOT = pathlib.Path(__file__).resolve().parents[2]
_bin = pathlib.Path(os.environ.get("QLORAD_BIN_DIR", _ROOT / "build" / "bin"))
os.environ.setdefault("QLORAD_OPS_LIB", str(_bin.parent / "kernels" / "libqlorad_ops.so"))
if not pathlib.Path(os.environ["QLORAD_OPS_LIB"]).is_file():
    pytest.fail(f"{os.environ['QLORAD_OPS_LIB']} is missing: build qlorad_ops or set QLORAD_BIN_DIR",
                pytrace=False)
os.environ["QLORAD_TEST_DEVICE"] = "cpu"
sys.path.insert(0, str(_ROOT / "tests" / "gpu"))
from test_ce_online import *  # noqa: E402,F401,F403 - pytest collects the imported tests
