//! The fixed cost of one unary gRPC call to a watchnext server over loopback
//! (tonic + our middleware: load shedding and metrics), next to the cost of
//! validating the same request in-process. Every later latency budget sits
//! on top of this floor.

use criterion::{Criterion, criterion_group, criterion_main};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use watchnext_core::request::Query;
use watchnext_proto::v1::{RecommendRequest, recommender_client::RecommenderClient};
use watchnext_testkit::TestServer;

fn request() -> RecommendRequest {
    RecommendRequest {
        user_id: "user-42".into(),
        query_video_id: "video-7".into(),
        num_results: 20,
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let server = rt.block_on(TestServer::all_in_one()).expect("server");
    let channel = server.channel.clone();

    let mut group = c.benchmark_group("grpc_overhead");
    group.bench_function("validate_recommend_in_process", |b| {
        let req = request();
        b.iter(|| Query::from_recommend(std::hint::black_box(&req), 100, 0).expect("valid"));
    });
    group.bench_function("health_check_loopback", |b| {
        let client = HealthClient::new(channel.clone());
        b.to_async(&rt).iter(|| {
            let mut client = client.clone();
            async move { client.check(HealthCheckRequest { service: String::new() }).await.expect("health") }
        });
    });
    group.bench_function("recommend_rejected_loopback", |b| {
        let client = RecommenderClient::new(channel.clone());
        b.to_async(&rt).iter(|| {
            let mut client = client.clone();
            async move { client.recommend(request()).await.expect_err("no machinery yet") }
        });
    });
    group.finish();
    rt.block_on(server.stop()).expect("stop");
}

criterion_group!(benches, bench);
criterion_main!(benches);
