"""Plain dataclasses for what the API returns, so callers never handle protobuf messages.
Field names and meanings are those of proto/qlorad/v1/common.proto."""

from __future__ import annotations

import dataclasses
import enum


class JobState(str, enum.Enum):
    UNSPECIFIED = "UNSPECIFIED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    @classmethod
    def parse(cls, value: JobState | str) -> JobState:
        """"running", "RUNNING" or JobState.RUNNING -> JobState.RUNNING."""
        if isinstance(value, JobState):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            names = ", ".join(s.value.lower() for s in cls if s is not cls.UNSPECIFIED)
            raise ValueError(f"unknown job state {value!r}; expected one of {names}") from None


_STATE_PREFIX = "JOB_STATE_"


class _FromProto:
    @classmethod
    def from_proto(cls, message):
        """The dataclass with every field copied from the message of the same name."""
        values = {}
        for field in dataclasses.fields(cls):
            value = getattr(message, field.name)
            if field.name == "state":
                enum = type(message).DESCRIPTOR.fields_by_name["state"].enum_type
                value = JobState(enum.values_by_number[value].name[len(_STATE_PREFIX):])
            values[field.name] = value
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Job(_FromProto):
    id: str
    name: str
    state: JobState
    spec_yaml: str = dataclasses.field(repr=False)
    priority: int
    attempt: int
    max_restarts: int
    worker_id: str
    created_unix_ms: int
    started_unix_ms: int
    finished_unix_ms: int
    last_step: int
    total_steps: int
    last_loss: float
    error: str
    adapter_path: str
    gpus: int
    restarts: int  # retries after trainer failures; a lost worker spends none


@dataclasses.dataclass(frozen=True)
class StepMetrics(_FromProto):
    job_id: str
    rank: int
    step: int
    total_steps: int
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    vram_allocated_bytes: int
    vram_reserved_bytes: int
    vram_peak_bytes: int
    wall_time_s: float
    attempt: int


@dataclasses.dataclass(frozen=True)
class LogLine(_FromProto):
    job_id: str
    seq: int
    level: str
    message: str
    source: str
    unix_ms: int
    rank: int
