//! The foundation's contract, checked against the all-in-one server over
//! loopback gRPC: health for every service, reflection in both versions,
//! documented status codes for malformed and unauthenticated calls, and the
//! Prometheus endpoint.

use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use watchnext_proto::v1::{
    self as pb, FeedbackEvent, GenerateRequest, RankCandidate, RankRequest, RecommendRequest, RecordRequest,
    SetCombinerWeightsRequest, StatusRequest, feedback_event::Event,
};
use watchnext_testkit::{TestServer, scrape_metrics, with_admin_token, with_bearer};

fn recommend(user: &str, video: &str, n: u32) -> RecommendRequest {
    RecommendRequest { user_id: user.into(), query_video_id: video.into(), num_results: n, ..Default::default() }
}

#[tokio::test]
async fn every_service_reports_health() {
    let server = TestServer::all_in_one().await.unwrap();
    let mut health = HealthClient::new(server.channel.clone());
    let overall = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    // Admin works (the test config has a token); the recommender serves
    // (its generators are here, even if they have no data yet); the ranker
    // and the generators report NOT_SERVING until they have a model or data,
    // and say why in Status.
    let expected = [
        ("watchnext.v1.Admin", ServingStatus::Serving),
        ("watchnext.v1.Recommender", ServingStatus::Serving),
        ("watchnext.v1.Ranker", ServingStatus::NotServing),
        ("watchnext.v1.Feedback", ServingStatus::Serving),
        ("watchnext.v1.CandidateGenerator", ServingStatus::NotServing),
        ("watchnext.v1.CandidateGenerator/topic", ServingStatus::NotServing),
        ("watchnext.v1.CandidateGenerator/cowatch", ServingStatus::NotServing),
        ("watchnext.v1.CandidateGenerator/sequence", ServingStatus::NotServing),
        ("watchnext.v1.CandidateGenerator/context", ServingStatus::NotServing),
    ];
    for (service, status) in expected {
        let got = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(got.status(), status, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let status = server.admin().status(with_admin_token(StatusRequest {})).await.unwrap().into_inner();
    assert_eq!(status.roles, ["all"]);
    assert_eq!(status.execution_provider, "cpu");
    let ranker = status.services.iter().find(|s| s.service == "watchnext.v1.Ranker").expect("ranker listed");
    assert!(!ranker.serving && ranker.detail.contains("model"), "{ranker:?}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_services_in_v1_and_v1alpha() {
    let server = TestServer::all_in_one().await.unwrap();
    let v1 = watchnext_server::health::list_services(server.channel.clone()).await.unwrap();
    for s in [
        "grpc.health.v1.Health",
        "watchnext.v1.Admin",
        "watchnext.v1.CandidateGenerator",
        "watchnext.v1.Feedback",
        "watchnext.v1.Ranker",
        "watchnext.v1.Recommender",
    ] {
        assert!(v1.contains(&s.to_owned()), "{s} missing from {v1:?}");
    }

    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(server.channel.clone());
    let requests = [
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("watchnext.v1.Recommender".into())),
        },
    ];
    let mut stream = client.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();
    match stream.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            assert!(list.service.iter().any(|s| s.name == "watchnext.v1.Recommender"), "{list:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    match stream.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            assert!(!files.file_descriptor_proto.is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_invalid_argument_naming_the_field() {
    let server = TestServer::all_in_one().await.unwrap();
    let mut rec = server.recommender();
    let cases = [
        (recommend("", "v1", 10), "user_id"),
        (recommend("u1", "", 10), "query_video_id"),
        (recommend("u1", "v1", 0), "num_results"),
        (recommend("u1", "v1", 1_000_000), "num_results"),
    ];
    for (request, field) in cases {
        let err = rec.recommend(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }

    let err = server
        .generator()
        .generate(GenerateRequest {
            query_video_id: String::new(),
            max_candidates: 10,
            generator: pb::CandidateSource::Topic as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("query_video_id"), "{}", err.message());

    let err = server
        .generator()
        .generate(GenerateRequest { query_video_id: "v1".into(), max_candidates: 10, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "all-in-one needs the generator named");
    assert!(err.message().contains("generator"), "{}", err.message());

    let err = server
        .ranker()
        .rank(RankRequest { user_id: "u1".into(), query_video_id: "v1".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("candidates"), "{}", err.message());

    let bad_position = FeedbackEvent {
        user_id: "u1".into(),
        video_id: "v1".into(),
        event: Some(Event::Impression(pb::Impression { position: 0, ..Default::default() })),
        ..Default::default()
    };
    let err = server.feedback().record(RecordRequest { events: vec![bad_position] }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("events[0].impression.position"), "{}", err.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn well_formed_calls_without_machinery_say_what_is_missing() {
    let server = TestServer::all_in_one().await.unwrap();
    let err = server.recommender().recommend(recommend("u1", "v1", 10)).await.unwrap_err();
    // An empty data folder: nothing to recommend, and the reasons say why.
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("no candidate") && err.message().contains("catalogue"), "{}", err.message());

    let rank = RankRequest {
        user_id: "u1".into(),
        query_video_id: "v1".into(),
        candidates: vec![RankCandidate { video_id: "v2".into(), sources: vec![] }],
        ..Default::default()
    };
    let err = server.ranker().rank(rank).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn admin_calls_need_the_bearer_token_before_anything_else() {
    let server = TestServer::all_in_one().await.unwrap();
    let mut admin = server.admin();
    let err = admin.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = admin.status(with_bearer(StatusRequest {}, "wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Even a malformed request is refused for the token first.
    let err = admin.set_combiner_weights(SetCombinerWeightsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // With the token, the same malformed request is judged on its content.
    let err = admin.set_combiner_weights(with_admin_token(SetCombinerWeightsRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(admin.status(with_admin_token(StatusRequest {})).await.is_ok());
    server.stop().await.unwrap();

    // No token configured: Admin is disabled, and says how to enable it.
    let server = TestServer::start(|c| c.admin.token.clear()).await.unwrap();
    let err = server.admin().status(with_bearer(StatusRequest {}, "")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("admin.token"), "{}", err.message());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_per_rpc_and_code() {
    let server = TestServer::all_in_one().await.unwrap();
    let mut rec = server.recommender();
    for _ in 0..3 {
        let _ = rec.recommend(recommend("", "v1", 10)).await;
    }
    let body = scrape_metrics(server.metrics_addr().expect("metrics enabled")).await.unwrap();
    let line = body
        .lines()
        .find(|l| {
            l.starts_with("watchnext_grpc_requests_total")
                && l.contains("/watchnext.v1.Recommender/Recommend")
                && l.contains("InvalidArgument")
        })
        .unwrap_or_else(|| panic!("no counter line in:\n{body}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(body.contains("watchnext_grpc_request_duration_seconds_bucket"), "latency histogram present");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn single_role_processes_serve_only_their_role() {
    let server =
        TestServer::start(|c| c.server.role = watchnext_core::Role::Generator(watchnext_core::event::Source::Topic))
            .await
            .unwrap();
    let services = watchnext_server::health::list_services(server.channel.clone()).await.unwrap();
    assert!(services.contains(&"watchnext.v1.CandidateGenerator".to_owned()));
    assert!(!services.contains(&"watchnext.v1.Ranker".to_owned()), "{services:?}");
    // A one-generator process accepts an unnamed generator; without a
    // catalogue it answers an empty list that says why, not an error.
    let answer = server
        .generator()
        .generate(GenerateRequest { query_video_id: "v1".into(), max_candidates: 5, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.generator, pb::CandidateSource::Topic as i32);
    assert!(answer.candidates.is_empty() && answer.note.contains("catalogue"), "{answer:?}");
    // ...and refuses one it does not host.
    let err = server
        .generator()
        .generate(GenerateRequest {
            query_video_id: "v1".into(),
            max_candidates: 5,
            generator: pb::CandidateSource::Cowatch as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = server.ranker().rank(RankRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "no Ranker in a topic process");
    server.stop().await.unwrap();
}
