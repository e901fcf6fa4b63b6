//! How the recommender reaches the other roles: one trait per role, each
//! with an in-process implementation (the all-in-one process) and a gRPC one
//! (split deployments), so both topologies run the same pipeline.
//!
//! In-process generators and the in-process ranker run on the process's
//! bounded CPU pool ([`crate::cpu`]), never on an async worker, so each
//! call's deadline can fire while it works.
//! gRPC calls carry the deadline as `grpc-timeout`, and the role
//! credential ([`RoleCredential`]) when the deployment sets one.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
};
use watchnext_core::{
    event::{Event, FeatureVector, Source, Vote},
    generator::{Candidate, Generated, Generator},
    ids::VideoId,
    model::{TaskKind, TaskSpec},
    request::{Query, RankCandidate},
};
use watchnext_proto::v1 as pb;
use watchnext_ranker::Ranker;

use crate::cpu::CpuPool;

/// The `authorization: Bearer <role token>` header every call to another
/// role carries (none while no role token is configured). Shared with the
/// server's credentials, so a re-read token file reaches the clients too.
#[derive(Clone, Default)]
pub struct RoleCredential(Arc<ArcSwapOption<MetadataValue<Ascii>>>);

impl RoleCredential {
    /// A credential presenting `token` (none for an empty one).
    pub fn new(token: &str) -> Result<Self, String> {
        let me = Self::default();
        me.set(token)?;
        Ok(me)
    }

    /// Presents `token` from now on (none for an empty one).
    pub fn set(&self, token: &str) -> Result<(), String> {
        if token.is_empty() {
            self.0.store(None);
            return Ok(());
        }
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the role token must be printable ASCII without spaces".to_owned())?;
        self.0.store(Some(Arc::new(value)));
        Ok(())
    }

    /// Whether a token is presented.
    pub fn is_set(&self) -> bool {
        self.0.load().is_some()
    }
}

impl std::fmt::Debug for RoleCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RoleCredential").field(&if self.is_set() { "<redacted>" } else { "<unset>" }).finish()
    }
}

impl tonic::service::Interceptor for RoleCredential {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = self.0.load_full() {
            request.metadata_mut().insert("authorization", (*value).clone());
        }
        Ok(request)
    }
}

/// A channel to another role that presents the role credential.
/// Calls are spread over every replica of the role ([`crate::balance`]).
pub type RoleChannel = InterceptedService<crate::balance::Balanced, RoleCredential>;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Why a generator gave no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateFailure {
    /// It cannot answer at all yet (no trained model): a state of the
    /// deployment, not a fault — the response is not flagged degraded.
    NotReady(String),
    /// It failed or could not be reached: the response is flagged degraded.
    Failed(String),
    /// It was too busy to take the call (a full CPU pool, a remote role
    /// shedding load): flagged degraded; when every generator is, the
    /// request is RESOURCE_EXHAUSTED.
    Overloaded(String),
    /// A remote generator could not be reached (UNAVAILABLE: no replica up,
    /// connection refused or reset): flagged degraded; when every generator
    /// is unreachable or busy, the request is UNAVAILABLE (retry).
    Unreachable(String),
}

/// How many times a remote Generate or Rank lost in transport (see
/// [`crate::balance::is_transport_failure`]) is sent again, each time to a
/// replica the balancer picks anew, within the call's deadline. Two: a
/// call whose answer was cut mid-body leaves its dead replica not yet
/// marked down, so the first retry can pick it again (and mark it); the
/// second then goes to a live one.
const TRANSPORT_RETRIES: usize = 2;

/// A candidate generator, local or remote.
pub trait GeneratorClient: Send + Sync + std::fmt::Debug {
    fn source(&self) -> Source;
    /// At most `max` candidates, or why there are none.
    fn generate(
        &self,
        query: Arc<Query>,
        max: usize,
        timeout: Duration,
    ) -> BoxFuture<Result<Generated, GenerateFailure>>;
}

