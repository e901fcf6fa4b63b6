//! The live user population: the world's users, one request at a time,
//! against any recommender — for closed-loop A/B tests against a running
//! server.
//!
//! ```text
//! let mut users = Population::new(world, start_ms);
//! while let Some(request) = users.next_request() {
//!     let shown = /* ask the server for request.query_video … */;
//!     let response = users.respond(&request, &shown)?;   // events + what the user does next
//! }
//! ```
//!
//! [`Population::next_request`] hands out requests in simulated-time order:
//! each user has one planned action (a session start or the next step of a
//! session), and the earliest one across users goes first. The response
//! model is the log generator's own (the private `response` module), so a live user
//! answers a list exactly as a logged one would. Each user draws from their
//! own stream `(seed, user)`: the population's behaviour is reproducible
//! given the lists it is shown.
//!
//! Events of one response are in time order; responses of different users
//! overlap in time as they would on a real platform (a consumer that needs
//! one ordered stream merges them). The response's events include the
//! impressions of the shown list with positions `1..=len` (taking every
//! other impression field, such as model version, sources and features,
//! from the [`ShownVideo`]) and the organic watch of the query video when
//! the user picked it themselves.

use std::{cmp::Reverse, collections::BinaryHeap, fmt, sync::Arc};

use rand_chacha::ChaCha8Rng;
use watchnext_core::{
    Device, RequestId, UserId, VideoId,
    event::{Event, EventKind, Impression},
    request::{History, HistoryEntry},
};

use crate::{
    error::WorldError,
    policy::LoggingPolicy,
    random::{self, kind},
    response::{After, Rec, SESSION_GAP_MS, Slot, Step, UserState, request_id, respond, start_session, to_event},
    world::World,
};

/// One video of a list shown to a live user.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownVideo {
    pub video: VideoId,
    /// Logged with the impression as given, except `position` (the list
    /// order) and `query_video` (the request's), which the world sets.
    pub impression: Impression,
}

impl ShownVideo {
    /// A video with plain impression metadata.
    pub fn new(video: VideoId, model_version: &str) -> Self {
        Self { video, impression: Impression { model_version: model_version.to_owned(), ..Impression::default() } }
    }
}

/// A request a live user makes: they start playing `query_video` and want
/// its watch-next list.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveRequest {
    pub request_id: RequestId,
    pub user: UserId,
    pub device: Device,
    pub query_video: VideoId,
    /// The user's finished watches before `time_ms`, oldest first.
    pub history: History,
    /// Unix epoch milliseconds.
    pub time_ms: i64,
    /// 0-based index of this list within the user's session.
    pub session_step: u32,
    user_index: u32,
    number: u64,
}

/// What the user does after a response.
#[derive(Debug, Clone, PartialEq)]
pub enum NextAction {
    /// The user plays `query_video` (clicked in the list, or `organic`: picked
    /// themselves) and will ask for its watch-next list at `at_ms`.
    Continue { query_video: VideoId, organic: bool, at_ms: i64 },
    /// The session is over; the user's next one starts at `next_session_ms`.
    EndSession { next_session_ms: i64 },
}

/// The outcome of one shown list.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveResponse {
    /// Impressions, clicks, watches, likes, dismissals and ratings, in time
    /// order.
    pub events: Vec<Event>,
    pub next: NextAction,
}

enum Plan {
    Session { at_ms: i64, device: Device },
    Step(Step),
    Outstanding { step: Step, number: u64 },
}

struct LiveUser {
    state: UserState,
    rng: ChaCha8Rng,
    plan: Plan,
}

/// The world's users, live.
pub struct Population {
    world: Arc<World>,
    users: Vec<LiveUser>,
    queue: BinaryHeap<Reverse<(i64, u32)>>,
}

impl fmt::Debug for Population {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Population")
            .field("world", &self.world)
            .field("users", &self.users.len())
            .field("planned", &self.queue.len())
            .finish()
    }
}

impl Population {
    /// Every user of `world`, each with a first session after `start_ms`.
    pub fn new(world: Arc<World>, start_ms: i64) -> Self {
        let seed = world.config().seed;
        let mut queue = BinaryHeap::with_capacity(world.num_users() as usize);
        let users = (0..world.num_users())
            .map(|u| {
                let mut rng = random::stream(seed, kind::LIVE, u64::from(u), 0);
                let (at_ms, device) = world.next_session(&mut rng, u, start_ms);
                queue.push(Reverse((at_ms, u)));
                LiveUser { state: UserState::default(), rng, plan: Plan::Session { at_ms, device } }
            })
            .collect();
        Self { world, users, queue }
    }

