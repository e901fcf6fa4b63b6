//! How a user responds to a shown list, and what they do next: the one piece
//! of behaviour that the log generator ([`crate::logs`]) and the live
//! population ([`crate::live`]) share, so both behave identically.
//!
//! Events are produced as compact records ([`Rec`]: indices, not strings) and
//! turned into [`watchnext_core::event::Event`]s only on the way out.

use std::collections::VecDeque;

use rand::Rng;
use watchnext_core::{
    Device,
    event::{Event, EventKind, Impression, Source, Vote},
};

use crate::{
    random::{chance, exponential, uniform},
    world::World,
};

/// Pause after a session before the user's next one can start.
pub(crate) const SESSION_GAP_MS: i64 = 60_000;

/// What happened, in compact form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RecKind {
    /// `score` and `propensity` are the logging policy's (unused by live users,
    /// whose impressions carry the server's metadata).
    Impression {
        position: u32,
        query: u32,
        score: f32,
        propensity: f32,
    },
    Click {
        position: u32,
    },
    Watch {
        seconds: f32,
        organic: bool,
    },
    Like,
    Dismiss,
    Rating {
        value: f32,
    },
}

/// One event in compact form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rec {
    pub ts: i64,
    pub user: u32,
    pub video: u32,
    /// 1-based per-user request number; 0 for organic events.
    pub request: u64,
    pub device: Device,
    pub kind: RecKind,
}

/// A finished watch in a user's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Watched {
    pub video: u32,
    pub end_ms: i64,
    pub seconds: f32,
}

/// What the simulator remembers about a user between requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserState {
    /// Recent watches, oldest first (at most `history_length`).
    pub history: VecDeque<Watched>,
    /// The user is busy (in a session) until then.
    pub busy_until: i64,
    /// Requests made so far (the last request number).
    pub requests: u64,
}

impl UserState {
    pub(crate) fn remember(&mut self, watched: Watched, cap: usize) {
        if cap == 0 {
            return;
        }
        if self.history.len() == cap {
            self.history.pop_front();
        }
        self.history.push_back(watched);
    }

    pub(crate) fn has_watched(&self, video: u32) -> bool {
        self.history.iter().any(|w| w.video == video)
    }
}

/// One video of a shown list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub video: u32,
    pub score: f32,
    pub propensity: f32,
}

/// The state of a session at a request: the user starts playing `query` at
/// `start_ms` and will watch `query_seconds` of it; the watch-next list is
/// requested at that moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Step {
    pub user: u32,
    pub device: Device,
    pub query: u32,
    pub start_ms: i64,
    pub query_seconds: f32,
    /// The query was picked organically: its watch event is emitted with this
    /// step (clicked queries had theirs emitted with the previous step).
    pub organic_query: bool,
    /// 0-based index of this list in the session.
    pub index: u32,
}

/// What the user does after responding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum After {
    /// The session goes on with another request.
    Next(Step),
    /// The session ended; the user was active until `at_ms`.
    End { at_ms: i64 },
}

/// The request id of a user's `n`-th request: `r{user}-{n}`.
pub(crate) fn request_id(user: u32, n: u64) -> String {
    format!("r{user}-{n}")
}

/// The public form of a record; impressions get `model_version`, no
/// experiment arm, no features, and the policy's score under
/// [`Source::Context`].
pub(crate) fn to_event(world: &World, rec: &Rec, model_version: &str) -> Event {
    let kind = match rec.kind {
        RecKind::Impression { position, query, score, propensity } => EventKind::Impression(Impression {
            position,
            query_video: Some(world.video_id(query).clone()),
            sources: vec![Vote::new(Source::Context, score, 0)],
            features: None,
            model_version: model_version.to_owned(),
            experiment_arm: String::new(),
            propensity,
        }),
        RecKind::Click { .. } => EventKind::Click,
        RecKind::Watch { seconds, .. } => EventKind::Watch {
            seconds_watched: seconds,
            video_duration_seconds: world.video(rec.video).duration_seconds,
        },
        RecKind::Like => EventKind::Like,
        RecKind::Dismiss => EventKind::Dismiss,
        RecKind::Rating { value } => EventKind::Rating { value },
    };
    Event {
        timestamp_ms: rec.ts,
        request_id: if rec.request == 0 { String::new() } else { request_id(rec.user, rec.request) },
        user: world.user_id(rec.user).clone(),
        video: world.video_id(rec.video).clone(),
        device: rec.device,
        kind,
    }
}

fn ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

/// Seconds watched of `video` by `user`: F·duration with F = U^((1−f)/f),
/// whose mean is exactly f = f(u, v).
fn watch_seconds<R: Rng + ?Sized>(world: &World, rng: &mut R, user: u32, video: u32) -> f32 {
    let f = world.expected_watch_fraction(user, video).clamp(1e-6, 1.0 - 1e-6);
    let fraction = uniform(rng).powf((1.0 - f) / f);
    (fraction * f64::from(world.video(video).duration_seconds)) as f32
}