/// What the ranker returned, with what the combiner needs to know of each task.
#[derive(Debug, Clone)]
pub struct Ranked {
    pub model_version: String,
    pub tasks: Vec<TaskSpec>,
    /// `candidates × tasks`, in candidate order.
    pub predictions: Vec<f32>,
    /// The features each candidate was scored with.
    pub features: RankedFeatures,
}

/// The features of a ranked list: flat from an in-process ranker, one
/// vector per candidate from a remote one.
#[derive(Debug, Clone, Default)]
pub enum RankedFeatures {
    #[default]
    None,
    Flat {
        schema_hash: String,
        dense: Vec<f32>,
        sparse: Vec<i64>,
    },
    PerCandidate(Vec<Option<FeatureVector>>),
}

impl RankedFeatures {
    /// The features of candidate `i` (taken out of a per-candidate list).
    pub fn take(&mut self, i: usize) -> Option<FeatureVector> {
        use watchnext_core::features::{DENSE_LEN, SPARSE_LEN};
        match self {
            Self::None => None,
            Self::Flat { schema_hash, dense, sparse } => Some(FeatureVector {
                schema_hash: schema_hash.clone(),
                dense: dense.get(i * DENSE_LEN..(i + 1) * DENSE_LEN)?.to_vec(),
                sparse: sparse.get(i * SPARSE_LEN..(i + 1) * SPARSE_LEN)?.to_vec(),
            }),
            Self::PerCandidate(v) => v.get_mut(i).and_then(Option::take),
        }
    }
}

/// The ranker, local or remote.
pub trait RankerClient: Send + Sync + std::fmt::Debug {
    fn rank(
        &self,
        query: Query,
        candidates: Arc<Vec<RankCandidate>>,
        model_version: String,
        timeout: Duration,
    ) -> BoxFuture<Result<Ranked, String>>;
    /// The tasks of the model serving now, when known without a call.
    fn tasks(&self) -> Option<Vec<String>>;
}

/// Where impressions go: the feedback log, local or remote.
pub trait ImpressionSink: Send + Sync + std::fmt::Debug {
    /// Resolves once the events are durable.
    fn record(&self, events: Vec<Event>) -> BoxFuture<Result<(), String>>;
}

/// A generator in this process, run on the process's CPU pool.
#[derive(Debug, Clone)]
pub struct LocalGenerator(pub Arc<dyn Generator>, pub Arc<CpuPool>);

impl GeneratorClient for LocalGenerator {
    fn source(&self) -> Source {
        self.0.source()
    }

    /// Runs `generate` on the CPU pool, so that the caller's deadline can
    /// fire while it works (the sequence generator encodes the history and
    /// searches its index: milliseconds, not the microseconds of a lookup).
    fn generate(
        &self,
        query: Arc<Query>,
        max: usize,
        timeout: Duration,
    ) -> BoxFuture<Result<Generated, GenerateFailure>> {
        let g = self.0.clone();
        if let Err(why) = g.precondition() {
            return Box::pin(async move { Err(GenerateFailure::NotReady(why)) });
        }
        let job = self.1.run_within(timeout, move || g.generate(&query, max));
        Box::pin(async move {
            job.await.map_err(|e| match e {
                crate::cpu::PoolError::Busy { .. } | crate::cpu::PoolError::TooLate { .. } => {
                    GenerateFailure::Overloaded(e.to_string())
                }
                _ => GenerateFailure::Failed(e.to_string()),
            })
        })
    }
}

/// The ranker in this process, run on the process's CPU pool.
#[derive(Debug, Clone)]
pub struct LocalRanker(pub Arc<Ranker>, pub Arc<CpuPool>);

