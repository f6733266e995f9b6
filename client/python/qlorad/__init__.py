"""qlorad: Python client of the qlorad QLoRA fine-tuning coordinator.

    import qlorad
    client = qlorad.Client("127.0.0.1:50051")
    job = client.submit("job.yaml")
    for m in client.metrics(job.id):
        print(m.step, m.loss)
    print(client.wait(job.id).adapter_path)

Client and the types load lazily, so that `python -m qlorad._generate` works before the gRPC
stubs exist; `from qlorad import Client` without stubs fails with instructions.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Client": "qlorad.client",
    "BestEval": "qlorad.types",
    "Job": "qlorad.types",
    "JobState": "qlorad.types",
    "LogLine": "qlorad.types",
    "StepMetrics": "qlorad.types",
    "Device": "qlorad.types",
    "WorkerInfo": "qlorad.types",
    "QloradError": "qlorad.errors",
    "ServerUnavailable": "qlorad.errors",
    "DeadlineExceeded": "qlorad.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qlorad' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + __all__)
