//! Builds and runs the gRPC server for one role.
//!
//! [`start`] binds the listeners (port 0 picks a free one; the bound
//! addresses are in [`Running`]), registers the role's services plus health,
//! reflection (`v1` and `v1alpha`) and Admin, and serves until
//! [`Running::shutdown`]: new connections stop being accepted, in-flight
//! calls may finish for `server.shutdown_grace_seconds`, then the rest are
//! cut.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{
    sync::{RwLock, oneshot},
    task::JoinHandle,
};
use tonic::{service::RoutesBuilder, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use watchnext_core::{Config, Role};
use watchnext_onnx::OnnxRuntime;
use watchnext_proto::{
    service_names,
    v1::{
        ServiceState, StatusResponse, admin_server::AdminServer, candidate_generator_server::CandidateGeneratorServer,
        feedback_server::FeedbackServer, ranker_server::RankerServer, recommender_server::RecommenderServer,
    },
};
use watchnext_recommender::clients::{RoleChannel, RoleCredential};

use crate::{
    generators::{self, Hosted},
    grpc::{
        admin::{AdminAuth, AdminService},
        feedback::FeedbackService,
        generator::GeneratorService,
        ranker::RankerService,
        recommender::RecommenderService,
    },
    middleware::RpcLayer,
    telemetry,
};

/// What a process is and how its services are doing; Admin.Status reads it.
#[derive(Debug)]
pub struct ProcessInfo {
    pub role: Role,
    pub started: Instant,
    /// The execution provider ONNX Runtime uses here ("" when this role runs no model).
    pub execution_provider: String,
    services: RwLock<Vec<ServiceState>>,
    health: HealthReporter,
}

impl ProcessInfo {
    /// Records a service's state in health checks and in Admin.Status.
    pub async fn set_service(&self, service: &str, serving: bool, detail: &str) {
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set_service_status(service, status).await;
        let mut services = self.services.write().await;
        let state = ServiceState { service: service.to_owned(), serving, detail: detail.to_owned() };
        match services.iter_mut().find(|s| s.service == service) {
            Some(existing) => *existing = state,
            None => services.push(state),
        }
    }

    /// Admin.Status's answer.
    pub async fn status(&self) -> StatusResponse {
        StatusResponse {
            build_version: env!("CARGO_PKG_VERSION").to_owned(),
            roles: vec![self.role.name().to_owned()],
            uptime_seconds: self.started.elapsed().as_secs(),
            services: self.services.read().await.clone(),
            models: Vec::new(),
            combiner_weights: Default::default(),
            execution_provider: self.execution_provider.clone(),
        }
    }
}

/// A server that is running; drop it or call [`Running::shutdown`] to stop.
#[derive(Debug)]
pub struct Running {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    pub info: Arc<ProcessInfo>,
    /// The recommender, when this process hosts it (for config reloads).
    pub recommender: Option<Arc<watchnext_recommender::Recommender>>,
    grace: Duration,
    shutdown: Option<oneshot::Sender<()>>,
    metrics_shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    metrics: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops accepting, lets in-flight calls finish within the grace period,
    /// then stops.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(tx) = self.metrics_shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(self.grace, &mut server).await {
                Ok(joined) => joined.context("gRPC server task")?.context("gRPC server")?,
                Err(_) => {
                    tracing::warn!(
                        grace_seconds = self.grace.as_secs(),
                        "in-flight requests outlived the grace period"
                    );
                    server.abort();
                }
            }
        }
        if let Some(metrics) = self.metrics.take() {
            metrics.abort();
        }
        tracing::info!("server stopped");
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C (listened for since `signals` was
    /// registered), then shuts down gracefully.
    pub async fn until_signal(self, signals: ShutdownSignals) -> anyhow::Result<()> {
        signals.recv().await;
        tracing::info!(grace_seconds = self.grace.as_secs(), "shutting down: draining in-flight requests");
        self.shutdown().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
        if let Some(metrics) = &self.metrics {
            metrics.abort();
        }
    }
}

