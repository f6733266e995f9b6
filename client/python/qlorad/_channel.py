"""How the client dials the coordinator: plaintext or TLS (a CA file, a client certificate for
mutual TLS) and a bearer token on every call, the same options as qloractl's (--token, --ca-file,
--cert, --key and their QLORAD_* environment variables)."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import grpc


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready",
                         "compression")), grpc.ClientCallDetails):
    pass


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer TOKEN` to every call, over plaintext channels too (gRPC's own
    call credentials refuse those, and --insecure-local coordinators on loopback take tokens)."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None),
                            getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


def _read(path: str | os.PathLike | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None


def open_channel(address: str, *, token: str | None = None, ca_file=None, cert_file=None,
                 key_file=None, tls: bool = False, options=None) -> grpc.Channel:
    """A channel to `address`. None for token/ca_file/cert_file/key_file reads QLORAD_TOKEN,
    QLORAD_CA_FILE, QLORAD_CLIENT_CERT and QLORAD_CLIENT_KEY. TLS when tls, ca_file or cert_file
    is set (ca_file None with tls: the system's roots). A file that cannot be read raises
    ValueError naming the argument."""
    token = os.environ.get("QLORAD_TOKEN") if token is None else token
    ca_file = os.environ.get("QLORAD_CA_FILE") if ca_file is None else ca_file
    cert_file = os.environ.get("QLORAD_CLIENT_CERT") if cert_file is None else cert_file
    key_file = os.environ.get("QLORAD_CLIENT_KEY") if key_file is None else key_file
    if bool(cert_file) != bool(key_file):
        raise ValueError("cert_file and key_file: give both (PEM files) or neither")
    if tls or ca_file or cert_file:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca_file, "ca_file"),
            private_key=_read(key_file, "key_file"),
            certificate_chain=_read(cert_file, "cert_file"))
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel
