//! What `watchnext demo` shows once the server is up: one simulated user's
//! request, and what each candidate generator proposes for it, fetched over
//! real gRPC like any client would.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use watchnext_core::{catalog::Catalog, datadir::DataDir};
use watchnext_proto::v1::{
    CandidateSource, GenerateRequest, GenerateResponse, HistoryItem, RequestContext,
    candidate_generator_client::CandidateGeneratorClient,
};
use watchnext_world::{Population, World, WorldConfig};

/// How many candidates of each generator are printed.
const SHOWN: usize = 5;

/// Draws a request from the world's live population and prints each
/// generator's top candidates for it.
pub async fn show_candidates(url: &str, data_dir: &Path) -> anyhow::Result<()> {
    let data = DataDir::new(data_dir);
    if !data.world_config().is_file() {
        return Ok(()); // real data: no simulated users to draw from
    }
    let world = Arc::new(World::build(&WorldConfig::read(&data.world_config())?)?);
    let catalog = Catalog::read(&data.catalog())?;
    let start_ms = world.config().epoch_ms + i64::from(world.config().days) * 86_400_000;
    let mut population = Population::new(world.clone(), start_ms);
    let request = population.next_request().context("the world has no active user")?;
    let title = |id: &str| catalog.get(id).map(|v| format!("{} {:?}", v.title, v.topics)).unwrap_or_default();
    println!(
        "\nA simulated request: user {} on {} is watching {} — {}",
        request.user,
        request.device.name(),
        request.query_video,
        title(request.query_video.as_str())
    );
    let mut client = CandidateGeneratorClient::connect(url.to_owned()).await?;
    for source in
        [CandidateSource::Topic, CandidateSource::Cowatch, CandidateSource::Sequence, CandidateSource::Context]
    {
        let message = GenerateRequest {
            request_id: request.request_id.as_str().to_owned(),
            user_id: request.user.as_str().to_owned(),
            query_video_id: request.query_video.as_str().to_owned(),
            device: request.device.to_proto() as i32,
            recent_history: request
                .history
                .0
                .iter()
                .map(|h| HistoryItem {
                    video_id: h.video.as_str().to_owned(),
                    watched_at_ms: h.watched_at_ms,
                    seconds_watched: h.seconds_watched,
                })
                .collect(),
            context: Some(RequestContext { request_time_ms: request.time_ms, ..Default::default() }),
            max_candidates: 100,
            generator: source as i32,
        };
        // The log is replayed into the generators in the background.
        let mut answer = GenerateResponse::default();
        for _ in 0..60 {
            match client.generate(message.clone()).await {
                Ok(r) => answer = r.into_inner(),
                // A generator still loading its model says so; wait for it.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    answer.note = status.message().to_owned()
                }
                Err(status) => return Err(status.into()),
            }
            if !answer.candidates.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let name = watchnext_core::event::source_name(source);
        println!("  {name}: {} candidates{}", answer.candidates.len(), note(&answer));
        for c in answer.candidates.iter().take(SHOWN) {
            println!("    {:>8.4}  {:<8} {}", c.score, c.video_id, title(&c.video_id));
        }
    }
    println!();
    Ok(())
}

fn note(answer: &GenerateResponse) -> String {
    if answer.note.is_empty() { String::new() } else { format!(" ({})", answer.note) }
}
