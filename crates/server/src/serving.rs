//! The serving roles of a process: the ranker (its models and the folder
//! watcher) and the recommender (how it reaches every other role, in this
//! process or over gRPC, and the feed of recent watches it fills request
//! histories from).
//!
//! The ranker builds features with the schema of the `[trainer]` section's
//! `features`: the very settings `watchnext train` used, so a model trained
//! with this configuration always passes the schema check.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use watchnext_core::{
    Config, Role, catalog::Catalog, datadir::DataDir, event::Event, features::FeatureSchema, history::RecentWatches,
};
use watchnext_proto::{service_names, v1 as pb};
use watchnext_ranker::{Ranker, RankerSettings};
use watchnext_recommender::{
    Recommender,
    clients::{
        GeneratorClient, ImpressionSink, LocalGenerator, LocalLog, LocalRanker, RankerClient, RemoteFeedback,
        RemoteGenerator, RemoteRanker, RoleChannel, RoleCredential,
    },
    config::Settings,
    cpu::CpuPools,
};

use crate::{app::ProcessInfo, generators::Hosted};

/// The ranker of this process, with `catalog` and the newest model under
/// `<data>/models` when there are.
pub fn build_ranker(config: &Config, catalog: Option<&Arc<Catalog>>) -> anyhow::Result<Arc<Ranker>> {
    let trainer = crate::training::trainer_config(config)?;
    let schema = FeatureSchema::new(trainer.features)
        .map_err(|e| anyhow::anyhow!("configuration key `trainer.features`: {e}"))?;
    let runtime = watchnext_onnx::OnnxRuntime::init(&config.onnx).context("loading ONNX Runtime for the ranker")?;
    let settings = RankerSettings {
        sessions: config.ranker.sessions,
        warmup_rows: config.ranker.warmup_rows,
        keep_versions: config.ranker.keep_versions,
    };
    let session = watchnext_onnx::SessionOptions::from(&config.onnx);
    let ranker = Arc::new(Ranker::new(settings, schema, runtime, session).context("configuration section `ranker`")?);
    if let Some(catalog) = catalog {
        ranker.update_catalog(catalog);
    }
    load_newest_model(&ranker, &DataDir::new(&config.data.dir).models());
    Ok(ranker)
}

/// Loads the newest model under `root` if it is new; logs what happened.
pub fn load_newest_model(ranker: &Ranker, root: &Path) {
    match ranker.reload_newest(root) {
        Ok(Some(r)) => tracing::info!(version = %r.version, provider = %r.provider, "ranking model loaded"),
        Ok(None) if ranker.active().is_none() => {
            tracing::warn!(dir = %root.display(), "no ranking model yet: run `watchnext train`");
        }
        Ok(None) => {}
        Err(err) => tracing::error!(%err, "a ranking model could not be loaded; the active one (if any) keeps serving"),
    }
}

/// Looks for a newer model every `interval_s` seconds (0: never) and keeps
/// the ranker's health in step.
pub fn watch_models(ranker: Arc<Ranker>, root: std::path::PathBuf, interval_s: u64, info: Arc<ProcessInfo>) {
    tokio::spawn(async move {
        let mut serving = None;
        let mut tick = tokio::time::interval(Duration::from_secs(interval_s.max(1)));
        loop {
            tick.tick().await;
            if interval_s > 0 && serving.is_some() {
                let (r, root) = (ranker.clone(), root.clone());
                if let Err(err) = tokio::task::spawn_blocking(move || load_newest_model(&r, &root)).await {
                    tracing::error!(%err, "model reload task failed");
                }
            }
            let now = ranker.active().map(|m| m.version.clone());
            if serving.as_ref() != Some(&now) {
                let detail =
                    if now.is_some() { String::new() } else { "no ranking model loaded: run `watchnext train`".into() };
                info.set_service(service_names::RANKER, now.is_some(), &detail).await;
                serving = Some(now);
            }
        }
    });
}

fn channel(key: &str, url: &str, config: &Config, credential: &RoleCredential) -> anyhow::Result<RoleChannel> {
    balanced_channel(key, url, config, credential)
}

