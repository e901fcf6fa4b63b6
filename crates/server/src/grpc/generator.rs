//! `watchnext.v1.CandidateGenerator`: one service for every generator.
//! A process hosting several (the all-in-one) routes by the request's
//! `generator` field; a single-generator process also accepts UNSPECIFIED.
//! `generate` reads indexes that are swapped atomically and answers in
//! microseconds, so it runs inline on the async worker.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use watchnext_core::{InvalidRequest, Role, generator::Generator, request::Query};
use watchnext_proto::v1::{
    Candidate, CandidateSource, GenerateRequest, GenerateResponse, candidate_generator_server::CandidateGenerator,
};

/// The generator role behind a wire `CandidateSource`.
pub fn role_of(source: CandidateSource) -> Option<Role> {
    watchnext_core::registry::index(source).map(|_| Role::Generator(source))
}

/// The wire `CandidateSource` of a generator role.
pub fn source_of(role: Role) -> CandidateSource {
    role.source().unwrap_or(CandidateSource::Unspecified)
}

/// A generator role this process serves, with its generator when it could
/// be built.
pub type HostedRole = (Role, Option<Arc<dyn Generator>>);

/// Serves `Generate` for the generators this process hosts.
#[derive(Debug)]
pub struct GeneratorService {
    hosted: Vec<HostedRole>,
    max_candidates: u32,
    /// Where `generate` runs (never on an async worker).
    pool: std::sync::Arc<watchnext_recommender::cpu::CpuPool>,
}

impl GeneratorService {
    pub fn new(
        hosted: Vec<HostedRole>,
        max_candidates: u32,
        pool: std::sync::Arc<watchnext_recommender::cpu::CpuPool>,
    ) -> Self {
        Self { hosted, max_candidates, pool }
    }

    fn pick(&self, requested: i32) -> Result<&HostedRole, Status> {
        let names = || self.hosted.iter().map(|(r, _)| r.name()).collect::<Vec<_>>().join(", ");
        let source = CandidateSource::try_from(requested)
            .map_err(|_| InvalidRequest::new("generator", format!("unknown candidate source {requested}")))?;
        let role = match role_of(source) {
            None if self.hosted.len() == 1 => self.hosted[0].0,
            None => {
                return Err(InvalidRequest::new(
                    "generator",
                    format!("this process hosts several generators; name one of: {}", names()),
                )
                .into());
            }
            Some(role) => role,
        };
        match self.hosted.iter().find(|(r, _)| *r == role) {
            Some(hosted) => Ok(hosted),
            None => Err(Status::not_found(format!(
                "the {role} generator is not served by this process (it serves: {})",
                names()
            ))),
        }
    }
}

#[tonic::async_trait]
impl CandidateGenerator for GeneratorService {
    async fn generate(&self, request: Request<GenerateRequest>) -> Result<Response<GenerateResponse>, Status> {
        // The caller's deadline: a queue that would outlast it refuses at once.
        let limit = super::recommender::grpc_timeout(request.metadata()).unwrap_or(Duration::MAX);
        let (role, generator) = self.pick(request.get_ref().generator)?;
        let role = *role;
        let (query, max) = Query::from_generate(request.get_ref(), self.max_candidates, super::now_ms())?;
        let Some(generator) = generator else {
            return Err(super::missing(&format!(
                "the {role} generator could not be built in this process; see its log"
            )));
        };
        generator
            .precondition()
            .map_err(|why| super::missing(&format!("the {role} generator cannot answer yet: {why}")))?;
        let source = generator.source();
        let g = generator.clone();
        let generated =
            self.pool.run_within(limit, move || g.generate(&query, max)).await.map_err(super::pool_status)?;
        Ok(Response::new(GenerateResponse {
            generator: source as i32,
            candidates: generated
                .candidates
                .into_iter()
                .map(|c| Candidate { video_id: c.video.as_str().to_owned(), source: source as i32, score: c.score })
                .collect(),
            note: generated.note,
            index_version: generated.version,
        }))
    }
}
