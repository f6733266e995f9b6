"""A job's metrics as a pandas DataFrame: a row per (step, rank), a column per StepMetrics field.

pandas is optional (`pip install "qlorad[dataframe]"`); it is imported when a frame is made, so
the rest of the client works without it.

Columns, in StepMetrics' order, typed after the proto fields: job_id (str); rank and attempt
(int32); step, total_steps and vram_{allocated,reserved,peak}_bytes (int64); loss, lr, grad_norm,
tokens_per_s and wall_time_s (float64); eval_loss, eval_perplexity and eval_accuracy (float64,
NaN on the steps that were not evaluated). Rows are sorted by step, then rank.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable

from google.protobuf.descriptor import FieldDescriptor

from qlorad._optional import optional_import
from qlorad._stubs import common_pb2
from qlorad.types import StepMetrics

if TYPE_CHECKING:
    import pandas

# Proto scalar type -> the column's dtype. A field with presence (optional) that is absent is
# NaN, so optional fields must map to a dtype that has NaN: all of them are doubles today.
_DTYPES = {
    FieldDescriptor.CPPTYPE_STRING: "str",
    FieldDescriptor.CPPTYPE_INT32: "int32",
    FieldDescriptor.CPPTYPE_INT64: "int64",
    FieldDescriptor.CPPTYPE_DOUBLE: "float64",
}


def column_dtypes() -> dict[str, str]:
    """Column name -> dtype, for every StepMetrics field in order."""
    dtypes = {}
    for field in common_pb2.StepMetrics.DESCRIPTOR.fields:
        dtype = _DTYPES.get(field.cpp_type)
        if dtype is None:
            raise TypeError(f"StepMetrics.{field.name}: no DataFrame column type for protobuf "
                            f"C++ type {field.cpp_type}")
        if field.has_presence and dtype != "float64":
            raise TypeError(f"StepMetrics.{field.name}: an optional {dtype} field has no NaN to "
                            "stand for an absent value")
        dtypes[field.name] = dtype
    return dtypes


def latest_attempts(steps: Iterable[StepMetrics]) -> list[StepMetrics]:
    """One StepMetrics per (step, rank): the newest attempt's. A retried job repeats the steps
    after its last checkpoint; the retry's are the ones its adapter came from."""
    newest: dict[tuple[int, int], StepMetrics] = {}
    for m in steps:
        key = (m.step, m.rank)
        kept = newest.get(key)
        if kept is None or m.attempt >= kept.attempt:
            newest[key] = m
    return sorted(newest.values(), key=lambda m: (m.step, m.rank))


def metrics_frame(steps: Iterable[StepMetrics], *, all_attempts: bool = False) -> pandas.DataFrame:
    """The DataFrame of `steps` (see the module's docstring for its columns). all_attempts=False
    keeps one row per (step, rank), from the newest attempt; True keeps every row, sorted by
    attempt, step and rank."""
    pd = optional_import("pandas", "qlorad: metrics as a DataFrame", "dataframe")

    if all_attempts:
        rows = sorted(steps, key=lambda m: (m.attempt, m.step, m.rank))
    else:
        rows = latest_attempts(steps)
    columns: dict[str, Any] = {}
    for name, dtype in column_dtypes().items():
        values = [getattr(m, name) for m in rows]
        if dtype == "float64":
            values = [math.nan if v is None else v for v in values]
        columns[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(columns)
