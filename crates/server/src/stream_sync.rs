//! `watchnext stream pull | push`: moves events between the NATS JetStream
//! stream (`event_log.backend = "nats"`) and the data folder's embedded log.
//!
//! - **pull** copies what the stream holds beyond the last pull into the
//!   data folder's log, so every command that reads a data folder (`train`,
//!   `train-sequence`, `export`, `eval`) works on a NATS deployment: the
//!   retraining job pulls, then trains. `--follow` keeps copying.
//! - **push** publishes what the data folder's log holds beyond the last
//!   push into the stream: how `import` and `world generate` output reaches
//!   a NATS deployment.
//!
//! `import … --publish` and `world generate … --publish` push right after
//! writing the folder, and `export --from-stream …` pulls right before
//! reading it: the same two operations, one command each.
//!
//! Each direction records how far it got in a small file next to the log
//! (`feedback/nats-pull.json`, `feedback/nats-push.json`, written
//! crash-safely after each acknowledged chunk). A crash between an append
//! and that write is repaired on the next run: pull skips the events the
//! local log already took (it counts them), push publishes them again with
//! the same content ids, which JetStream stores once within its duplicate
//! window.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use watchnext_core::{Config, config::EventLogBackend, datadir::DataDir, event::Event};
use watchnext_feedback::{EventStream, FeedbackLog, LogOptions, LogReader};
use watchnext_nats::NatsStream;

/// Events per chunk moved.
const CHUNK: usize = 4_096;

/// `watchnext stream …`.
#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// Copy the NATS stream's new events into the data folder's log (for
    /// train, export, eval), from where the last pull stopped.
    Pull {
        /// Keep copying new events until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
    /// Publish the data folder's log (after `import` or `world generate`)
    /// into the NATS stream, from where the last push stopped.
    Push,
}

/// `--publish` of `import` and `world generate`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PublishArg {
    /// After writing the data folder, publish its new events into the NATS
    /// stream (event_log.backend = "nats"), as `watchnext stream push` does.
    #[arg(long, global = true)]
    pub publish: bool,
}

impl PublishArg {
    /// Refuses `--publish` without a NATS event log before anything is written.
    pub fn check(&self, config: &Config) -> anyhow::Result<()> {
        if self.publish { require_nats(config, "--publish") } else { Ok(()) }
    }

    /// Publishes when asked.
    pub async fn run(&self, config: &Config) -> anyhow::Result<()> {
        if self.publish { command(config, StreamCommand::Push).await } else { Ok(()) }
    }
}

/// `--from-stream` of `export`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct FromStreamArg {
    /// First copy the NATS stream's new events into the data folder
    /// (event_log.backend = "nats"), as `watchnext stream pull` does, then
    /// export: the export reads the stream's events.
    #[arg(long, global = true)]
    pub from_stream: bool,
}

impl FromStreamArg {
    /// Pulls when asked.
    pub async fn run(&self, config: &Config) -> anyhow::Result<()> {
        if !self.from_stream {
            return Ok(());
        }
        require_nats(config, "--from-stream")?;
        command(config, StreamCommand::Pull { follow: false }).await
    }
}

fn require_nats(config: &Config, what: &str) -> anyhow::Result<()> {
    if config.event_log.backend != EventLogBackend::Nats {
        bail!("{what} moves events to and from NATS: set event_log.backend = \"nats\" (and [event_log.nats])");
    }
    Ok(())
}

/// How far one direction got.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Position {
    /// The JetStream stream it refers to.
    stream: String,
    /// The last stream sequence number copied (pull).
    stream_seq: u64,
    /// The last local log sequence number written (pull) or published (push).
    local_seq: u64,
}

fn read_position(path: &Path) -> anyhow::Result<Option<Position>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_position(path: &Path, position: &Position) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(position)?;
    watchnext_core::fsutil::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Runs a `stream` subcommand.
pub async fn command(config: &Config, command: StreamCommand) -> anyhow::Result<()> {
    require_nats(config, "`watchnext stream`")?;
    let nats = &config.event_log.nats;
    let stream = NatsStream::connect(nats, "watchnext-stream-sync").await?;
    wait_ready(&stream).await?;
    let data = DataDir::new(&config.data.dir);
    match command {
        StreamCommand::Pull { follow } => pull(&stream, &nats.stream, &data, follow).await,
        StreamCommand::Push => push(&stream, &nats.stream, &data).await,
    }
}

