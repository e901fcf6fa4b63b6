//! `watchnext.v1.Ranker`: point-wise multitask ranking.

use tonic::{Request, Response, Status};
use watchnext_core::request::Query;
use watchnext_proto::v1::{RankRequest, RankResponse, ranker_server::Ranker};

/// Serves `Rank`.
#[derive(Debug)]
pub struct RankerService {
    max_candidates: u32,
}

impl RankerService {
    pub fn new(max_candidates: u32) -> Self {
        Self { max_candidates }
    }
}

#[tonic::async_trait]
impl Ranker for RankerService {
    async fn rank(&self, request: Request<RankRequest>) -> Result<Response<RankResponse>, Status> {
        let (_query, _candidates) = Query::from_rank(request.get_ref(), self.max_candidates, super::now_ms())?;
        Err(super::missing(
            "no ranking model is loaded: this build of watchnext cannot train or load a ranking model yet",
        ))
    }
}