/// SIGTERM and SIGINT (Ctrl-C) listeners. Registering them replaces the
/// default action (ending the process at once) with a graceful shutdown, so
/// register before the server announces itself: a signal that arrives
/// between the announce line and the registration would otherwise end the
/// process without draining.
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Registers the listeners; needs the Tokio runtime. A listener that
    /// cannot be registered is logged and that signal keeps its default.
    pub fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |name: &str, kind| match signal(kind) {
                Ok(s) => Some(s),
                Err(err) => {
                    tracing::warn!(%err, signal = name, "cannot listen for the signal: it ends the process at once");
                    None
                }
            };
            Self { term: listen("SIGTERM", SignalKind::terminate()), int: listen("SIGINT", SignalKind::interrupt()) }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the first of the signals.
    pub async fn recv(self) {
        #[cfg(unix)]
        {
            async fn one(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = one(self.term) => {},
                () = one(self.int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Applies the combiner weights of a reloaded configuration (defaults and
/// every arm's overrides) to a running recommender; other changes need a
/// restart and are left alone.
pub fn reload_combiner(recommender: &watchnext_recommender::Recommender, config: &Config) -> anyhow::Result<()> {
    let r = &config.recommender;
    let settings = watchnext_recommender::config::Settings::from_values(&r.fanout, &r.combiner, &r.arms)?;
    recommender.replace_weights(&settings).map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("combiner weights reloaded from the configuration");
    Ok(())
}

/// Loads ONNX Runtime for roles that run models, so that a missing library
/// stops start-up with instructions instead of failing the first request.
fn onnx_for(config: &Config) -> anyhow::Result<String> {
    let role = config.server.role;
    let generator_model = generators::REGISTRY.iter().any(|e| e.uses_onnx && role.includes(Role::Generator(e.source)));
    if !(role.includes(Role::Ranker) || generator_model) {
        return Ok(String::new());
    }
    let runtime = OnnxRuntime::init(&config.onnx)?;
    tracing::info!(library = %runtime.library().display(), provider = config.onnx.execution_provider.name(), "ONNX Runtime ready");
    Ok(config.onnx.execution_provider.name().to_owned())
}

/// Opens (and recovers) the feedback log under `data.dir`, logging what
/// recovery had to repair.
pub fn open_feedback_log(config: &Config) -> anyhow::Result<watchnext_feedback::FeedbackLog> {
    let dir = watchnext_core::datadir::DataDir::new(&config.data.dir).feedback_log();
    let (log, report) = watchnext_feedback::FeedbackLog::open(&dir, watchnext_feedback::LogOptions::default())
        .with_context(|| format!("opening the feedback log in {}", dir.display()))?;
    if let Some(tail) = &report.truncated {
        tracing::warn!(dir = %dir.display(), ?tail, "feedback log: cut a torn or corrupt tail (never-acknowledged writes)");
    }
    for problem in &report.bad_segments {
        tracing::warn!(dir = %dir.display(), ?problem, "feedback log: a segment is unreadable and is skipped");
    }
    tracing::info!(dir = %dir.display(), last_seq = report.last_seq, segments = report.segments, "feedback log open");
    Ok(log)
}

/// The event stream this process writes to and follows: the embedded log
/// when it hosts the feedback role (the log's one owner), NATS JetStream in
/// every process when `event_log.backend = "nats"`, else none (a split
/// generator then follows the feedback role's `Tail`).
async fn open_stream(config: &Config) -> anyhow::Result<Option<watchnext_feedback::SharedStream>> {
    let role = config.server.role;
    match config.event_log.backend {
        watchnext_core::config::EventLogBackend::Embedded => Ok(if role.includes(Role::Feedback) {
            Some(Arc::new(open_feedback_log(config)?) as watchnext_feedback::SharedStream)
        } else {
            None
        }),
        watchnext_core::config::EventLogBackend::Nats => {
            let uses_events = role != Role::Ranker; // every other role reads or writes events
            if !uses_events {
                return Ok(None); // a ranker reads no events
            }
            let nats = &config.event_log.nats;
            let name = format!("watchnext-{}", role.name());
            let stream = watchnext_nats::NatsStream::connect(nats, &name)
                .await
                .with_context(|| format!("connecting to NATS at {}", nats.url))?;
            tracing::info!(url = %nats.url, stream = %nats.stream, "event log: NATS JetStream");
            Ok(Some(Arc::new(stream)))
        }
    }
}

/// Keeps the Feedback service's health in step with its stream's (a lost
/// NATS connection, a broken log), checked every second.
fn watch_stream_health(stream: watchnext_feedback::SharedStream, info: Arc<ProcessInfo>) {
    tokio::spawn(async move {
        let mut last = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = stream.check_health();
            if last.as_ref() != Some(&now) {
                if let Err(reason) = &now {
                    tracing::warn!(backend = stream.backend(), %reason, "feedback: the event stream is not serving");
                }
                info.set_service(service_names::FEEDBACK, now.is_ok(), now.as_ref().err().map_or("", |e| e)).await;
                last = Some(now);
            }
        }
    });
}

/// Something that takes a new catalogue (a generator, the ranker, the recommender).
type CatalogConsumer = Arc<dyn Fn(&Arc<watchnext_core::catalog::Catalog>) + Send + Sync>;

/// Reloads `catalog.jsonl` into every consumer when its modification time
/// changes, checked every `interval_s` seconds.
fn watch_catalog(config: &Config, consumers: Vec<CatalogConsumer>, interval_s: u64) {
    if interval_s == 0 || consumers.is_empty() {
        return;
    }
    let path = watchnext_core::datadir::DataDir::new(&config.data.dir).catalog();
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = modified(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(interval_s));
        loop {
            tick.tick().await;
            let now = modified(&path);
            if now.is_none() || now == seen {
                continue;
            }
            seen = now;
            let (path, consumers) = (path.clone(), consumers.clone());
            let loaded = tokio::task::spawn_blocking(move || {
                let catalog = Arc::new(watchnext_core::catalog::Catalog::read(&path)?);
                for consume in &consumers {
                    consume(&catalog);
                }
                Ok::<_, watchnext_core::catalog::CatalogError>(catalog.len())
            })
            .await;
            match loaded {
                Ok(Ok(videos)) => tracing::info!(videos, "new catalogue swapped into the generators"),
                Ok(Err(err)) => tracing::warn!(%err, "the changed catalogue is unreadable; keeping the previous one"),
                Err(err) => tracing::error!(%err, "catalogue reload task failed"),
            }
        }
    });
}

/// Runs each hosted generator's periodic reload (the sequence generator
/// looks for a newer model, loads and indexes it off the request path and
/// swaps it in), marking the generator serving once it can answer.
fn watch_reloads(hosted: &Hosted, info: &Arc<ProcessInfo>) {
    for h in &hosted.generators {
        let Some((every, job)) = h.reload.clone() else { continue };
        let (generator, info) = (h.generator.clone(), info.clone());
        let name = format!("{}/{}", service_names::CANDIDATE_GENERATOR, h.role().name());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let was_ready = generator.ready().is_ok();
                let job = job.clone();
                match tokio::task::spawn_blocking(move || job()).await {
                    Ok(true) if !was_ready => {
                        info.set_service(&name, true, "").await;
                        info.set_service(service_names::CANDIDATE_GENERATOR, true, "").await;
                    }
                    Ok(_) => {}
                    Err(err) => tracing::error!(%err, generator = %name, "reload task failed"),
                }
            }
        });
    }
}

