//! `watchnext.v1.CandidateGenerator`: one service for all four generators.
//! A process hosting several (the all-in-one) routes by the request's
//! `generator` field; a single-generator process also accepts UNSPECIFIED.

use tonic::{Request, Response, Status};
use watchnext_core::{InvalidRequest, Role, request::Query};
use watchnext_proto::v1::{
    CandidateSource, GenerateRequest, GenerateResponse, candidate_generator_server::CandidateGenerator,
};

/// The generator role behind a wire `CandidateSource`.
pub fn role_of(source: CandidateSource) -> Option<Role> {
    match source {
        CandidateSource::Unspecified => None,
        CandidateSource::Topic => Some(Role::Topic),
        CandidateSource::Cowatch => Some(Role::Cowatch),
        CandidateSource::Sequence => Some(Role::Sequence),
        CandidateSource::Context => Some(Role::Context),
    }
}

/// Serves `Generate` for the generators this process hosts.
#[derive(Debug)]
pub struct GeneratorService {
    hosted: Vec<Role>,
    max_candidates: u32,
}

impl GeneratorService {
    /// `hosted` lists generator roles (a subset of [`Role::GENERATORS`]).
    pub fn new(hosted: Vec<Role>, max_candidates: u32) -> Self {
        Self { hosted, max_candidates }
    }

    fn pick(&self, requested: i32) -> Result<Role, Status> {
        let names = || self.hosted.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ");
        let source = CandidateSource::try_from(requested)
            .map_err(|_| InvalidRequest::new("generator", format!("unknown candidate source {requested}")))?;
        match role_of(source) {
            None if self.hosted.len() == 1 => Ok(self.hosted[0]),
            None => Err(InvalidRequest::new(
                "generator",
                format!("this process hosts several generators; name one of: {}", names()),
            )
            .into()),
            Some(role) if self.hosted.contains(&role) => Ok(role),
            Some(role) => Err(Status::not_found(format!(
                "the {role} generator is not served by this process (it serves: {})",
                names()
            ))),
        }
    }
}

#[tonic::async_trait]
impl CandidateGenerator for GeneratorService {
    async fn generate(&self, request: Request<GenerateRequest>) -> Result<Response<GenerateResponse>, Status> {
        let role = self.pick(request.get_ref().generator)?;
        let (_query, _n) = Query::from_generate(request.get_ref(), self.max_candidates, super::now_ms())?;
        Err(super::missing(&format!(
            "the {role} candidate generator has no index yet: building one is not part of this build of watchnext"
        )))
    }
}
