"""Errors the client raises instead of grpc.RpcError."""

from __future__ import annotations

import contextlib

import grpc


class QloradError(Exception):
    """The coordinator refused a call. `code` is the gRPC status name ("INVALID_ARGUMENT",
    "NOT_FOUND", ...); for INVALID_ARGUMENT the message starts with the spec field at fault."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerUnavailable(QloradError):
    """No coordinator answered at the client's address."""


class DeadlineExceeded(QloradError, TimeoutError):
    """A call, or Client.wait, ran out of time."""


@contextlib.contextmanager
def translate_rpc_errors(address: str):
    try:
        yield
    except grpc.RpcError as e:
        raise from_rpc_error(e, address) from None


def _tls_failure(details: str) -> bool:
    lower = details.lower()
    return "ssl" in lower or "handshake" in lower or "certificate" in lower


def _tls_hint(details: str) -> str:
    """What to do when a TLS mismatch made the coordinator unreachable (as qloractl says it)."""
    if _tls_failure(details):
        return (" (the TLS handshake failed: ca_file must name the CA that signed the "
                "coordinator's certificate, and under mutual TLS cert_file and key_file a "
                "certificate it accepts)")
    if "socket closed" in details.lower():
        return (" (the coordinator closed the connection: if it serves TLS, pass ca_file or "
                "tls=True; under mutual TLS also cert_file and key_file)")
    return ""


def from_rpc_error(error: grpc.RpcError, address: str) -> QloradError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    if code == grpc.StatusCode.UNAVAILABLE or _tls_failure(details):
        return ServerUnavailable(code.name,
                                 f"cannot reach qlorad at {address}: {details}{_tls_hint(details)}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(code.name, f"no answer from qlorad at {address} in time: {details}")
    return QloradError(code.name, details)