/// Starts a session of `user` at `at_ms` on `device`: the user picks a
/// video organically and starts playing it. `None` when nothing is available
/// yet (an empty platform at that time).
pub(crate) fn start_session<R: Rng + ?Sized>(
    world: &World,
    rng: &mut R,
    user: u32,
    device: Device,
    at_ms: i64,
) -> Option<Step> {
    let query = world.organic_video(rng, user, at_ms)?;
    let query_seconds = watch_seconds(world, rng, user, query);
    Some(Step { user, device, query, start_ms: at_ms, query_seconds, organic_query: true, index: 0 })
}

/// The response model (see the crate documentation): the user, who has just
/// started playing `step.query` and been shown `list` (request number
/// `request`, 0 when there is no list), watches the query video, examines
/// each slot p with probability e(p, d), clicks an examined video with
/// probability r(u, v), watches every clicked video in list order, likes,
/// dismisses and rates by satisfaction, then goes on or stops.
///
/// Pushes the resulting events (not sorted) to `out` and returns what comes
/// next.
pub(crate) fn respond<R: Rng + ?Sized>(
    world: &World,
    state: &mut UserState,
    step: &Step,
    request: u64,
    list: &[Slot],
    rng: &mut R,
    out: &mut Vec<Rec>,
) -> After {
    let config = world.config();
    let cap = config.population.history_length as usize;
    let user = step.user;
    let truth = world.user(user);
    let rec =
        |ts: i64, video: u32, request: u64, kind: RecKind| Rec { ts, user, video, request, device: step.device, kind };

    let t0 = step.start_ms;
    let query_end = t0 + ms(f64::from(step.query_seconds));
    if step.organic_query {
        out.push(rec(query_end, step.query, 0, RecKind::Watch { seconds: step.query_seconds, organic: true }));
        state.remember(Watched { video: step.query, end_ms: query_end, seconds: step.query_seconds }, cap);
    }
    for (i, slot) in list.iter().enumerate() {
        let position = (i + 1) as u32;
        let kind = RecKind::Impression { position, query: step.query, score: slot.score, propensity: slot.propensity };
        out.push(rec(t0, slot.video, request, kind));
    }

    // The user reaches the list when done with the query video. Clicks are
    // independent across slots (position-based model): P(click at p) =
    // e(p, d)·r(u, v) exactly.
    let mut clicked: Vec<(u32, u32)> = Vec::new();
    for (i, slot) in list.iter().enumerate() {
        let position = (i + 1) as u32;
        if !chance(rng, world.examination(position, step.device)) {
            continue;
        }
        let m = world.topic_match(user, slot.video);
        if chance(rng, world.click_prob_given_match(slot.video, m)) {
            clicked.push((position, slot.video));
        } else {
            let p = f64::from(truth.dismiss_tendency) * config.response.dismiss_unclicked * (1.0 - m);
            if chance(rng, p) {
                out.push(rec(query_end + 400 * i64::from(position), slot.video, request, RecKind::Dismiss));
            }
        }
    }

    // Clicked videos are watched one after the other, in list order.
    let mut t = query_end;
    let mut last: Option<(Step, f64)> = None;
    for &(position, video) in &clicked {
        t += 1_000 + 500 * i64::from(position) + ms(exponential(rng, 1.0));
        out.push(rec(t, video, request, RecKind::Click { position }));
        let start = t + 1_000;
        let seconds = watch_seconds(world, rng, user, video);
        let end = start + ms(f64::from(seconds));
        out.push(rec(end, video, request, RecKind::Watch { seconds, organic: false }));
        state.remember(Watched { video, end_ms: end, seconds }, cap);
        let s = world.satisfaction_given_match(video, world.topic_match(user, video));
        if chance(rng, f64::from(truth.like_tendency) * s) {
            out.push(rec(end + 1_000, video, request, RecKind::Like));
        }
        if chance(rng, f64::from(truth.dismiss_tendency) * (1.0 - s) * (1.0 - s)) {
            out.push(rec(end + 1_500, video, request, RecKind::Dismiss));
        }
        if chance(rng, f64::from(truth.rate_tendency)) {
            let stars = 1 + (0..4).filter(|_| chance(rng, s)).count();
            out.push(rec(end + 2_000, video, request, RecKind::Rating { value: stars as f32 }));
        }
        t = end + 2_000;
        let next = Step {
            user,
            device: step.device,
            query: video,
            start_ms: start,
            query_seconds: seconds,
            organic_query: false,
            index: step.index + 1,
        };
        last = Some((next, s));
    }

    let session = &config.session;
    if step.index + 1 >= session.max_steps {
        return After::End { at_ms: t };
    }
    let organic = match last {
        Some((next, s)) => {
            if !chance(rng, session.continue_prob * (1.0 - session.satisfaction_weight * (1.0 - s))) {
                return After::End { at_ms: t };
            }
            if !chance(rng, session.organic_after_click) {
                return After::Next(next);
            }
            true
        }
        None => chance(rng, session.organic_after_no_click),
    };
    if !organic {
        return After::End { at_ms: t };
    }
    let at = t + 5_000 + ms(exponential(rng, 20.0));
    match start_session(world, rng, user, step.device, at) {
        Some(next) => After::Next(Step { index: step.index + 1, ..next }),
        None => After::End { at_ms: t },
    }
}
