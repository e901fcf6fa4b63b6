//! The log generator: the world's users run sessions against a
//! [`LoggingPolicy`] and the events go, in time order, into an
//! [`EventSink`].
//!
//! How it stays fast, bounded and reproducible:
//!
//! - **Rate.** A pilot run of 2,000 sessions (its own stream; users drawn ∝
//!   activity, each warmed up by two sessions first) estimates the
//!   events per session under the policy; every user's session rate λ_u is
//!   multiplied by one factor so that `target_events` (plus 5%) are expected
//!   over the configured days. Relative activity, the device mix and the
//!   clock are unchanged. The stream ends after exactly `target_events`
//!   events (a prefix of the time-ordered stream, like a real log cut at a
//!   moment, so the last sessions may be cut short); if the days run out
//!   first, the simulation goes on past them.
//! - **Chunks.** Time is cut into chunks of whole hours (24 h, or less when a
//!   day would hold more than ~1M events). In each chunk every user draws
//!   `Poisson(λ_u·scale·Σ_d p_u(d)·H_d(chunk))` session starts (H_d: the
//!   device's share of the day that the chunk's hours hold), each with a
//!   device ∝ p_u(d)·H_d and a time ∝ the device's hour profile; sessions of
//!   one user never overlap. Users are simulated in parallel (rayon), each
//!   from the stream `(seed, user, chunk)`, carrying their history across
//!   chunks.
//! - **Order.** A chunk's events are sorted by (time, user, chunk, sequence)
//!   — a total order, so the result does not depend on scheduling — and those
//!   before the chunk's end are emitted; the rest (sessions running over the
//!   boundary) wait for the next chunk. Memory is bounded by about one chunk.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use watchnext_core::{
    Device,
    event::{Event, EventSink},
};

use crate::{
    error::WorldError,
    policy::LoggingPolicy,
    random::{self, AliasTable, kind, normal, poisson_quantile, uniform, unit_from_bits},
    response::{After, Rec, RecKind, SESSION_GAP_MS, Slot, Step, UserState, respond, start_session, to_event},
    world::{DAY_MS, HOUR_MS, SIM_DEVICES, World},
};

/// Sessions in the pilot run that estimates events per session.
const PILOT_SESSIONS: usize = 2_000;
/// Expected events are planned this much above the target, so the target is
/// usually reached within the configured days.
const MARGIN: f64 = 1.05;
/// Preferred events per chunk (bounds memory).
const CHUNK_EVENTS: f64 = 1_000_000.0;
/// Users per parallel task.
const USER_BLOCK: usize = 256;
/// Events converted per parallel batch on the way out.
const EMIT_BATCH: usize = 65_536;

/// What a generated log holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSummary {
    /// The logging policy's name.
    pub policy: String,
    /// Events emitted (all kinds).
    pub events: u64,
    pub impressions: u64,
    pub clicks: u64,
    /// Watch events, organic ones included.
    pub watches: u64,
    /// Watch events with no request (the user's own picks).
    pub organic_watches: u64,
    pub likes: u64,
    pub dismisses: u64,
    pub ratings: u64,
    /// Lists shown (impressions at position 1).
    pub requests: u64,
    /// Time of the first and the last event (Unix ms; 0 when empty).
    pub first_ms: i64,
    pub last_ms: i64,
    /// The factor applied to every user's sessions per day.
    pub session_rate_scale: f64,
    /// Impressions by position (index p − 1) and device
    /// ([`watchnext_core::Device::index`]).
    pub impressions_by_position: Vec<[u64; 5]>,
    /// Clicks by the position and device of the clicked impression.
    pub clicks_by_position: Vec<[u64; 5]>,
}

impl LogSummary {
    fn new(policy: LoggingPolicy, k: usize) -> Self {
        Self {
            policy: policy.name().to_owned(),
            events: 0,
            impressions: 0,
            clicks: 0,
            watches: 0,
            organic_watches: 0,
            likes: 0,
            dismisses: 0,
            ratings: 0,
            requests: 0,
            first_ms: 0,
            last_ms: 0,
            session_rate_scale: 0.0,
            impressions_by_position: vec![[0; 5]; k],
            clicks_by_position: vec![[0; 5]; k],
        }
    }

