//! Where a Recommend spent its time, as seen from outside: `watchnext
//! loadtest` scrapes each process's `GET /metrics` before and after its
//! measured window and turns the difference of the
//! `watchnext_stage_seconds{stage}` histograms ([`watchnext_core::stages`])
//! into one row per stage — calls, mean, p50 and p99 — beside the
//! whole server-side `Recommend` (`watchnext_recommender_seconds`).
//!
//! Means are exact (sum ÷ count); the percentiles are read off the bucket
//! counts by linear interpolation inside the bucket that holds them, so they
//! are as fine as [`watchnext_core::stages::STAGE_BUCKETS`] (a p99 between
//! 5 and 7.5 ms reads as a value in between). A split deployment has stages
//! in several processes: pass every process's metrics address; the
//! histograms of one stage are summed over them.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use watchnext_core::stages::{STAGE_SECONDS, order};

/// The server-side Recommend histogram (the row the shares are of).
pub const RECOMMEND_SECONDS: &str = "watchnext_recommender_seconds";
/// The name of that row in a report.
pub const RECOMMEND_ROW: &str = "recommend (whole, server side)";

/// One histogram: upper bounds with cumulative counts, sum and count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Histogram {
    /// `self − earlier`, bucket by bucket (a restarted process, whose
    /// counts went down, gives its later values alone).
    fn since(&self, earlier: Option<&Histogram>) -> Histogram {
        let Some(e) = earlier.filter(|e| e.count <= self.count && e.buckets.len() == self.buckets.len()) else {
            return self.clone();
        };
        Histogram {
            buckets: self.buckets.iter().zip(&e.buckets).map(|(a, b)| (a.0, (a.1 - b.1).max(0.0))).collect(),
            sum: (self.sum - e.sum).max(0.0),
            count: self.count - e.count,
        }
    }

    fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets.clone_from(&other.buckets);
        } else if self.buckets.len() == other.buckets.len() {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.1 += b.1;
            }
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The `q`-quantile (0..1) in seconds, interpolated inside its bucket;
    /// `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > below {
                if le.is_infinite() {
                    // Past the last finite bound: the bound is all we know.
                    return Some(lower);
                }
                return Some(lower + (le - lower) * ((rank - below) / (cumulative - below)));
            }
            lower = le;
            below = cumulative;
        }
        Some(lower)
    }
}

/// Every histogram of interest in one scrape: stage (or [`RECOMMEND_ROW`])
/// → histogram.
pub type Scrape = BTreeMap<String, Histogram>;