/// A channel spreading calls over every replica behind `url` (one or more
/// comma-separated URLs; each host name may resolve to several addresses),
/// presenting `credential`. `key` names the role (`endpoints.<key>`); its
/// replicas' health is checked on the role's own gRPC health service.
pub fn balanced_channel(
    key: &str,
    url: &str,
    config: &Config,
    credential: &RoleCredential,
) -> anyhow::Result<RoleChannel> {
    let name = format!("endpoints.{key}");
    let urls: Vec<String> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
    // Every URL must make a valid endpoint (TLS files, syntax) now, not at the first call.
    for u in &urls {
        crate::tls::endpoint(&name, u, &config.tls)?;
    }
    let tls = config.tls.clone();
    let make_name = name.clone();
    let make: watchnext_recommender::balance::MakeEndpoint = Arc::new(move |target, addr| {
        let url = format!("{}://{addr}", target.scheme);
        crate::tls::endpoint_for(&make_name, &url, &tls, Some(&target.host)).map_err(|e| format!("{e:#}"))
    });
    let health_service = match key {
        "ranker" => service_names::RANKER.to_owned(),
        "feedback" => service_names::FEEDBACK.to_owned(),
        generator => format!("{}/{generator}", service_names::CANDIDATE_GENERATOR),
    };
    let options = watchnext_recommender::balance::BalanceOptions {
        resolve_every: std::time::Duration::from_secs(config.endpoints.resolve_seconds),
        probe_every: std::time::Duration::from_millis(config.endpoints.probe_interval_ms),
        health_service,
    };
    let balanced = watchnext_recommender::balance::Balanced::new(key, &urls, make, options)
        .map_err(|e| anyhow::anyhow!("configuration key `{name}`: {e}"))?;
    Ok(tonic::service::interceptor::InterceptedService::new(balanced, credential.clone()))
}

/// The recommender of this process: each generator in-process when hosted
/// here, else at its `endpoints.*` URL (skipped when empty); the ranker
/// likewise; impressions into this process's log or the feedback role's.
/// Calls to other roles present `credential`; in-process generators and the
/// ranker run on `pools`.
pub fn build_recommender(
    config: &Config,
    pools: &CpuPools,
    credential: &RoleCredential,
    hosted: &Hosted,
    ranker: Option<Arc<Ranker>>,
    log: Option<&watchnext_feedback::SharedStream>,
    catalog: Option<&Arc<Catalog>>,
) -> anyhow::Result<Arc<Recommender>> {
    let r = &config.recommender;
    let settings = Settings::from_values(&r.fanout, &r.combiner, &r.arms)?;
    let e = &config.endpoints;
    let mut generators: Vec<Arc<dyn GeneratorClient>> = Vec::new();
    for source in watchnext_core::registry::GENERATORS.iter().copied() {
        let role = Role::Generator(source);
        let url = e.generators.get(role.name()).map_or("", String::as_str);
        if let Some(g) = hosted.get(source) {
            generators.push(Arc::new(LocalGenerator(g.clone(), pools.generators.clone())));
        } else if !url.is_empty() {
            let client = pb::candidate_generator_client::CandidateGeneratorClient::new(channel(
                role.name(),
                url,
                config,
                credential,
            )?)
            .max_decoding_message_size(config.server.max_message_bytes);
            generators.push(Arc::new(RemoteGenerator { source, client }));
        }
    }
    let ranker: Option<Arc<dyn RankerClient>> = match (ranker, e.ranker.is_empty()) {
        (Some(local), _) => Some(Arc::new(LocalRanker(local, pools.ranker.clone()))),
        (None, false) => Some(Arc::new(RemoteRanker(
            pb::ranker_client::RankerClient::new(channel("ranker", &e.ranker, config, credential)?)
                .max_decoding_message_size(config.server.max_message_bytes),
        ))),
        (None, true) => None,
    };
    let impressions: Option<Arc<dyn ImpressionSink>> = match (log, e.feedback.is_empty()) {
        (Some(log), _) => Some(Arc::new(LocalLog(log.clone()))),
        (None, false) => Some(Arc::new(RemoteFeedback(pb::feedback_client::FeedbackClient::new(channel(
            "feedback",
            &e.feedback,
            config,
            credential,
        )?)))),
        (None, true) => {
            tracing::warn!(
                "recommender: no feedback log in this process and no endpoints.feedback: impressions are not logged"
            );
            None
        }
    };
    if generators.is_empty() {
        tracing::warn!("recommender: no generator in this process and no endpoints.* configured");
    }
    let history = Arc::new(RecentWatches::new(settings.fanout.history_len.max(1)));
    let rec = Recommender::new(settings, r.max_candidates as usize, generators, ranker, impressions, history.clone())?;
    let rec = Arc::new(rec);
    if let Some(catalog) = catalog {
        rec.update_catalog(catalog);
    }
    // Recent watches: from this process's log, or the feedback role's Tail.
    match (log, e.feedback.is_empty()) {
        (Some(log), _) => {
            crate::tailer::follow(log.clone(), "recent_watches", 1, 4_096, HistoryFeed(history));
        }
        (None, false) => {
            let deliver: crate::app::RemoteDelivery = Arc::new(move |events: Vec<Event>, _| history.observe(&events));
            crate::app::tail_remote(
                crate::app::feedback_channel(&e.feedback, config, credential)?,
                "recommender history".into(),
                1,
                deliver,
                None,
            );
        }
        (None, true) => {}
    }
    Ok(rec)
}

/// Feeds recent watches from the local log.
struct HistoryFeed(Arc<RecentWatches>);

impl crate::tailer::Consumer for HistoryFeed {
    fn consume(&mut self, _first_seq: u64, events: Vec<Event>, _caught_up: bool) -> bool {
        self.0.observe(&events);
        true
    }
}