    fn count(&mut self, rec: &Rec) {
        if self.events == 0 {
            self.first_ms = rec.ts;
        }
        self.events += 1;
        self.last_ms = rec.ts;
        let d = rec.device.index();
        match rec.kind {
            RecKind::Impression { position, .. } => {
                self.impressions += 1;
                self.requests += u64::from(position == 1);
                if let Some(row) = self.impressions_by_position.get_mut((position as usize).wrapping_sub(1)) {
                    row[d] += 1;
                }
            }
            RecKind::Click { position } => {
                self.clicks += 1;
                if let Some(row) = self.clicks_by_position.get_mut((position as usize).wrapping_sub(1)) {
                    row[d] += 1;
                }
            }
            RecKind::Watch { organic, .. } => {
                self.watches += 1;
                self.organic_watches += u64::from(organic);
            }
            RecKind::Like => self.likes += 1,
            RecKind::Dismiss => self.dismisses += 1,
            RecKind::Rating { .. } => self.ratings += 1,
        }
    }

    /// Measured click-through rate at `position` (1-based) on `device`;
    /// `None` without impressions there.
    pub fn ctr(&self, position: u32, device: Device) -> Option<f64> {
        let p = (position as usize).checked_sub(1)?;
        let shown = self.impressions_by_position.get(p)?[device.index()];
        let clicks = self.clicks_by_position.get(p)?[device.index()];
        (shown > 0).then(|| clicks as f64 / shown as f64)
    }
}

/// A sink that only counts (benchmarks, dry runs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountingSink {
    pub events: u64,
}

impl EventSink for CountingSink {
    type Error = std::convert::Infallible;

    fn push(&mut self, _event: Event) -> Result<(), Self::Error> {
        self.events += 1;
        Ok(())
    }
}

/// A record with its sort key.
#[derive(Debug, Clone, Copy)]
struct Keyed {
    rec: Rec,
    chunk: u32,
    seq: u32,
}

impl Keyed {
    fn key(&self) -> (i64, u32, u32, u32) {
        (self.rec.ts, self.rec.user, self.chunk, self.seq)
    }
}

/// Scratch buffers of one worker.
#[derive(Default)]
struct Scratch {
    pool: Vec<(f64, u32)>,
    list: Vec<Slot>,
    recs: Vec<Rec>,
}

/// Runs one session from its first step to its end under `policy`; pushes
/// its events to `scratch.recs` and returns when the user is free again.
fn run_session<R: Rng + ?Sized>(
    world: &World,
    policy: LoggingPolicy,
    state: &mut UserState,
    first: Step,
    rng: &mut R,
    scratch: &mut Scratch,
) {
    let begin = scratch.recs.len();
    let mut step = first;
    let end = loop {
        state.requests += 1;
        let request = state.requests;
        policy.choose(world, rng, step.query, step.start_ms, state, &mut scratch.pool, &mut scratch.list);
        match respond(world, state, &step, request, &scratch.list, rng, &mut scratch.recs) {
            After::Next(next) => step = next,
            After::End { at_ms } => break at_ms,
        }
    };
    let last = scratch.recs[begin..].iter().map(|r| r.ts).max().unwrap_or(end).max(end);
    state.busy_until = last + SESSION_GAP_MS;
}