impl RankerClient for LocalRanker {
    fn rank(
        &self,
        query: Query,
        candidates: Arc<Vec<RankCandidate>>,
        model_version: String,
        timeout: Duration,
    ) -> BoxFuture<Result<Ranked, String>> {
        let ranker = self.0.clone();
        let work = move || {
            let version = (!model_version.is_empty()).then_some(model_version.as_str());
            let model = ranker.model(version).map_err(|e| e.to_string())?;
            let scored = ranker.rank(&query, &candidates, Some(&model.version)).map_err(|e| e.to_string())?;
            Ok(Ranked {
                model_version: scored.model_version,
                tasks: model.manifest.tasks.clone(),
                predictions: scored.predictions,
                features: RankedFeatures::Flat {
                    schema_hash: scored.schema_hash,
                    dense: scored.dense,
                    sparse: scored.sparse,
                },
            })
        };
        // Milliseconds of CPU: on the bounded CPU pool, never on an async
        // worker; a full pool refuses at once (the list falls back to the
        // fused order, flagged degraded).
        let job = self.1.run_within(timeout, work);
        Box::pin(async move { job.await.map_err(|e| format!("ranker: {e}"))? })
    }

    fn tasks(&self) -> Option<Vec<String>> {
        self.0.active().map(|m| m.tasks.clone())
    }
}

/// The event stream this process writes to itself: the embedded log it
/// owns, or NATS JetStream. Impressions' ids come from their content
/// (request id and position make each one unique).
#[derive(Debug, Clone)]
pub struct LocalLog(pub watchnext_feedback::SharedStream);

impl ImpressionSink for LocalLog {
    fn record(&self, events: Vec<Event>) -> BoxFuture<Result<(), String>> {
        let ids = events.iter().map(Event::content_id).collect();
        let append = self.0.append(events, ids);
        Box::pin(async move { append.await.map(|_| ()).map_err(|e| e.to_string()) })
    }
}

fn request_parts(query: &Query) -> (Vec<pb::HistoryItem>, pb::RequestContext) {
    let history = query.history.to_proto();
    let context = pb::RequestContext {
        request_time_ms: query.context.time_ms,
        utc_offset_minutes: query.context.utc_offset_minutes,
        ..Default::default()
    };
    (history, context)
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Sends `message` through `send` under `timeout`; when the call was lost
/// in transport (the replica died, see
/// [`crate::balance::is_transport_failure`]) sends it again, up to
/// [`TRANSPORT_RETRIES`] times, each to a replica the balancer picks anew,
/// within what is left of the same deadline.
async fn send_retrying_lost<M, R, F, Fut>(message: M, timeout: Duration, send: F) -> Result<R, tonic::Status>
where
    M: Clone,
    F: Fn(tonic::Request<M>) -> Fut,
    Fut: std::future::Future<Output = Result<R, tonic::Status>>,
{
    let started = std::time::Instant::now();
    let mut answer = send(with_timeout(message.clone(), timeout)).await;
    for _ in 0..TRANSPORT_RETRIES {
        let Err(status) = &answer else { break };
        let Some(left) = timeout.checked_sub(started.elapsed()) else { break };
        if !crate::balance::is_transport_failure(status) {
            break;
        }
        answer = send(with_timeout(message.clone(), left)).await;
    }
    answer
}

/// A generator role reached over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteGenerator {
    pub source: Source,
    pub client: pb::candidate_generator_client::CandidateGeneratorClient<RoleChannel>,
}

impl GeneratorClient for RemoteGenerator {
    fn source(&self) -> Source {
        self.source
    }

