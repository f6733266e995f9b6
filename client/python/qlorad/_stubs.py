"""The generated gRPC stubs, or an ImportError that says how to make them."""

try:
    from qlorad._gen.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
except ModuleNotFoundError as e:
    # Only a missing stub is ours to explain; anything else (say, a protobuf runtime too old
    # for the generated code) is clearer as it is.
    if not (e.name or "").startswith("qlorad._gen"):
        raise
    raise ImportError(
        "qlorad: the generated gRPC stubs (qlorad/_gen/v1) are missing. In a source checkout run "
        "`python -m qlorad._generate`; otherwise reinstall the package "
        "(`pip install client/python`), whose build generates them."
    ) from e

__all__ = ["common_pb2", "jobs_pb2", "jobs_pb2_grpc"]