/// Mean events per session under `policy`: a seeded pilot run of users
/// drawn ∝ activity, each warmed up by two sessions (so that their history
/// is not empty) and then counted over four.
fn events_per_session(world: &World, policy: LoggingPolicy) -> f64 {
    const WARM_UP: usize = 2;
    const COUNTED: usize = 4;
    let config = world.config();
    let mut rng = random::stream(config.seed, kind::PILOT, 0, 0);
    let activity = AliasTable::new(&world.users().iter().map(|u| f64::from(u.sessions_per_day)).collect::<Vec<_>>());
    let mut scratch = Scratch::default();
    let period = i64::from(config.days) * DAY_MS;
    let mut counted = 0;
    for _ in 0..PILOT_SESSIONS / COUNTED {
        let user = activity.sample(&mut rng).unwrap_or(0) as u32;
        let mut state = UserState::default();
        let mut at = config.epoch_ms + (uniform(&mut rng) * period as f64) as i64;
        for session in 0..WARM_UP + COUNTED {
            if session == WARM_UP {
                scratch.recs.clear();
            }
            let device = world.session_device(&mut rng, user);
            if let Some(step) = start_session(world, &mut rng, user, device, at.max(state.busy_until)) {
                run_session(world, policy, &mut state, step, &mut rng, &mut scratch);
            }
            at = state.busy_until + HOUR_MS;
        }
        counted += scratch.recs.len();
    }
    (counted as f64 / PILOT_SESSIONS as f64).max(1.0)
}

/// Everything a chunk's workers share.
struct Chunk<'a> {
    world: &'a World,
    policy: LoggingPolicy,
    scale: f64,
    index: u32,
    start_ms: i64,
    /// Each device's hour-profile weight of each hour of the chunk.
    hour_weights: [Vec<f64>; 4],
    /// Σ over the chunk's hours of each device's hour profile.
    mass: [f64; 4],
}

impl Chunk<'_> {
    /// Simulates the sessions of `user` that start in this chunk.
    fn simulate_user(&self, user: u32, state: &mut UserState, scratch: &mut Scratch, out: &mut Vec<Keyed>) {
        let world = self.world;
        let seed = world.config().seed;
        let truth = world.user(user);
        let weights: [f64; 4] = std::array::from_fn(|d| f64::from(truth.device_mix[d]) * self.mass[d]);
        let total: f64 = weights.iter().sum();
        let mean = f64::from(truth.sessions_per_day) * self.scale * total;
        let bits = random::key(seed, kind::SESSION_COUNT, u64::from(user), u64::from(self.index));
        let sessions = poisson_quantile(mean, unit_from_bits(bits), || {
            normal(&mut random::stream(seed, kind::SESSION_COUNT, u64::from(user), u64::from(self.index)))
        });
        if sessions == 0 || total <= 0.0 {
            return;
        }
        let mut rng = random::stream(seed, kind::SESSIONS, u64::from(user), u64::from(self.index));
        let mut starts: Vec<(i64, usize)> = (0..sessions)
            .map(|_| {
                let d = pick(&weights, total, uniform(&mut rng));
                let slot = pick(&self.hour_weights[d], self.mass[d], uniform(&mut rng));
                let at = self.start_ms + slot as i64 * HOUR_MS + (uniform(&mut rng) * HOUR_MS as f64) as i64;
                (at, d)
            })
            .collect();
        starts.sort_unstable();
        scratch.recs.clear();
        for (at, d) in starts {
            let at = at.max(state.busy_until);
            let device = SIM_DEVICES[d];
            if let Some(step) = start_session(world, &mut rng, user, device, at) {
                run_session(world, self.policy, state, step, &mut rng, scratch);
            }
        }
        out.extend(scratch.recs.iter().enumerate().map(|(seq, &rec)| Keyed {
            rec,
            chunk: self.index,
            seq: seq as u32,
        }));
    }
}

