//! `watchnext.v1.Recommender`: the front door.

use tonic::{Request, Response, Status};
use watchnext_core::request::Query;
use watchnext_proto::v1::{RecommendRequest, RecommendResponse, recommender_server::Recommender};

/// Serves `Recommend`.
#[derive(Debug)]
pub struct RecommenderService {
    max_results: u32,
}

impl RecommenderService {
    pub fn new(max_results: u32) -> Self {
        Self { max_results }
    }
}

#[tonic::async_trait]
impl Recommender for RecommenderService {
    async fn recommend(&self, request: Request<RecommendRequest>) -> Result<Response<RecommendResponse>, Status> {
        let (query, _n) = Query::from_recommend(request.get_ref(), self.max_results, super::now_ms())?;
        tracing::debug!(request_id = %query.request_id, user = %query.user, "recommend");
        Err(super::missing(
            "cannot recommend yet: this build has no candidate generators and no ranking model (the fan-out, \
             ranker and combiner are not part of it)",
        ))
    }
}
