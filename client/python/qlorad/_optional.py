"""Optional dependencies (pandas, matplotlib), imported when a feature that needs them is used,
so that the client itself needs only grpcio and protobuf."""

from __future__ import annotations

import importlib
from types import ModuleType


def optional_import(module: str, purpose: str, extra: str) -> ModuleType:
    """`module`, or an ImportError that names the feature and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs {module}, which is not installed: "
                          f'pip install "qlorad[{extra}]"') from e