/// Index drawn ∝ `weights` (summing to `total`) by the uniform `u`.
fn pick(weights: &[f64], total: f64, u: f64) -> usize {
    let mut x = u * total;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

/// Generates `target_events` events of `world`'s users under `policy` into
/// `sink`, in non-decreasing time order (see the module documentation). With
/// `progress`, a progress bar is drawn on stderr when it is a terminal.
///
/// The same world, policy and target give the same byte-for-byte stream,
/// whatever the number of threads.
pub fn generate_logs<S: EventSink + ?Sized>(
    world: &World,
    policy: LoggingPolicy,
    target_events: u64,
    sink: &mut S,
    progress: bool,
) -> Result<LogSummary, WorldError> {
    policy.validate()?;
    let config = world.config();
    let mut summary = LogSummary::new(policy, config.list_size as usize);
    if target_events == 0 {
        return Ok(summary);
    }
    let per_session = events_per_session(world, policy);
    let total_rate: f64 = world.users().iter().map(|u| f64::from(u.sessions_per_day)).sum();
    let days = f64::from(config.days);
    let scale = target_events as f64 * MARGIN / (per_session * days * total_rate.max(1e-9));
    summary.session_rate_scale = scale;
    let per_day = target_events as f64 * MARGIN / days;
    let chunk_hours = ((24.0 * CHUNK_EVENTS / per_day).floor() as i64).clamp(1, 24);
    let planned = (i64::from(config.days) * 24 + chunk_hours - 1) / chunk_hours;
    let max_chunks = planned * 20 + 100;
    tracing::debug!(per_session, scale, chunk_hours, "generating {target_events} events with {}", policy.name());

    let bar = if progress {
        ProgressBar::with_draw_target(Some(target_events), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} events ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }

    let name = policy.name();
    let mut states = vec![UserState::default(); world.num_users() as usize];
    let mut pending: Vec<Keyed> = Vec::new();
    let mut remaining = target_events;
    let mut emit = |ready: &[Keyed], summary: &mut LogSummary, remaining: &mut u64| -> Result<(), WorldError> {
        let take = ready.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
        for batch in ready[..take].chunks(EMIT_BATCH) {
            let events: Vec<Event> = batch.par_iter().map(|k| to_event(world, &k.rec, name)).collect();
            for (keyed, event) in batch.iter().zip(events) {
                summary.count(&keyed.rec);
                sink.push(event).map_err(|e| WorldError::Sink(Box::new(e)))?;
            }
            bar.inc(batch.len() as u64);
        }
        *remaining -= take as u64;
        Ok(())
    };

    for c in 0..max_chunks {
        let start_ms = config.epoch_ms + c * chunk_hours * HOUR_MS;
        let end_ms = start_ms + chunk_hours * HOUR_MS;
        let hours: Vec<usize> =
            (0..chunk_hours).map(|h| ((start_ms + h * HOUR_MS).rem_euclid(DAY_MS) / HOUR_MS) as usize).collect();
        let hour_weights: [Vec<f64>; 4] =
            std::array::from_fn(|d| hours.iter().map(|&h| world.hour_profile(d)[h]).collect());
        let mass: [f64; 4] = std::array::from_fn(|d| hour_weights[d].iter().sum());
        let chunk = Chunk { world, policy, scale, index: c as u32, start_ms, hour_weights, mass };
        let fresh: Vec<Vec<Keyed>> = states
            .par_chunks_mut(USER_BLOCK)
            .enumerate()
            .map(|(b, block)| {
                let mut scratch = Scratch::default();
                let mut out = Vec::new();
                for (i, state) in block.iter_mut().enumerate() {
                    chunk.simulate_user((b * USER_BLOCK + i) as u32, state, &mut scratch, &mut out);
                }
                out
            })
            .collect();
        pending.reserve(fresh.iter().map(Vec::len).sum());
        for block in fresh {
            pending.extend(block);
        }
        pending.par_sort_unstable_by_key(Keyed::key);
        let ready = pending.partition_point(|k| k.rec.ts < end_ms);
        emit(&pending[..ready], &mut summary, &mut remaining)?;
        pending.drain(..ready);
        if remaining == 0 {
            break;
        }
    }
    if remaining > 0 {
        // Only reached if the users stopped producing events altogether.
        emit(&pending, &mut summary, &mut remaining)?;
    }
    bar.finish_and_clear();
    tracing::info!(
        events = summary.events,
        impressions = summary.impressions,
        clicks = summary.clicks,
        "generated a {} log",
        summary.policy
    );
    Ok(summary)
}
