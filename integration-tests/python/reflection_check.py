"""Calls a running watchnext server the way a generic gRPC tool does: with no
.proto files, only server reflection (v1alpha, the version Python's
grpcio-reflection speaks) and the health service.

Usage: reflection_check.py HOST:PORT
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    target = sys.argv[1]
    channel = grpc.insecure_channel(target)
    grpc.channel_ready_future(channel).result(timeout=10)

    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    for name in ("watchnext.v1.Recommender", "watchnext.v1.Feedback", "grpc.health.v1.Health"):
        assert name in services, f"{name} not listed by reflection: {sorted(services)}"
    print("reflection v1alpha lists:", ", ".join(sorted(services)))

    # Build the request type from the server's own descriptors.
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName("watchnext.v1.Recommender")
    method = service.FindMethodByName("Recommend")
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/watchnext.v1.Recommender/Recommend",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    try:
        call(request_cls(user_id="u1", num_results=10), timeout=10)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
        assert "query_video_id" in err.details(), err.details()
        print("dynamic Recommend without query_video_id:", err.code().name, "-", err.details())
    else:
        raise AssertionError("a request without query_video_id was accepted")

    health = health_pb2_grpc.HealthStub(channel)
    overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert overall.status == health_pb2.HealthCheckResponse.SERVING, overall
    print("health: SERVING")
    return 0


if __name__ == "__main__":
    sys.exit(main())