/// Feeds every hosted generator from the log, each from its own first
/// needed sequence (co-watch from its snapshot on) and with its hook after
/// each delivery (co-watch's snapshots).
///
/// Each generator's health follows its readiness as the log is delivered
/// (co-watch, say, becomes ready once it has observed some watches).
fn follow_log(log: &watchnext_feedback::SharedStream, hosted: &Hosted, info: &Arc<ProcessInfo>) {
    for h in &hosted.generators {
        let name = h.role().name();
        let progress =
            crate::tailer::spawn(log.clone(), name, h.from_seq, vec![h.generator.clone()], h.after_delivery.clone())
                .next_seq;
        watch_readiness(info.clone(), h.role(), h.generator.clone(), progress);
    }
}

/// Keeps a generator's health in step with its readiness as events arrive.
fn watch_readiness(
    info: Arc<ProcessInfo>,
    role: Role,
    generator: Arc<dyn watchnext_core::generator::Generator>,
    mut progress: tokio::sync::watch::Receiver<u64>,
) {
    tokio::spawn(async move {
        let name = format!("{}/{}", service_names::CANDIDATE_GENERATOR, role.name());
        let mut serving = None;
        while progress.changed().await.is_ok() {
            let ready = generator.ready();
            let ok = ready.is_ok();
            if serving != Some(ok) {
                serving = Some(ok);
                info.set_service(&name, ok, ready.err().as_deref().unwrap_or("")).await;
                if ok {
                    info.set_service(service_names::CANDIDATE_GENERATOR, true, "").await;
                }
            }
        }
    });
}

