//! `watchnext.v1.Recommender`: the front door (the pipeline lives in
//! `watchnext_recommender`). The client's deadline (`grpc-timeout`) bounds
//! the fan-out and the ranker call.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use watchnext_core::{event::Vote, request::Query};
use watchnext_proto::v1::{
    RecommendRequest, RecommendResponse, RecommendedItem, recommender_server::Recommender as RecommenderApi,
};
use watchnext_recommender::{RecommendError, Recommender};

/// Serves `Recommend`.
#[derive(Debug)]
pub struct RecommenderService {
    recommender: Arc<Recommender>,
    max_results: u32,
}

impl RecommenderService {
    pub fn new(recommender: Arc<Recommender>, max_results: u32) -> Self {
        Self { recommender, max_results }
    }
}

/// The `grpc-timeout` header as a duration (`100m`, `2S`, `500u`…).
pub fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    crate::middleware::parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)
}

#[tonic::async_trait]
impl RecommenderApi for RecommenderService {
    async fn recommend(&self, request: Request<RecommendRequest>) -> Result<Response<RecommendResponse>, Status> {
        let (query, n) = Query::from_recommend(request.get_ref(), self.max_results, super::now_ms())?;
        let request_id = query.request_id.as_str().to_owned();
        let deadline = grpc_timeout(request.metadata());
        let arm = request.get_ref().experiment_arm.clone();
        let r = self.recommender.recommend(query, n, &arm, deadline).await.map_err(|e| match e {
            RecommendError::Invalid(m) => Status::invalid_argument(m),
            RecommendError::Overloaded(_) => Status::resource_exhausted(format!("{e}; retry with backoff")),
            RecommendError::Unavailable(_) => Status::unavailable(format!("{e}; retry with backoff")),
            RecommendError::NoSources(_) | RecommendError::NoCandidates(_) => {
                Status::failed_precondition(e.to_string())
            }
        })?;
        Ok(Response::new(RecommendResponse {
            request_id,
            items: r
                .items
                .into_iter()
                .map(|item| RecommendedItem {
                    video_id: item.video.as_str().to_owned(),
                    position: item.position,
                    score: item.score,
                    task_predictions: item.predictions.into_iter().collect(),
                    sources: item.sources.iter().map(Vote::to_proto).collect(),
                })
                .collect(),
            model_version: r.model_version,
            experiment_arm: r.arm,
            degraded: !r.degraded_reasons.is_empty(),
            degraded_reasons: r.degraded_reasons,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        for (text, d) in
            [("250m", Duration::from_millis(250)), ("2S", Duration::from_secs(2)), ("7u", Duration::from_micros(7))]
        {
            m.insert("grpc-timeout", text.parse().unwrap());
            assert_eq!(grpc_timeout(&m), Some(d), "{text}");
        }
        m.insert("grpc-timeout", "12x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }
}
