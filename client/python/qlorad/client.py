"""qlorad.Client: the coordinator's JobService from Python."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Union

import grpc

from qlorad._channel import open_channel
from qlorad._stubs import jobs_pb2, jobs_pb2_grpc
from qlorad.errors import DeadlineExceeded, from_rpc_error, translate_rpc_errors
from qlorad.frame import metrics_frame
from qlorad.plot import plot_metrics
from qlorad.types import Job, JobState, LogLine, StepMetrics

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

Spec = Union[str, "os.PathLike[str]", Mapping[str, Any]]

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")

# HTTP/2 keepalive, the numbers of proto/keepalive.h (the coordinator refuses pings more frequent
# than every 10 s): a metrics stream of a queued or quiet job may sit idle for hours, and pings
# keep a NAT from dropping it and notice a vanished coordinator within 40 s.
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def spec_text(spec: Spec) -> str:
    """The YAML text to submit for `spec`:
    - a mapping: serialized as JSON, which is valid YAML (so no YAML library is needed);
    - a path object, or a one-line string ending in .yaml/.yml/.json or naming a file: the file;
    - any other string: YAML text as it is.
    A path that does not exist raises FileNotFoundError naming it."""
    if isinstance(spec, Mapping):
        return json.dumps(spec, indent=2)
    if isinstance(spec, os.PathLike):
        return Path(spec).read_text()
    if not isinstance(spec, str):
        raise TypeError(f"spec must be YAML text, a path or a dict, not {type(spec).__name__}")
    looks_like_path = "\n" not in spec and (spec.endswith(_SPEC_SUFFIXES) or os.path.isfile(spec))
    return Path(spec).read_text() if looks_like_path else spec


class Client:
    """A connection to a qlorad coordinator. Calls raise qlorad.QloradError (with .code) when the
    server refuses them and qlorad.ServerUnavailable when no server answers.

    `token` (default: $QLORAD_TOKEN) is sent with every call; `ca_file` ($QLORAD_CA_FILE) turns
    TLS on, trusting that CA (`tls=True` alone trusts the system's); `cert_file` and `key_file`
    ($QLORAD_CLIENT_CERT, $QLORAD_CLIENT_KEY) are the client certificate for mutual TLS."""

    def __init__(self, address: str = "127.0.0.1:50051", *, timeout: float = 30.0,
                 token: str | None = None, ca_file=None, cert_file=None, key_file=None,
                 tls: bool = False):
        self.address = address
        self.timeout = timeout  # for unary calls; streams have none
        self._channel = open_channel(address, token=token, ca_file=ca_file, cert_file=cert_file,
                                     key_file=key_file, tls=tls, options=_KEEPALIVE)
        self._stub = jobs_pb2_grpc.JobServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"qlorad.Client({self.address!r})"

    def submit(self, spec: Spec) -> Job:
        request = jobs_pb2.SubmitJobRequest(spec_yaml=spec_text(spec))
        with translate_rpc_errors(self.address):
            return self._job(self._stub.SubmitJob(request, timeout=self.timeout))

    def get(self, job_id: str) -> Job:
        with translate_rpc_errors(self.address):
            return self._job(
                self._stub.GetJob(jobs_pb2.GetJobRequest(job_id=job_id), timeout=self.timeout))

    def list(self, states: Iterable[JobState | str] | None = None, limit: int = 0) -> list[Job]:
        """Jobs in any of `states` (all when None), newest first, at most `limit` (0: every job).
        Listed jobs carry no spec (spec_yaml is ""); get(id) has it."""
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        wanted = [f"JOB_STATE_{JobState.parse(s).value}" for s in (states or [])]
        jobs: list[Job] = []
        token = ""
        # The coordinator serves a page at a time (at most 1000 jobs); walk them by token.
        while True:
            request = jobs_pb2.ListJobsRequest(states=wanted, page_token=token,
                                               page_size=limit - len(jobs) if limit else 0)
            with translate_rpc_errors(self.address):
                response = self._stub.ListJobs(request, timeout=self.timeout)
            jobs.extend(self._job(j) for j in response.jobs)
            if limit and len(jobs) >= limit:
                return jobs[:limit]
            if not response.next_page_token:
                return jobs
            if response.next_page_token == token or not response.jobs:
                raise RuntimeError("ListJobs: the coordinator returned a page token that does not "
                                   "move on")
            token = response.next_page_token

    def cancel(self, job_id: str) -> Job:
        """Queued jobs are CANCELLED at once; running ones stop shortly after (see wait)."""
        with translate_rpc_errors(self.address):
            return self._job(
                self._stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=job_id), timeout=self.timeout))

    def metrics(self, job_id: str, from_step: int = 0, *,
                follow: bool = True) -> Iterator[StepMetrics]:
        """Every stored step >= from_step, then live ones, for every rank; ends when the job has
        ended and every step was sent. follow=False ends after the steps stored now, even while
        the job runs."""
        request = jobs_pb2.StreamMetricsRequest(job_id=job_id, from_step=from_step,
                                                stored_only=not follow)
        return self._stream(self._stub.StreamMetrics(request), StepMetrics.from_proto)

    def dataframe(self, job_id: str, *, follow: bool = False,
                  all_attempts: bool = False) -> pandas.DataFrame:
        """The job's metrics as a pandas DataFrame, one row per (step, rank) (qlorad/frame.py
        lists the columns). Of a running job: the steps stored now, without waiting (follow=True
        waits for the job to end). all_attempts=True keeps the steps a retry repeated."""
        return metrics_frame(self.metrics(job_id, follow=follow), all_attempts=all_attempts)

    def plot(self, job_id: str, *, follow: bool = False, title: str | None = None) -> Figure:
        """A matplotlib figure of the job's loss, learning rate, tokens/s and VRAM (qlorad/plot.py)
        from dataframe(job_id, follow=follow)."""
        return plot_metrics(self.dataframe(job_id, follow=follow), title=title or job_id)

    def logs(self, job_id: str, from_seq: int = 0) -> Iterator[LogLine]:
        """Every stored log line with seq >= from_seq, then live ones; ends when the job has ended."""
        request = jobs_pb2.StreamLogsRequest(job_id=job_id, from_seq=from_seq)
        return self._stream(self._stub.StreamLogs(request), LogLine.from_proto)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Blocks until the job has ended and returns it; DeadlineExceeded after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.state.terminal:
                return job
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("DEADLINE_EXCEEDED",
                                       f"job {job_id} still {job.state.value} after {timeout} s")
            # The metrics stream ends when the job does; start after the steps already seen.
            request = jobs_pb2.StreamMetricsRequest(job_id=job_id, from_step=job.last_step + 1)
            call = self._stub.StreamMetrics(request, timeout=remaining)
            try:
                for _ in call:
                    pass
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise from_rpc_error(e, self.address) from None
                # Out of time: the next get() decides between "ended just now" and a timeout.

    def _job(self, message: Any) -> Job:
        # Jobs keep their client, for job.dataframe() and job.plot().
        return Job.from_proto(message)._bind(self)

    def _stream(self, call, convert) -> Iterator:
        try:
            for message in call:
                yield convert(message)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.address) from None
        finally:
            # A caller that stops iterating early must not leave the stream open on the server.
            call.cancel()