/// The split-deployment twin of [`follow_log`]: generators in a process
/// without the log follow the feedback role's `Tail` stream at `endpoint`,
/// reconnecting (from the next sequence number) after any failure.
fn follow_remote(
    endpoint: &str,
    config: &Config,
    credential: &RoleCredential,
    hosted: &Hosted,
    info: &Arc<ProcessInfo>,
) -> anyhow::Result<()> {
    let channel = feedback_channel(endpoint, config, credential)?;
    for h in &hosted.generators {
        let (progress_tx, progress) = tokio::sync::watch::channel(h.from_seq);
        watch_readiness(info.clone(), h.role(), h.generator.clone(), progress);
        let (generator, after) = (h.generator.clone(), h.after_delivery.clone());
        let deliver: RemoteDelivery = Arc::new(move |events, last| {
            generator.observe(&events);
            if let Some(hook) = &after {
                hook(last);
            }
        });
        tail_remote(channel.clone(), h.role().name().to_owned(), h.from_seq, deliver, Some(progress_tx));
    }
    Ok(())
}

/// A lazily connected channel to the feedback role, presenting `credential`
/// (and TLS for an `https://` endpoint).
pub(crate) fn feedback_channel(
    endpoint: &str,
    config: &Config,
    credential: &RoleCredential,
) -> anyhow::Result<RoleChannel> {
    crate::serving::balanced_channel("feedback", endpoint, config, credential)
}

/// Hands a chunk of remote events and the last sequence number it covers
/// to a consumer (on a blocking thread).
pub(crate) type RemoteDelivery = Arc<dyn Fn(Vec<watchnext_core::event::Event>, u64) + Send + Sync>;

