//! Three hostile clients at once against a running server, for as long as
//! asked, to measure what a well-behaved client sees meanwhile (RELIABILITY.md):
//!
//! - **slow bodies**: connections full of `Record` calls whose body never
//!   finishes (a 5-byte gRPC prefix announcing 100 bytes that never come);
//!   each call is opened again when the server answers it;
//! - **unread tails**: `Feedback.Tail` streams from the start of the log,
//!   opened until the server refuses more, never read;
//! - **oversized events**: 4 MB impressions sent to `Record` in a loop,
//!   ignoring the server's RESOURCE_EXHAUSTED "retry in" hints.
//!
//! ```sh
//! cargo run --release -p watchnext-integration-tests --example hostile -- 127.0.0.1:50051 60 [slow,tails,oversized]
//! ```
//! The third argument picks the attacks (all three by default).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use watchnext_proto::v1::{self as pb, RecordRequest, TailRequest, feedback_client::FeedbackClient};

const SLOW_CONNECTIONS: usize = 4;
const SLOW_STREAMS_PER_CONNECTION: usize = 200;

async fn channel(addr: &str) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?)
}

/// One connection kept full of calls whose bodies never finish.
async fn slow_bodies(addr: String, answered: Arc<AtomicU64>) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let (h2, driver) = h2::client::handshake(tcp).await?;
    tokio::spawn(driver);
    let mut calls = tokio::task::JoinSet::new();
    loop {
        while calls.len() < SLOW_STREAMS_PER_CONNECTION {
            let request = http::Request::post(format!("http://{addr}/watchnext.v1.Feedback/Record"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())?;
            let mut ready = h2.clone().ready().await?;
            let (response, mut body) = ready.send_request(request, false)?;
            // The server may already have answered (a rate-limited client is
            // refused before its body is read) and closed the stream.
            let _ = body.send_data(Bytes::from_static(&[0, 0, 0, 0, 100]), false);
            calls.spawn(async move {
                let _keep_open = body;
                let _ = response.await;
            });
        }
        if calls.join_next().await.is_some() {
            answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Tail streams opened until refused, never read; returns how many.
async fn unread_tails(addr: &str) -> anyhow::Result<Vec<tonic::Streaming<pb::TailResponse>>> {
    let mut client = FeedbackClient::new(channel(addr).await?);
    let mut open = Vec::new();
    while open.len() < 10_000 {
        match client.tail(TailRequest { from_sequence: 1, max_batch: 0 }).await {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => break,
            Err(status) => anyhow::bail!("Tail failed: {status}"),
        }
    }
    Ok(open)
}

/// 4 MB impressions in a loop, counting those refused after being read
/// (INVALID_ARGUMENT) and those refused by the client's rate limit
/// (RESOURCE_EXHAUSTED).
async fn oversized(addr: String, refused: Arc<AtomicU64>, limited: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut client = FeedbackClient::new(channel(&addr).await?)
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let huge = pb::FeedbackEvent {
        user_id: "attacker".into(),
        video_id: "v".into(),
        event: Some(pb::feedback_event::Event::Impression(pb::Impression {
            position: 1,
            features: Some(pb::FeatureVector { dense: vec![0.5; 1_000_000], ..Default::default() }),
            ..Default::default()
        })),
        ..Default::default()
    };
    loop {
        match client.record(RecordRequest { events: vec![huge.clone()] }).await {
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                limited.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => anyhow::bail!("unexpected answer to an oversized event: {status}"),
            Ok(_) => anyhow::bail!("the server accepted a 4 MB event"),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:50051".into());
    let seconds: u64 = args.next().map_or(Ok(60), |s| s.parse())?;
    let which = args.next().unwrap_or_else(|| "slow,tails,oversized".into());
    let on = |name: &str| which.split(',').any(|w| w == name);
    let (answered, refused, limited) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tails = if on("tails") { unread_tails(&addr).await? } else { Vec::new() };
    println!("hostile: {} unread Tail streams open", tails.len());
    let mut attacks = tokio::task::JoinSet::new();
    if on("slow") {
        for _ in 0..SLOW_CONNECTIONS {
            attacks.spawn(slow_bodies(addr.clone(), answered.clone()));
        }
        println!(
            "hostile: {} stalled-body calls on {SLOW_CONNECTIONS} connections",
            SLOW_CONNECTIONS * SLOW_STREAMS_PER_CONNECTION
        );
    }
    if on("oversized") {
        attacks.spawn(oversized(addr.clone(), refused.clone(), limited.clone()));
        println!("hostile: 4 MB events in a loop");
    }
    println!("hostile: for {seconds} s");
    let started = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(seconds));
    tokio::select! {
        () = deadline => {}
        Some(result) = attacks.join_next() => result??,
        () = std::future::pending::<()>(), if attacks.is_empty() => {}
    }
    println!(
        "hostile: {:.0} s; stalled calls timed out by the server: {}; oversized events refused after reading: \
         {}, refused unread by the rate limit: {}",
        started.elapsed().as_secs_f64(),
        answered.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed)
    );
    drop(tails);
    Ok(())
}
