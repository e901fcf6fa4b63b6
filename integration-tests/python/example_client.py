"""A watchnext client in Python, as an application would write one.

The stubs are generated from the repository's proto/ with grpcio-tools into a
temporary folder at start-up (nothing generated is kept in the repository);
an application would generate them once at build time the same way:

    python -m grpc_tools.protoc -Iproto --python_out=OUT --grpc_python_out=OUT \\
        watchnext/v1/common.proto watchnext/v1/recommender.proto watchnext/v1/feedback.proto

Usage: example_client.py HOST:PORT USER_ID QUERY_VIDEO_ID

Asks Recommend for a watch-next list, prints it, reports a click and a watch
of the first item through Feedback.Record, and shows the status a bad request
gets. Exits non-zero on any unexpected answer.
"""

import importlib.resources
import pathlib
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[2] / "proto"
PROTOS = ["watchnext/v1/common.proto", "watchnext/v1/recommender.proto", "watchnext/v1/feedback.proto"]


def generate_stubs(out: str) -> None:
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + PROTOS) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)


def main() -> int:
    target, user, video = sys.argv[1], sys.argv[2], sys.argv[3]
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(out)
        from watchnext.v1 import common_pb2, feedback_pb2, feedback_pb2_grpc, recommender_pb2, recommender_pb2_grpc

        channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(channel).result(timeout=10)
        recommender = recommender_pb2_grpc.RecommenderStub(channel)
        feedback = feedback_pb2_grpc.FeedbackStub(channel)

        request = recommender_pb2.RecommendRequest(
            user_id=user,
            query_video_id=video,
            device=common_pb2.DEVICE_TYPE_PHONE,
            num_results=5,
        )
        response = recommender.Recommend(request, timeout=10)
        print(f"request {response.request_id}: model {response.model_version or 'none'}, "
              f"arm {response.experiment_arm}, degraded {response.degraded}")
        for item in response.items:
            sources = "+".join(common_pb2.CandidateSource.Name(s.source) for s in item.sources)
            tasks = ", ".join(f"{k} {v:.3f}" for k, v in sorted(item.task_predictions.items()))
            print(f"  {item.position}. {item.video_id} score {item.score:.4f} [{sources}] {tasks}")
        assert len(response.items) == 5, response
        assert [i.position for i in response.items] == [1, 2, 3, 4, 5]

        first = response.items[0]
        now = int(time.time() * 1000)
        events = [
            feedback_pb2.FeedbackEvent(
                request_id=response.request_id, user_id=user, video_id=first.video_id, timestamp_ms=now,
                device=common_pb2.DEVICE_TYPE_PHONE, click=feedback_pb2.Click()),
            feedback_pb2.FeedbackEvent(
                request_id=response.request_id, user_id=user, video_id=first.video_id, timestamp_ms=now + 1000,
                device=common_pb2.DEVICE_TYPE_PHONE,
                watch=feedback_pb2.Watch(seconds_watched=120.0, video_duration_seconds=300.0)),
        ]
        ack = feedback.Record(feedback_pb2.RecordRequest(events=events), timeout=10)
        print(f"feedback: {ack.accepted} events durable, last sequence {ack.last_sequence}")
        assert ack.accepted == 2

        try:
            recommender.Recommend(recommender_pb2.RecommendRequest(user_id=user, query_video_id=video, num_results=0))
        except grpc.RpcError as err:
            print(f"num_results=0: {err.code().name}: {err.details()}")
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("num_results=0 was accepted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