/// Follows the feedback role's `Tail` stream from `from`, delivering each
/// chunk; reconnects from the next sequence number after any failure.
pub(crate) fn tail_remote(
    channel: RoleChannel,
    label: String,
    from: u64,
    deliver: RemoteDelivery,
    progress: Option<tokio::sync::watch::Sender<u64>>,
) {
    let mut next = from.max(1);
    tokio::spawn(async move {
        let mut client = watchnext_proto::v1::feedback_client::FeedbackClient::new(channel);
        loop {
            let request = watchnext_proto::v1::TailRequest { from_sequence: next, max_batch: 0 };
            let mut stream = match client.tail(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::warn!(consumer = %label, %status, "feedback Tail unavailable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let chunk = match stream.message().await {
                    Ok(Some(chunk)) => chunk,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(consumer = %label, %status, "feedback Tail stream broke; reconnecting");
                        break;
                    }
                };
                let count = chunk.events.len() as u64;
                let events: Vec<watchnext_core::event::Event> =
                    chunk.events.iter().filter_map(|e| watchnext_core::event::Event::from_proto(e, 0).ok()).collect();
                let last = chunk.first_sequence + count.saturating_sub(1);
                let deliver = deliver.clone();
                if tokio::task::spawn_blocking(move || deliver(events, last)).await.is_err() {
                    tracing::error!(consumer = %label, "a consumer panicked while observing; following stops");
                    return;
                }
                next = chunk.first_sequence + count;
                if let Some(p) = &progress {
                    let _ = p.send(next);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// Starts serving `config.server.role`.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let role = config.server.role;
    let execution_provider = onnx_for(&config)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    let info = Arc::new(ProcessInfo {
        role,
        started: Instant::now(),
        execution_provider,
        services: RwLock::new(Vec::new()),
        health,
    });

    let auth = crate::auth::Auth::from_config(&config.auth)?;
    auth.watch_files(Duration::from_secs(5));
    let tls = crate::tls::ServerTls::from_config(&config.tls)?;
    if let Some(tls) = &tls {
        tls.watch();
    }
    // Bounded pools for the CPU work of every role here (generators, ranker).
    let fanout = watchnext_recommender::config::Settings::from_values(
        &config.recommender.fanout,
        &config.recommender.combiner,
        &config.recommender.arms,
    )?
    .fanout;
    let pools = watchnext_recommender::cpu::CpuPools::with_max_wait(
        fanout.cpu_threads,
        fanout.cpu_queue,
        Duration::from_millis(fanout.cpu_max_queue_wait_ms),
    );
    let max_msg = config.server.max_message_bytes;
    let mut routes = RoutesBuilder::default();
    routes.add_service(health_service);
    let generator_roles: Vec<Role> = Role::generators().filter(|g| role.includes(*g)).collect();
    // The catalogue is read once, for every role here that needs it.
    let catalog = if generator_roles.is_empty() && !role.includes(Role::Ranker) && !role.includes(Role::Recommender) {
        None
    } else {
        let c = config.clone();
        tokio::task::spawn_blocking(move || generators::read_catalog(&c)).await??
    };
    let hosted = if generator_roles.is_empty() {
        Hosted::default()
    } else {
        let (config, catalog) = (config.clone(), catalog.clone());
        tokio::task::spawn_blocking(move || generators::build(&config, catalog.as_ref())).await??
    };
    if !generator_roles.is_empty() {
        let mut any_serving = false;
        let mut entries = Vec::new();
        for r in &generator_roles {
            let name = format!("{}/{}", service_names::CANDIDATE_GENERATOR, r.name());
            let generator = r.source().and_then(|s| hosted.get(s)).cloned();
            match generator.as_ref().map(|g| g.ready()) {
                Some(Ok(())) => {
                    any_serving = true;
                    info.set_service(&name, true, "").await;
                }
                Some(Err(why)) => info.set_service(&name, false, &why).await,
                None => info.set_service(&name, false, "could not be built; see the log").await,
            }
            entries.push((*r, generator));
        }
        let detail = if any_serving { "" } else { "no hosted generator is ready" };
        info.set_service(service_names::CANDIDATE_GENERATOR, any_serving, detail).await;
        watch_reloads(&hosted, &info);
        routes.add_service(
            CandidateGeneratorServer::new(GeneratorService::new(
                entries,
                config.generators.max_candidates,
                pools.generators.clone(),
            ))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg),
        );
    }
    let log = open_stream(&config).await?;
    let data = watchnext_core::datadir::DataDir::new(&config.data.dir);
    let ranker = if role.includes(Role::Ranker) {
        let (c, catalog) = (config.clone(), catalog.clone());
        let ranker = tokio::task::spawn_blocking(move || crate::serving::build_ranker(&c, catalog.as_ref())).await??;
        crate::serving::watch_models(ranker.clone(), data.models(), config.ranker.model_poll_seconds, info.clone());
        routes.add_service(
            RankerServer::new(RankerService::new(ranker.clone(), config.ranker.max_candidates, pools.ranker.clone()))
                .max_decoding_message_size(max_msg)
                .max_encoding_message_size(max_msg),
        );
        let detail = if ranker.active().is_some() { "" } else { "no ranking model loaded: run `watchnext train`" };
        info.set_service(service_names::RANKER, ranker.active().is_some(), detail).await;
        Some(ranker)
    } else {
        None
    };
    let recommender = if role.includes(Role::Recommender) {
        let rec = crate::serving::build_recommender(
            &config,
            &pools,
            auth.outgoing(),
            &hosted,
            ranker.clone(),
            log.as_ref(),
            catalog.as_ref(),
        )?;
        routes.add_service(
            RecommenderServer::new(RecommenderService::new(rec.clone(), config.recommender.max_results))
                .max_decoding_message_size(max_msg)
                .max_encoding_message_size(max_msg),
        );
        let has_sources = !hosted.generators.is_empty() || config.endpoints.generators.values().any(|u| !u.is_empty());
        let detail =
            if has_sources { "" } else { "no candidate generator in this process and no endpoints.* configured" };
        info.set_service(service_names::RECOMMENDER, has_sources, detail).await;
        Some(rec)
    } else {
        None
    };
    {
        // Catalogue changes reach the ranker and the recommender too.
        let mut consumers: Vec<CatalogConsumer> = hosted
            .generators
            .iter()
            .map(|h| {
                let g = h.generator.clone();
                Arc::new(move |c: &Arc<watchnext_core::catalog::Catalog>| g.update_catalog(c)) as CatalogConsumer
            })
            .collect();
        if let Some(r) = &ranker {
            let r = r.clone();
            consumers.push(Arc::new(move |c: &Arc<watchnext_core::catalog::Catalog>| r.update_catalog(c)));
        }
        if let Some(r) = &recommender {
            let r = r.clone();
            consumers.push(Arc::new(move |c: &Arc<watchnext_core::catalog::Catalog>| r.update_catalog(c)));
        }
        watch_catalog(&config, consumers, config.generators.catalog_poll_seconds);
    }
    // Admin is in every process; its health is "serving" only with a token.
    let admin = AdminServer::new(AdminService::new(info.clone(), ranker.clone(), recommender.clone(), data.models()))
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    routes
        .add_service(tonic::service::interceptor::InterceptedService::new(admin, AdminAuth::new(&config.admin.token)));
    let admin_detail = if config.admin.token.is_empty() { "disabled: no admin.token configured" } else { "" };
    info.set_service(service_names::ADMIN, !config.admin.token.is_empty(), admin_detail).await;
    if log.is_none() && !hosted.generators.is_empty() {
        if config.endpoints.feedback.is_empty() {
            tracing::warn!(
                "generators in this process learn nothing online: set endpoints.feedback to the feedback role's URL"
            );
        } else {
            follow_remote(&config.endpoints.feedback, &config, auth.outgoing(), &hosted, &info)?;
        }
    }
    if let Some(log) = &log {
        follow_log(log, &hosted, &info);
    }
    if let Some(log) = log.filter(|_| role.includes(Role::Feedback)) {
        routes.add_service(
            FeedbackServer::new(FeedbackService::new(
                log.clone(),
                config.feedback.clone(),
                config.server.max_tail_streams,
                auth.clone(),
            ))
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg),
        );
        let health = log.check_health();
        info.set_service(service_names::FEEDBACK, health.is_ok(), health.as_ref().err().map_or("", |e| e)).await;
        watch_stream_health(log, info.clone());
    }
    // Reflection lists exactly the services this process serves.
    let mut served = vec![
        "grpc.health.v1.Health".to_owned(),
        "grpc.reflection.v1.ServerReflection".to_owned(),
        "grpc.reflection.v1alpha.ServerReflection".to_owned(),
    ];
    served.extend(info.services.read().await.iter().filter(|s| !s.service.contains('/')).map(|s| s.service.clone()));
    let reflection = || {
        served.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(watchnext_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |b, name| b.with_service_name(name.clone()),
        )
    };
    routes.add_service(reflection().build_v1()?);
    routes.add_service(reflection().build_v1alpha()?);

    // The process itself is up: the empty service name reports SERVING.
    info.health.set_service_status("", ServingStatus::Serving).await;

    let listen = config.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding gRPC on {listen}"))?;
    let addr = listener.local_addr()?;

    let (metrics_addr, metrics, metrics_shutdown) = match config.metrics_addr()? {
        Some(maddr) => {
            let listener =
                telemetry::bind_metrics(maddr).await.with_context(|| format!("binding metrics on {maddr}"))?;
            let bound = listener.local_addr()?;
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(telemetry::serve_metrics(listener, async move {
                let _ = rx.await;
            }));
            (Some(bound), Some(task), Some(tx))
        }
        None => (None, None, None),
    };
    telemetry::prometheus();

    let (tx, rx) = oneshot::channel::<()>();
    let sv = &config.server;
    let keepalive = (sv.keepalive_interval_seconds > 0).then(|| Duration::from_secs(sv.keepalive_interval_seconds));
    let server = Server::builder()
        .timeout(Duration::from_secs(sv.request_timeout_seconds))
        .max_concurrent_streams(sv.max_streams_per_connection)
        .http2_keepalive_interval(keepalive)
        .http2_keepalive_timeout(Some(Duration::from_secs(sv.keepalive_timeout_seconds)))
        .http2_max_header_list_size(sv.max_header_list_bytes)
        .layer(RpcLayer::new(sv.max_concurrent_requests, Duration::from_millis(sv.request_body_timeout_ms), auth))
        .add_routes(routes.routes());
    let shutdown = async move {
        let _ = rx.await;
    };
    // TCP_NODELAY on every accepted connection: with Nagle's algorithm a
    // response written as several small frames (headers, data, trailers)
    // waits for the client's delayed ACK, ~40 ms per call.
    let server = match &tls {
        Some(tls) => tokio::spawn(server.serve_with_incoming_shutdown(tls.incoming(listener), shutdown)),
        None => tokio::spawn(server.serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )),
    };
    tracing::info!(%addr, metrics = ?metrics_addr, role = role.name(), tls = tls.is_some(), "watchnext serving");
    Ok(Running {
        addr,
        metrics_addr,
        info,
        recommender,
        grace: Duration::from_secs(config.server.shutdown_grace_seconds),
        shutdown: Some(tx),
        metrics_shutdown,
        server: Some(server),
        metrics,
    })
}
