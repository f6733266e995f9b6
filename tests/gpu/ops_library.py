"""The operator library the kernel tests load (QLORAD_OPS_LIB, default build-gpu's), once for all of
them, and the device they test on."""
import os
import pathlib

import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIB = os.environ.get("QLORAD_OPS_LIB", str(ROOT / "build-gpu" / "kernels" / "libqlorad_ops.so"))
torch.ops.load_library(LIB)
# A crash inside a C++ op should show its native frames, not only the Python ones.
if hasattr(torch._C, "_set_print_stack_traces_on_fatal_signal"):
    torch._C._set_print_stack_traces_on_fatal_signal(True)
ops = torch.ops.qlorad
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