    fn generate(
        &self,
        query: Arc<Query>,
        max: usize,
        timeout: Duration,
    ) -> BoxFuture<Result<Generated, GenerateFailure>> {
        let client = self.client.clone();
        let source = self.source;
        Box::pin(async move {
            let (recent_history, context) = request_parts(&query);
            let message = pb::GenerateRequest {
                request_id: query.request_id.as_str().to_owned(),
                user_id: query.user.as_str().to_owned(),
                query_video_id: query.query_video.as_str().to_owned(),
                device: query.device.to_proto() as i32,
                recent_history,
                context: Some(context),
                max_candidates: u32::try_from(max).unwrap_or(u32::MAX),
                generator: source as i32,
            };
            let response = send_retrying_lost(message, timeout, |request| {
                let mut client = client.clone();
                async move { client.generate(request).await }
            })
            .await
            .map_err(|s| {
                let why = format!("{:?}: {}", s.code(), s.message());
                if s.code() == tonic::Code::FailedPrecondition {
                    GenerateFailure::NotReady(why)
                } else if s.code() == tonic::Code::ResourceExhausted {
                    GenerateFailure::Overloaded(why)
                } else if s.code() == tonic::Code::Unavailable {
                    GenerateFailure::Unreachable(why)
                } else {
                    GenerateFailure::Failed(why)
                }
            })?;
            let r = response.into_inner();
            Ok(Generated {
                candidates: r
                    .candidates
                    .into_iter()
                    .filter_map(|c| {
                        VideoId::parse("video_id", &c.video_id).ok().map(|video| Candidate { video, score: c.score })
                    })
                    .collect(),
                note: r.note,
                version: r.index_version,
            })
        })
    }
}

/// The ranker role reached over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteRanker(pub pb::ranker_client::RankerClient<RoleChannel>);

impl RankerClient for RemoteRanker {
    fn rank(
        &self,
        query: Query,
        candidates: Arc<Vec<RankCandidate>>,
        model_version: String,
        timeout: Duration,
    ) -> BoxFuture<Result<Ranked, String>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (recent_history, context) = request_parts(&query);
            let n = candidates.len();
            let message = pb::RankRequest {
                request_id: query.request_id.as_str().to_owned(),
                user_id: query.user.as_str().to_owned(),
                query_video_id: query.query_video.as_str().to_owned(),
                device: query.device.to_proto() as i32,
                context: Some(context),
                recent_history,
                candidates: candidates
                    .iter()
                    .map(|c| pb::RankCandidate {
                        video_id: c.video.as_str().to_owned(),
                        sources: c.sources.iter().map(Vote::to_proto).collect(),
                    })
                    .collect(),
                model_version,
                return_features: true,
            };
            let answer = send_retrying_lost(message, timeout, |request| {
                let mut client = client.clone();
                async move { client.rank(request).await }
            })
            .await;
            let r = answer.map_err(|s| format!("{:?}: {}", s.code(), s.message()))?.into_inner();
            let t = r.tasks.len();
            if r.scores.len() != n || r.scores.iter().any(|s| s.predictions.len() != t) || r.task_info.len() != t {
                return Err(format!(
                    "the ranker answered {} rows for {n} candidates, or malformed rows",
                    r.scores.len()
                ));
            }
            let tasks = r
                .task_info
                .iter()
                .map(|i| TaskSpec {
                    name: i.name.clone(),
                    kind: if i.binary { TaskKind::Binary } else { TaskKind::Regression },
                    transform: i.transform.clone(),
                    combiner_weight: i.default_weight,
                    debiased: false,
                })
                .collect();
            let mut predictions = Vec::with_capacity(n * t);
            let mut features = Vec::with_capacity(n);
            for s in r.scores {
                predictions.extend_from_slice(&s.predictions);
                features.push(s.features.map(|f| FeatureVector {
                    schema_hash: f.schema_hash,
                    dense: f.dense,
                    sparse: f.sparse,
                }));
            }
            Ok(Ranked {
                model_version: r.model_version,
                tasks,
                predictions,
                features: RankedFeatures::PerCandidate(features),
            })
        })
    }

    fn tasks(&self) -> Option<Vec<String>> {
        None
    }
}

/// The feedback role reached over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteFeedback(pub pb::feedback_client::FeedbackClient<RoleChannel>);

impl ImpressionSink for RemoteFeedback {
    fn record(&self, events: Vec<Event>) -> BoxFuture<Result<(), String>> {
        let mut client = self.0.clone();
        Box::pin(async move {
            let message = pb::RecordRequest { events: events.iter().map(Event::to_proto).collect() };
            client.record(message).await.map(|_| ()).map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        })
    }
}