/// Parses the Prometheus text format, keeping [`STAGE_SECONDS`] by its
/// `stage` label and [`RECOMMEND_SECONDS`].
pub fn parse(text: &str) -> Scrape {
    let mut out = Scrape::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
        };
        let (base, part) = if let Some(b) = name.strip_suffix("_bucket") {
            (b, "bucket")
        } else if let Some(b) = name.strip_suffix("_sum") {
            (b, "sum")
        } else if let Some(b) = name.strip_suffix("_count") {
            (b, "count")
        } else {
            continue;
        };
        let key = if base == STAGE_SECONDS {
            match label("stage") {
                Some(stage) => stage,
                None => continue,
            }
        } else if base == RECOMMEND_SECONDS {
            RECOMMEND_ROW.to_owned()
        } else {
            continue;
        };
        let h = out.entry(key).or_default();
        match part {
            "bucket" => {
                let Some(le) = label("le") else { continue };
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
                if le.is_nan() {
                    continue;
                }
                h.buckets.push((le, value));
            }
            "sum" => h.sum = value,
            _ => h.count = value,
        }
    }
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// `GET http://{addr}/metrics` over plain HTTP/1.1 (the metrics listener
/// is a loopback or cluster-internal port).
pub async fn fetch(addr: &str, timeout: Duration) -> anyhow::Result<String> {
    let host = addr.trim_start_matches("http://").trim_end_matches('/').trim_end_matches("/metrics");
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw =
        tokio::time::timeout(timeout, get).await.map_err(|_| anyhow::anyhow!("{host}: no answer in {timeout:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("{host}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or("");
    anyhow::ensure!(status.split(' ').nth(1) == Some("200"), "{host}: {status}");
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok(if chunked { dechunk(body) } else { body.to_owned() })
}

/// The body of a chunked transfer encoding.
fn dechunk(mut body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Scrapes every address and sums the histograms of each stage.
pub async fn scrape_all(addrs: &[String]) -> anyhow::Result<Scrape> {
    let mut total = Scrape::new();
    for addr in addrs {
        let text = fetch(addr, Duration::from_secs(5)).await?;
        for (k, h) in parse(&text) {
            total.entry(k).or_default().add(&h);
        }
    }
    Ok(total)
}

/// One stage's time over a measured window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageTime {
    pub stage: String,
    pub calls: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Total time in this stage ÷ total server-side Recommend time (stages
    /// run in parallel — the generators — or inside another — features and
    /// onnx inside rank — so the shares do not add up to 1).
    pub share_of_recommend: f64,
}

/// The stages between two scrapes, in request order, the whole Recommend last.
pub fn between(before: &Scrape, after: &Scrape) -> Vec<StageTime> {
    let deltas: BTreeMap<&str, Histogram> =
        after.iter().map(|(k, h)| (k.as_str(), h.since(before.get(k)))).filter(|(_, h)| h.count > 0.0).collect();
    let whole = deltas.get(RECOMMEND_ROW).map_or(0.0, |h| h.sum);
    let row = |name: &str, h: &Histogram| StageTime {
        stage: name.to_owned(),
        calls: h.count.round() as u64,
        mean_ms: h.sum / h.count * 1e3,
        p50_ms: h.quantile(0.5).unwrap_or(0.0) * 1e3,
        p99_ms: h.quantile(0.99).unwrap_or(0.0) * 1e3,
        share_of_recommend: if whole > 0.0 { h.sum / whole } else { 0.0 },
    };
    let mut rows: Vec<StageTime> = order().filter_map(|s| deltas.get(s).map(|h| row(s, h))).collect();
    rows.extend(
        deltas.iter().filter(|(k, _)| !order().any(|s| s == **k) && **k != RECOMMEND_ROW).map(|(k, h)| row(k, h)),
    );
    if let Some(h) = deltas.get(RECOMMEND_ROW) {
        rows.push(row(RECOMMEND_ROW, h));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE watchnext_stage_seconds histogram
watchnext_stage_seconds_bucket{stage="onnx",le="0.001"} 0
watchnext_stage_seconds_bucket{stage="onnx",le="0.002"} 10
watchnext_stage_seconds_bucket{stage="onnx",le="+Inf"} 10
watchnext_stage_seconds_sum{stage="onnx"} 0.015
watchnext_stage_seconds_count{stage="onnx"} 10
watchnext_recommender_seconds_bucket{le="0.005"} 10
watchnext_recommender_seconds_bucket{le="+Inf"} 10
watchnext_recommender_seconds_sum 0.03
watchnext_recommender_seconds_count 10
watchnext_grpc_requests_total{rpc="/x",code="Ok"} 3
"#;

    const AFTER: &str = r#"watchnext_stage_seconds_bucket{stage="onnx",le="0.001"} 0
watchnext_stage_seconds_bucket{stage="onnx",le="0.002"} 60
watchnext_stage_seconds_bucket{stage="onnx",le="+Inf"} 110
watchnext_stage_seconds_sum{stage="onnx"} 0.215
watchnext_stage_seconds_count{stage="onnx"} 110
watchnext_stage_seconds_bucket{stage="merge",le="0.001"} 4
watchnext_stage_seconds_bucket{stage="merge",le="0.002"} 4
watchnext_stage_seconds_bucket{stage="merge",le="+Inf"} 4
watchnext_stage_seconds_sum{stage="merge"} 0.002
watchnext_stage_seconds_count{stage="merge"} 4
watchnext_recommender_seconds_bucket{le="0.005"} 60
watchnext_recommender_seconds_bucket{le="+Inf"} 110
watchnext_recommender_seconds_sum 0.43
watchnext_recommender_seconds_count 110
"#;

    #[test]
    fn differences_of_two_scrapes_give_each_stage_its_window() {
        let rows = between(&parse(BEFORE), &parse(AFTER));
        let names: Vec<&str> = rows.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(names, ["merge", "onnx", RECOMMEND_ROW], "request order, the whole last");
        let onnx = &rows[1];
        assert_eq!(onnx.calls, 100);
        assert!((onnx.mean_ms - 2.0).abs() < 1e-9, "{onnx:?}");
        // 50 of 100 in (1, 2] ms: the median is the top of that bucket.
        assert!((onnx.p50_ms - 2.0).abs() < 1e-9, "{onnx:?}");
        // The p99 is past the last finite bound: reported as that bound.
        assert!((onnx.p99_ms - 2.0).abs() < 1e-9, "{onnx:?}");
        assert!((onnx.share_of_recommend - 0.5).abs() < 1e-9, "0.2 s of 0.4 s: {onnx:?}");
        let merge = &rows[0];
        assert_eq!(merge.calls, 4, "a stage new since the first scrape counts whole");
        assert!((merge.p50_ms - 0.5).abs() < 1e-9, "half-way into (0, 1] ms: {merge:?}");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h =
            Histogram { buckets: vec![(0.001, 10.0), (0.003, 30.0), (f64::INFINITY, 30.0)], sum: 0.05, count: 30.0 };
        // The 15th of 30 is the 5th of the 20 in (1, 3] ms: a quarter into it.
        assert!((h.quantile(0.5).expect("observed") - 0.0015).abs() < 1e-12);
        assert!((h.quantile(1.0 / 6.0).expect("observed") - 0.0005).abs() < 1e-12);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }

    #[tokio::test]
    async fn fetch_reads_a_real_metrics_endpoint() {
        crate::telemetry::prometheus();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::telemetry::serve_metrics(listener, async {
            let _ = stopped.await;
        }));
        metrics::histogram!(STAGE_SECONDS, "stage" => "fetch_test").record(0.004);
        let text = fetch(&addr.to_string(), Duration::from_secs(5)).await.expect("scrape");
        let scrape = parse(&text);
        let h = scrape.get("fetch_test").expect("the stage recorded above");
        assert!(h.count >= 1.0 && h.sum >= 0.004, "{h:?}");
        let _ = stop.send(());
        server.await.expect("join").expect("serve");
    }
}