async fn wait_ready(stream: &NatsStream) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match stream.check_health() {
            Ok(()) => return Ok(()),
            Err(reason) if tokio::time::Instant::now() > deadline => bail!("{reason} (waited 30 s)"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Copies new stream events into the local log.
pub async fn pull(stream: &NatsStream, name: &str, data: &DataDir, follow: bool) -> anyhow::Result<()> {
    let dir = data.feedback_log();
    let (log, _) = FeedbackLog::open(&dir, LogOptions::default())
        .with_context(|| format!("opening the data folder's log {}", dir.display()))?;
    let path = dir.join("nats-pull.json");
    let mut position = match read_position(&path)? {
        Some(p) if p.stream != name => {
            bail!("{} was pulled from stream {}, not {name}: pull into another data folder", dir.display(), p.stream)
        }
        Some(p) => p,
        None if log.last_seq() > 0 => bail!(
            "the data folder's log already holds {} events that did not come from stream {name}; pull into an empty \
             data folder (or publish these with `watchnext stream push` first)",
            log.last_seq()
        ),
        None => Position { stream: name.to_owned(), ..Position::default() },
    };
    // Appended before a crash, position not yet recorded: already here.
    let mut skip = log.last_seq().saturating_sub(position.local_seq);
    let target = if follow { u64::MAX } else { stream.last_seq().await? };
    if position.stream_seq >= target {
        println!("stream pull: up to date (stream sequence {}, {} events here)", position.stream_seq, log.last_seq());
        return Ok(());
    }
    let (started, first_local) = (std::time::Instant::now(), log.last_seq());
    let mut chunks = stream.follow(position.stream_seq + 1, CHUNK);
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk?;
        let last = chunk.last_seq();
        let mut events = chunk.events;
        let drop = usize::try_from(skip).unwrap_or(usize::MAX).min(events.len());
        events.drain(..drop);
        skip -= drop as u64;
        if !events.is_empty() {
            log.append(events).await?;
        }
        position.stream_seq = last;
        position.local_seq = log.last_seq();
        write_position(&path, &position)?;
        if last >= target {
            break;
        }
    }
    println!(
        "stream pull: {} events from stream {name} into {} in {:.1} s (stream sequence {}, {} events here)",
        log.last_seq() - first_local,
        dir.display(),
        started.elapsed().as_secs_f64(),
        position.stream_seq,
        log.last_seq()
    );
    Ok(())
}

/// Publishes new local events into the stream.
pub async fn push(stream: &NatsStream, name: &str, data: &DataDir) -> anyhow::Result<()> {
    let dir = data.feedback_log();
    let path = dir.join("nats-push.json");
    let mut position = match read_position(&path)? {
        Some(p) if p.stream != name => {
            bail!("{} was pushed to stream {}, not {name}", dir.display(), p.stream)
        }
        Some(p) => p,
        None => Position { stream: name.to_owned(), ..Position::default() },
    };
    let started = std::time::Instant::now();
    let mut reader = LogReader::open(&dir, position.local_seq + 1)
        .with_context(|| format!("reading the data folder's log {}", dir.display()))?;
    let stream: Arc<dyn EventStream> = Arc::new(stream.clone());
    let mut sent = 0u64;
    loop {
        let mut events: Vec<Event> = Vec::with_capacity(CHUNK);
        let mut last = position.local_seq;
        for record in reader.by_ref().take(CHUNK) {
            let (seq, event) = record?;
            events.push(event);
            last = seq;
        }
        if events.is_empty() {
            break;
        }
        let ids = events.iter().map(Event::content_id).collect();
        sent += events.len() as u64;
        stream.append(events, ids).await?;
        position.local_seq = last;
        write_position(&path, &position)?;
    }
    println!(
        "stream push: {sent} events from {} into stream {name} in {:.1} s (local sequence {})",
        dir.display(),
        started.elapsed().as_secs_f64(),
        position.local_seq
    );
    Ok(())
}
