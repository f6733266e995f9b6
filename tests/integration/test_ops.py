"""What operators point their tools at, over real gRPC on loopback: grpc.health.v1.Health (load
balancers, Kubernetes probes, grpc_health_probe) and server reflection (grpcurl list/describe with
no .proto files), checked with the stock Python clients of both protocols."""
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conftest import Cluster

SERVICES = {"qlorad.v1.JobService", "qlorad.v1.WorkerService"}


@pytest.fixture()
def coordinator(tmp_path):
    c = Cluster(tmp_path).start_coordinator()
    yield c
    c.stop()


def test_health_serves_the_server_and_each_service(coordinator):
    with grpc.insecure_channel(coordinator.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", *SERVICES]:
            res = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert res.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watchers_hear_not_serving_when_the_coordinator_stops(coordinator):
    with grpc.insecure_channel(coordinator.addr) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="qlorad.v1.JobService"), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        coordinator.coordinator.terminate()  # SIGTERM: a clean shutdown
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert coordinator.coordinator.wait(timeout=30) == 0


def reflect(channel, **request):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    (response,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]),
                                            timeout=10)
    return response


def test_reflection_lists_and_describes_the_services(coordinator):
    with grpc.insecure_channel(coordinator.addr) as channel:
        listed = {s.name for s in reflect(channel, list_services="").list_services_response.service}
        assert listed >= SERVICES | {"grpc.health.v1.Health"}, listed
        assert any(name.startswith("grpc.reflection.") for name in listed), listed

        # What `grpcurl describe qlorad.v1.JobService` reads: the file that declares it.
        files = reflect(channel, file_containing_symbol="qlorad.v1.JobService")
        descriptors = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                       for raw in files.file_descriptor_response.file_descriptor_proto]
        services = {f"{d.package}.{s.name}": {m.name for m in s.method}
                    for d in descriptors for s in d.service}
        assert {"SubmitJob", "GetJob", "ListJobs", "CancelJob", "StreamMetrics"} <= \
            services["qlorad.v1.JobService"], services