    /// The world the users live in.
    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// When the next request will be made, if any user is free.
    pub fn next_time_ms(&self) -> Option<i64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// The earliest planned request. `None` only when every user has a
    /// request outstanding.
    pub fn next_request(&mut self) -> Option<LiveRequest> {
        while let Some(Reverse((_, u))) = self.queue.pop() {
            let world = &*self.world;
            let user = &mut self.users[u as usize];
            let step = match user.plan {
                Plan::Step(step) => step,
                Plan::Session { at_ms, device } => {
                    let at = at_ms.max(user.state.busy_until);
                    match start_session(world, &mut user.rng, u, device, at) {
                        Some(step) => step,
                        None => {
                            // Nothing uploaded yet: try again later.
                            let (at_ms, device) = world.next_session(&mut user.rng, u, at);
                            user.plan = Plan::Session { at_ms, device };
                            self.queue.push(Reverse((at_ms, u)));
                            continue;
                        }
                    }
                }
                Plan::Outstanding { .. } => continue,
            };
            user.state.requests += 1;
            let number = user.state.requests;
            user.plan = Plan::Outstanding { step, number };
            let history = History(
                user.state
                    .history
                    .iter()
                    .filter(|w| w.end_ms <= step.start_ms)
                    .map(|w| HistoryEntry {
                        video: world.video_id(w.video).clone(),
                        watched_at_ms: w.end_ms,
                        seconds_watched: w.seconds,
                    })
                    .collect(),
            );
            let request_id = RequestId::parse("request_id", &request_id(u, number)).ok()?;
            return Some(LiveRequest {
                request_id,
                user: world.user_id(u).clone(),
                device: step.device,
                query_video: world.video_id(step.query).clone(),
                history,
                time_ms: step.start_ms,
                session_step: step.index,
                user_index: u,
                number,
            });
        }
        None
    }

    fn outstanding(&self, request: &LiveRequest) -> Result<Step, WorldError> {
        match self.users.get(request.user_index as usize).map(|u| &u.plan) {
            Some(&Plan::Outstanding { step, number }) if number == request.number => Ok(step),
            _ => Err(WorldError::NotOutstanding { request_id: request.request_id.to_string() }),
        }
    }

    /// The user's response to `shown` (positions 1, 2, … in slice order):
    /// the resulting events and what the user does next. A video that is not
    /// in the catalogue is an error (and the request stays outstanding).
    pub fn respond(&mut self, request: &LiveRequest, shown: &[ShownVideo]) -> Result<LiveResponse, WorldError> {
        let step = self.outstanding(request)?;
        let slots = shown
            .iter()
            .enumerate()
            .map(|(i, s)| {
                self.world
                    .video_index(s.video.as_str())
                    .map(|video| Slot { video, score: 0.0, propensity: 0.0 })
                    .ok_or_else(|| WorldError::UnknownVideo { id: s.video.to_string(), position: i + 1 })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let world = Arc::clone(&self.world);
        let u = request.user_index;
        let user = &mut self.users[u as usize];
        let mut recs: Vec<Rec> = Vec::new();
        let after = respond(&world, &mut user.state, &step, request.number, &slots, &mut user.rng, &mut recs);
        recs.sort_by_key(|r| r.ts);
        let events = recs
            .iter()
            .map(|rec| {
                let mut event = to_event(&world, rec, "");
                if let EventKind::Impression(imp) = &mut event.kind {
                    let position = imp.position;
                    let query = imp.query_video.take();
                    if let Some(s) = shown.get(position as usize - 1) {
                        *imp = s.impression.clone();
                    }
                    imp.position = position;
                    imp.query_video = query;
                }
                event
            })
            .collect();
        let next = match after {
            After::Next(next) => {
                user.plan = Plan::Step(next);
                self.queue.push(Reverse((next.start_ms, u)));
                NextAction::Continue {
                    query_video: world.video_id(next.query).clone(),
                    organic: next.organic_query,
                    at_ms: next.start_ms,
                }
            }
            After::End { at_ms } => {
                let last = recs.iter().map(|r| r.ts).max().unwrap_or(at_ms).max(at_ms);
                NextAction::EndSession { next_session_ms: Self::end_session(&world, user, u, last, &mut self.queue) }
            }
        };
        Ok(LiveResponse { events, next })
    }

    /// Gives up on an outstanding request (say the server failed): the
    /// user's session ends without events. Returns the next session's start.
    pub fn abandon(&mut self, request: &LiveRequest) -> Result<i64, WorldError> {
        let step = self.outstanding(request)?;
        let u = request.user_index;
        Ok(Self::end_session(&self.world, &mut self.users[u as usize], u, step.start_ms, &mut self.queue))
    }

    fn end_session(
        world: &World,
        user: &mut LiveUser,
        u: u32,
        last_ms: i64,
        queue: &mut BinaryHeap<Reverse<(i64, u32)>>,
    ) -> i64 {
        user.state.busy_until = last_ms + SESSION_GAP_MS;
        let (at_ms, device) = world.next_session(&mut user.rng, u, user.state.busy_until);
        user.plan = Plan::Session { at_ms, device };
        queue.push(Reverse((at_ms, u)));
        at_ms
    }

    /// The list a logging policy would show for an outstanding request (a
    /// server-free baseline arm). Draws from the user's own stream.
    pub fn policy_list(&mut self, request: &LiveRequest, policy: LoggingPolicy) -> Result<Vec<ShownVideo>, WorldError> {
        policy.validate()?;
        let step = self.outstanding(request)?;
        let world = &*self.world;
        let user = &mut self.users[request.user_index as usize];
        let (mut pool, mut list) = (Vec::new(), Vec::new());
        policy.choose(world, &mut user.rng, step.query, step.start_ms, &user.state, &mut pool, &mut list);
        Ok(list
            .iter()
            .map(|slot| {
                let mut shown = ShownVideo::new(world.video_id(slot.video).clone(), policy.name());
                shown.impression.sources =
                    vec![watchnext_core::event::Vote::new(watchnext_core::event::Source::Context, slot.score, 0)];
                shown.impression.propensity = slot.propensity;
                shown
            })
            .collect())
    }
}
