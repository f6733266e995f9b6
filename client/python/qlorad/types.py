"""Plain dataclasses for what the API returns, so callers never handle protobuf messages.
Field names and meanings are those of proto/qlorad/v1/common.proto."""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, TypeVar

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

    from qlorad.client import Client


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


_T = TypeVar("_T", bound="_FromProto")


class _FromProto:
    # Message-typed fields, by name: the dataclass each converts to.
    _NESTED: ClassVar[dict[str, type[_FromProto]]] = {}

    @classmethod
    def from_proto(cls: type[_T], message: Any) -> _T:
        """The dataclass with every field copied from the message of the same name; an optional
        field that is unset (a step that was not evaluated, a job with no best evaluation) is
        None rather than a zero that reads as a value."""
        values: dict[str, Any] = {}
        descriptors = type(message).DESCRIPTOR.fields_by_name
        # Every subclass is a dataclass, which type checkers cannot see from here.
        for field in dataclasses.fields(cls):  # type: ignore[arg-type]
            if descriptors[field.name].has_presence and not message.HasField(field.name):
                values[field.name] = None
                continue
            value = getattr(message, field.name)
            if field.name == "state":
                enum = descriptors["state"].enum_type
                value = JobState(enum.values_by_number[value].name[len(_STATE_PREFIX):])
            elif field.name in cls._NESTED:
                value = cls._NESTED[field.name].from_proto(value)
            values[field.name] = value
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class BestEval(_FromProto):
    """The evaluation with the lowest eval loss (data.validation); its resume checkpoint and
    adapter are kept apart from the rolling checkpoint.keep window."""
    step: int
    eval_loss: float
    checkpoint_path: str
    adapter_path: str


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
    best: BestEval | None = None
    stopped_early: bool = False
    restarts: int = 0  # retries after trainer failures; a lost worker spends none
    waiting_reason: str = ""  # why a queued job is not placed yet (e.g. no GPU has the memory)
    owner: str = ""  # the user who submitted it ("local" without a token under --insecure-local)
    # A queued job's place in line (1 starts next) and how many are in line; 0 when not in line.
    queue_position: int = 0
    queue_length: int = 0

    _NESTED: ClassVar[dict[str, type[_FromProto]]] = {"best": BestEval}

    # A Job that a Client returned keeps that client (an attribute, not a field: it is no part
    # of the job's value, so equality, repr and pickling leave it out), which metrics(),
    # dataframe() and plot() ask about this job's metrics as they are now.
    def _bind(self, client: Client) -> Job:
        object.__setattr__(self, "_client", client)
        return self

    def _the_client(self) -> Client:
        client: Client | None = self.__dict__.get("_client")
        if client is None:
            raise RuntimeError(f"job {self.id} has no qlorad.Client (it was made by hand, copied "
                               "or unpickled): use client.metrics/dataframe/plot(job_id)")
        return client

    def metrics(self, from_step: int = 0, *, follow: bool = True) -> Iterator[StepMetrics]:
        """Client.metrics(self.id, ...) on the client that returned this job."""
        return self._the_client().metrics(self.id, from_step, follow=follow)

    def dataframe(self, *, follow: bool = False, all_attempts: bool = False) -> pandas.DataFrame:
        """Client.dataframe(self.id, ...) on the client that returned this job."""
        return self._the_client().dataframe(self.id, follow=follow, all_attempts=all_attempts)

    def plot(self, *, follow: bool = False, title: str | None = None) -> Figure:
        """Client.plot(self.id, ...) on the client that returned this job."""
        return self._the_client().plot(self.id, follow=follow, title=title)

    def __getstate__(self) -> dict[str, Any]:
        # A client holds a gRPC channel, which cannot be pickled.
        return {k: v for k, v in self.__dict__.items() if k != "_client"}


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
    # Set on steps after which the validation set was evaluated (data.validation).
    eval_loss: float | None = None
    eval_perplexity: float | None = None
    # task: classification, on evaluated steps: the validation accuracy.
    eval_accuracy: float | None = None


@dataclasses.dataclass(frozen=True)
class LogLine(_FromProto):
    job_id: str
    seq: int
    level: str
    message: str
    source: str
    unix_ms: int
    rank: int
