//! What `watchnext demo` shows once the server is up: one simulated user's
//! request, and what each candidate generator proposes for it, fetched over
//! real gRPC like any client would.

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use watchnext_core::{catalog::Catalog, datadir::DataDir, history::RecentWatches};
use watchnext_proto::v1::{
    CandidateSource, GenerateRequest, GenerateResponse, RequestContext,
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
    for source in watchnext_core::registry::GENERATORS.iter().copied() {
        let message = GenerateRequest {
            request_id: request.request_id.as_str().to_owned(),
            user_id: request.user.as_str().to_owned(),
            query_video_id: request.query_video.as_str().to_owned(),
            device: request.device.to_proto() as i32,
            recent_history: request.history.to_proto(),
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

/// What one arm of the simulated A/B test saw.
#[derive(Debug, Clone, Default)]
pub struct ArmStats {
    pub requests: u64,
    /// Requests the server could not answer (the user gave up).
    pub failed: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub watch_seconds: f64,
    pub likes: u64,
    pub dismisses: u64,
    pub ratings: u64,
    pub rating_sum: f64,
}

impl ArmStats {
    fn add(&mut self, events: &[watchnext_core::event::Event]) {
        use watchnext_core::event::EventKind;
        for e in events {
            match &e.kind {
                EventKind::Impression(_) => self.impressions += 1,
                EventKind::Click => self.clicks += 1,
                EventKind::Watch { seconds_watched, .. } => self.watch_seconds += f64::from(*seconds_watched),
                EventKind::Like => self.likes += 1,
                EventKind::Dismiss => self.dismisses += 1,
                EventKind::Rating { value } => {
                    self.ratings += 1;
                    self.rating_sum += f64::from(*value);
                }
            }
        }
    }

    fn per_request(&self, x: f64) -> f64 {
        x / self.requests.max(1) as f64
    }

    /// One row of the report table.
    pub fn row(&self, phase: &str, arm: &str) -> String {
        format!(
            "| {phase} | {arm} | {} | {:.2}% | {:.2} | {:.1} | {:.1} | {:.2} |",
            self.requests,
            100.0 * self.clicks as f64 / self.impressions.max(1) as f64,
            self.per_request(self.watch_seconds) / 60.0,
            1_000.0 * self.per_request(self.likes as f64),
            1_000.0 * self.per_request(self.dismisses as f64),
            self.rating_sum / self.ratings.max(1) as f64,
        )
    }
}

/// The report table's header.
pub const AB_HEADER: &str = "| phase | arm | requests | CTR | watch min / request | likes / 1k requests | dismissals / 1k requests | mean rating |\n|---|---|---|---|---|---|---|---|";

/// Plays `requests` requests of the live population: users hashed into
/// two arms, `baseline` (the logging policy's popularity list, shown by the
/// simulator itself) and `watchnext` (the server's Recommend). Every
/// response's events go to the server's feedback log (the server logged
/// its own impressions, with the features it used), so the next training
/// run learns from what was served.
///
/// The client keeps each user's recent watches by the server's own rule
/// ([`RecentWatches`], seeded from the log by [`recent_watches`]) and sends
/// them as `recent_history`; a user's pending events are recorded before
/// that user's next request. The history a request carries is then exactly
/// the one the training path rebuilds from the log, so the served rows
/// replay without skew. (The simulator's own memory of a user — 20 watches,
/// a re-watch appended again — is a different rule; sending it made most
/// served rows differ from their recomputation.)
pub async fn ab_test(
    url: &str,
    population: &mut Population,
    history: &RecentWatches,
    requests: usize,
    label: &str,
) -> anyhow::Result<(ArmStats, ArmStats)> {
    use watchnext_core::{
        event::EventKind,
        features::{FNV_OFFSET, stable_hash},
    };
    use watchnext_proto::v1::{
        RecommendRequest, RecordRequest, feedback_client::FeedbackClient, recommender_client::RecommenderClient,
    };
    use watchnext_world::{LoggingPolicy, ShownVideo};

    let mut recommender = RecommenderClient::connect(url.to_owned()).await?;
    let mut feedback = FeedbackClient::connect(url.to_owned()).await?;
    let list_size = population.world().config().list_size;
    let (mut baseline, mut served) = (ArmStats::default(), ArmStats::default());
    let mut pending = Pending::default();
    let bar = indicatif::ProgressBar::new(requests as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "{label} [{{wide_bar}}] {{pos}}/{{len}} requests ({{per_sec}}, eta {{eta}})"
    )) {
        bar.set_style(style);
    }
    for _ in 0..requests {
        let Some(request) = population.next_request() else { break };
        let to_server = stable_hash(FNV_OFFSET ^ 0xab, request.user.as_str().as_bytes()) % 2 == 1;
        let shown = if to_server {
            if let Some(events) = pending.before_request(&request.user) {
                feedback.record(RecordRequest { events }).await?;
            }
            let message = RecommendRequest {
                request_id: request.request_id.as_str().to_owned(),
                user_id: request.user.as_str().to_owned(),
                query_video_id: request.query_video.as_str().to_owned(),
                device: request.device.to_proto() as i32,
                recent_history: watchnext_core::History(history.entries(&request.user)).to_proto(),
                context: Some(RequestContext { request_time_ms: request.time_ms, ..Default::default() }),
                num_results: list_size,
                experiment_arm: String::new(),
            };
            match recommender.recommend(message).await {
                Ok(r) => r
                    .into_inner()
                    .items
                    .iter()
                    .filter_map(|item| {
                        let video = watchnext_core::VideoId::parse("video_id", &item.video_id).ok()?;
                        Some(ShownVideo::new(video, ""))
                    })
                    .collect::<Vec<_>>(),
                Err(status) => {
                    tracing::warn!(%status, "demo: Recommend failed; the user gives up");
                    served.failed += 1;
                    served.requests += 1;
                    population.abandon(&request)?;
                    bar.inc(1);
                    continue;
                }
            }
        } else {
            population.policy_list(&request, LoggingPolicy::default())?
        };
        let response = population.respond(&request, &shown)?;
        let stats = if to_server { &mut served } else { &mut baseline };
        stats.requests += 1;
        stats.add(&response.events);
        history.observe(&response.events);
        pending.add(
            &request.user,
            response
                .events
                .iter()
                // The server already logged its impressions, with the features it used.
                .filter(|e| !(to_server && matches!(e.kind, EventKind::Impression(_))))
                .map(watchnext_core::event::Event::to_proto),
        );
        if let Some(events) = pending.full(2_000) {
            feedback.record(RecordRequest { events }).await?;
        }
        bar.inc(1);
    }
    if let Some(events) = pending.full(1) {
        feedback.record(RecordRequest { events }).await?;
    }
    bar.finish_and_clear();
    Ok((baseline, served))
}

/// A client-side recent-watch store by the server's rule
/// (`recommender.fanout.history_len` per user), holding every watch in the
/// data folder's log so far.
pub fn recent_watches(config: &watchnext_core::Config) -> anyhow::Result<RecentWatches> {
    let settings = watchnext_recommender::config::Settings::from_values(
        &config.recommender.fanout,
        &config.recommender.combiner,
        &config.recommender.arms,
    )?;
    let history = RecentWatches::new(settings.fanout.history_len.max(1));
    let reader = crate::data::reader(&DataDir::new(&config.data.dir))?;
    let mut chunk = Vec::with_capacity(4_096);
    for record in reader {
        chunk.push(record?.1);
        if chunk.len() == 4_096 {
            history.observe(&chunk);
            chunk.clear();
        }
    }
    history.observe(&chunk);
    Ok(history)
}

/// The A/B client's events not yet recorded, and whose they are.
#[derive(Debug, Default)]
struct Pending {
    events: Vec<watchnext_proto::v1::FeedbackEvent>,
    users: HashSet<watchnext_core::UserId>,
}

impl Pending {
    /// The batch to record before `user`'s next request: everything
    /// pending when some of it is theirs (the server must see their last
    /// watches), else nothing. Never an empty batch (`Record` refuses one).
    fn before_request(&mut self, user: &watchnext_core::UserId) -> Option<Vec<watchnext_proto::v1::FeedbackEvent>> {
        if self.users.contains(user) { self.take() } else { None }
    }

    /// Adds what `user` did; a user who did nothing has nothing pending.
    fn add(
        &mut self,
        user: &watchnext_core::UserId,
        events: impl IntoIterator<Item = watchnext_proto::v1::FeedbackEvent>,
    ) {
        let before = self.events.len();
        self.events.extend(events);
        if self.events.len() > before {
            self.users.insert(user.clone());
        }
    }

    /// The whole batch once it holds at least `at` events.
    fn full(&mut self, at: usize) -> Option<Vec<watchnext_proto::v1::FeedbackEvent>> {
        if self.events.len() >= at.max(1) { self.take() } else { None }
    }

    fn take(&mut self) -> Option<Vec<watchnext_proto::v1::FeedbackEvent>> {
        self.users.clear();
        (!self.events.is_empty()).then(|| std::mem::take(&mut self.events))
    }
}

/// Prints the server's list, with sources and task predictions, for a few
/// of the population's next requests.
pub async fn show_recommendations(url: &str, population: &mut Population, users: usize) -> anyhow::Result<()> {
    use watchnext_proto::v1::{RecommendRequest, recommender_client::RecommenderClient};
    let mut client = RecommenderClient::connect(url.to_owned()).await?;
    let world = population.world().clone();
    for _ in 0..users {
        let Some(request) = population.next_request() else { break };
        let message = RecommendRequest {
            user_id: request.user.as_str().to_owned(),
            query_video_id: request.query_video.as_str().to_owned(),
            device: request.device.to_proto() as i32,
            context: Some(RequestContext { request_time_ms: request.time_ms, ..Default::default() }),
            num_results: 5,
            ..Default::default()
        };
        let r = client.recommend(message).await?.into_inner();
        let title = |id: &str| {
            world.video_index(id).map(|i| world.catalog().videos()[i as usize].title.clone()).unwrap_or_default()
        };
        println!(
            "\nuser {} on {} watching {} \"{}\" — model {}, arm {}{}",
            request.user,
            request.device.name(),
            request.query_video,
            title(request.query_video.as_str()),
            if r.model_version.is_empty() { "none" } else { &r.model_version },
            r.experiment_arm,
            if r.degraded { format!(" (degraded: {})", r.degraded_reasons.join("; ")) } else { String::new() }
        );
        for item in &r.items {
            let sources: Vec<&str> = item
                .sources
                .iter()
                .filter_map(|s| CandidateSource::try_from(s.source).ok())
                .map(watchnext_core::event::source_name)
                .collect();
            let mut tasks: Vec<(&String, &f32)> = item.task_predictions.iter().collect();
            tasks.sort_by(|a, b| a.0.cmp(b.0));
            let tasks: Vec<String> = tasks.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
            println!(
                "  {}. {:<8} {:<36} score {:.4}  [{}]  {}",
                item.position,
                item.video_id,
                title(&item.video_id),
                item.score,
                sources.join("+"),
                tasks.join(", ")
            );
        }
        population.abandon(&request)?;
    }
    println!();
    Ok(())
}

/// The demo's closed loop on the synthetic world: example lists, A/B test
/// phase 1 (the baseline logging policy vs the served model), retraining on
/// the log that now holds what was served, hot reload through
/// `Admin.ReloadModel`, phase 2, and the report.
pub async fn closed_loop(
    config: &watchnext_core::Config,
    url: &str,
    requests: usize,
    epochs: usize,
) -> anyhow::Result<()> {
    use watchnext_proto::v1::{ReloadModelRequest, admin_client::AdminClient};
    let data = DataDir::new(&config.data.dir);
    if !data.world_config().is_file() {
        println!("(real data: no simulated users to play; the A/B test needs the synthetic world)");
        return Ok(());
    }
    let world = Arc::new(World::build(&WorldConfig::read(&data.world_config())?)?);
    let start_ms = world.config().epoch_ms + i64::from(world.config().days) * 86_400_000;
    let mut population = Population::new(world, start_ms);
    let active = |dir: &Path| watchnext_ranker::newest_model_dir(dir).map(|(_, m)| m.model_version).unwrap_or_default();
    let first = active(&data.models());
    println!("What watchnext recommends (model {first}):");
    show_recommendations(url, &mut population, 3).await?;

    println!("A/B test, phase 1: the logging policy (baseline) vs watchnext with {first}, {requests} requests");
    let history = recent_watches(config)?;
    let (b1, s1) = ab_test(url, &mut population, &history, requests, "phase 1").await?;
    println!("\nRetraining on the log, which now holds what watchnext served ({epochs} epoch(s))…");
    let second =
        format!("mmoe-demo-{}", first.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()).map_or(2, |n| n + 1));
    {
        let config = config.clone();
        let second = second.clone();
        tokio::task::block_in_place(move || {
            crate::training::train(&config, crate::training::TrainArgs::for_demo(&second, epochs))
        })?;
    }
    let mut admin = AdminClient::connect(url.to_owned()).await?;
    let dir = data.models().join(&second);
    let mut reload = tonic::Request::new(ReloadModelRequest { model_dir: dir.display().to_string(), rollback: false });
    reload.metadata_mut().insert("authorization", format!("Bearer {}", config.admin.token).parse()?);
    let swapped = admin.reload_model(reload).await?.into_inner();
    println!("hot-reloaded: {} is active, {} kept for rollback", swapped.active_version, swapped.previous_version);

    println!("A/B test, phase 2: the logging policy (baseline) vs watchnext with {second}, {requests} requests");
    let (b2, s2) = ab_test(url, &mut population, &history, requests, "phase 2").await?;
    println!("\nSimulated A/B test (the synthetic users' own responses; users split 50/50 by a hash of their id):\n");
    println!("{AB_HEADER}");
    println!("{}", b1.row("1", "baseline (popularity policy)"));
    println!("{}", s1.row("1", &format!("watchnext ({first})")));
    println!("{}", b2.row("2", "baseline (popularity policy)"));
    println!("{}", s2.row("2", &format!("watchnext ({second})")));
    let lift = |s: &ArmStats, b: &ArmStats, f: fn(&ArmStats) -> f64| 100.0 * (f(s) / f(b).max(1e-9) - 1.0);
    let watch = |a: &ArmStats| a.per_request(a.watch_seconds);
    let ctr = |a: &ArmStats| a.clicks as f64 / a.impressions.max(1) as f64;
    let likes = |a: &ArmStats| a.per_request(a.likes as f64);
    println!(
        "\nwatchnext vs baseline: watch time {:+.1}% / {:+.1}%, CTR {:+.1}% / {:+.1}%, likes {:+.1}% / {:+.1}% (phase 1 / phase 2); \
         failed requests {} / {}",
        lift(&s1, &b1, watch),
        lift(&s2, &b2, watch),
        lift(&s1, &b1, ctr),
        lift(&s2, &b2, ctr),
        lift(&s1, &b1, likes),
        lift(&s2, &b2, likes),
        s1.failed,
        s2.failed
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use watchnext_core::UserId;
    use watchnext_proto::v1::FeedbackEvent;

    use super::Pending;

    fn user(name: &str) -> UserId {
        UserId::parse("user_id", name).expect("id")
    }

    fn events(n: usize) -> Vec<FeedbackEvent> {
        vec![FeedbackEvent::default(); n]
    }

    #[test]
    fn a_users_events_are_recorded_before_their_next_request_and_no_batch_is_empty() {
        let (a, b) = (user("a"), user("b"));
        let mut pending = Pending::default();
        pending.add(&a, events(3));
        assert_eq!(pending.before_request(&b).map(|e| e.len()), None, "nothing of b's is waiting");
        assert_eq!(pending.before_request(&a).map(|e| e.len()), Some(3), "a's watches first");
        // a did nothing on the list they were shown (the server logged its
        // impressions itself): nothing to record before a's next request.
        pending.add(&a, events(0));
        assert_eq!(pending.before_request(&a), None, "never an empty batch");
        pending.add(&b, events(2));
        pending.add(&a, events(0));
        assert_eq!(pending.before_request(&a), None, "b's events wait for b or a full batch");
        assert_eq!(pending.full(3), None);
        pending.add(&a, events(1));
        assert_eq!(pending.full(3).map(|e| e.len()), Some(3));
        assert_eq!(pending.before_request(&a), None, "recorded with the full batch");
        assert_eq!(pending.before_request(&b), None);
        assert_eq!(pending.full(1), None, "nothing left at the end");
    }
}
