//! `watchnext.v1.Ranker`: point-wise multitask ranking. Scoring runs on the
//! blocking pool (it takes milliseconds of CPU), never on an async worker.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use watchnext_core::{model::TaskKind, request::Query};
use watchnext_proto::v1::{
    CandidateScores, FeatureVector, RankRequest, RankResponse, TaskInfo, ranker_server::Ranker as RankerApi,
};
use watchnext_ranker::{RankError, Ranker};

/// Serves `Rank`.
#[derive(Debug)]
pub struct RankerService {
    ranker: Arc<Ranker>,
    max_candidates: u32,
    /// Where the model runs (never on an async worker).
    pool: Arc<watchnext_recommender::cpu::CpuPool>,
}

impl RankerService {
    pub fn new(ranker: Arc<Ranker>, max_candidates: u32, pool: Arc<watchnext_recommender::cpu::CpuPool>) -> Self {
        Self { ranker, max_candidates, pool }
    }
}

/// The gRPC status of a ranking failure.
pub fn status_of(err: RankError) -> Status {
    match err {
        RankError::NoModel | RankError::NoPrevious => Status::failed_precondition(err.to_string()),
        RankError::UnknownVersion(..) => Status::not_found(err.to_string()),
        RankError::Model { .. } => Status::failed_precondition(err.to_string()),
        RankError::Config { .. } | RankError::Run(_) => Status::internal(err.to_string()),
        RankError::Withdrawn => Status::cancelled(err.to_string()),
    }
}

#[tonic::async_trait]
impl RankerApi for RankerService {
    async fn rank(&self, request: Request<RankRequest>) -> Result<Response<RankResponse>, Status> {
        let (query, candidates) = Query::from_rank(request.get_ref(), self.max_candidates, super::now_ms())?;
        let version = request.get_ref().model_version.clone();
        let with_features = request.get_ref().return_features;
        let ranker = self.ranker.clone();
        // The caller's deadline: a queue that would outlast it refuses at once.
        let limit = super::recommender::grpc_timeout(request.metadata()).unwrap_or(Duration::MAX);
        let (scored, model) = self
            .pool
            .run_within(limit, move || {
                let model = ranker.model(Some(&version))?;
                let scored = ranker.rank(&query, &candidates, Some(&model.version))?;
                Ok::<_, RankError>((scored, model))
            })
            .await
            .map_err(super::pool_status)?
            .map_err(status_of)?;
        let scores = request
            .get_ref()
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| CandidateScores {
                video_id: c.video_id.clone(),
                predictions: scored.row(i).to_vec(),
                features: with_features.then(|| {
                    let f = scored.feature_vector(i);
                    FeatureVector { schema_hash: f.schema_hash, dense: f.dense, sparse: f.sparse }
                }),
            })
            .collect();
        let task_info = model
            .manifest
            .tasks
            .iter()
            .map(|t| TaskInfo {
                name: t.name.clone(),
                binary: t.kind == TaskKind::Binary,
                transform: t.transform.clone(),
                default_weight: t.combiner_weight,
            })
            .collect();
        Ok(Response::new(RankResponse { model_version: scored.model_version, tasks: scored.tasks, scores, task_info }))
    }
}
