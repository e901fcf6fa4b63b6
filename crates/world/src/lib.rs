//! The synthetic world: a seeded, deterministic simulator of a video
//! platform whose ground truth — what every user would click, watch, like,
//! dismiss, and how position and device bias what they see — is known
//! exactly, which no real log offers. It is watchnext's embedded default data
//! source: the trainer learns from its logs, evaluation compares models
//! against its ground truth, and a closed-loop demo plays its users against a
//! running server.
//!
//! - [`World::build`] turns a [`WorldConfig`] (JSON, presets
//!   [`WorldConfig::toy`], [`WorldConfig::default`], [`WorldConfig::large`])
//!   into a catalogue ([`watchnext_core::catalog::Catalog`], ids `v{i}`,
//!   topics `t{k}`), users (`u{i}`) and their hidden truth. A data folder
//!   stores only the config: rebuilding it recovers everything.
//! - [`generate_logs`] writes the events of the users' sessions under a
//!   [`LoggingPolicy`] into any [`watchnext_core::event::EventSink`], in time
//!   order, with a [`LogSummary`].
//! - [`Population`] is the same users, live: it draws the next request and
//!   answers any list a real server shows ([`live`]).
//! - The ground truth: [`World::examination`], [`World::click_prob`],
//!   [`World::expected_watch_fraction`], [`World::satisfaction`] and
//!   friends, [`World::video`] ([`VideoTruth`]) and [`World::user`]
//!   ([`UserTruth`]).
//!
//! Same config and seed, same policy and target → byte-identical catalogue
//! and event stream, with any number of threads: every random draw comes from
//! a ChaCha8 stream keyed by what it simulates (`(seed, user, chunk)`, …),
//! never by scheduling (the `random` module explains).
//!
//! # The model
//!
//! Notation: σ(x) = 1/(1 + e^(−x)); z a standard normal draw; U a uniform
//! draw on (0, 1); N videos, T topics, M users, K the list size; κ the
//! conflict knob ([`config::ResponseConfig::conflict`]).
//!
//! ## Catalogue
//! - **Topics**: a video has 1, 2 or 3 topics (`catalog.topics_per_video`);
//!   the primary one is drawn ∝ (k+1)^(−topic_exponent), the others uniformly.
//! - **Duration**: log-normal, `median·e^(σ_d·z)` (default median 8 min),
//!   clipped to [10 s, 4 h].
//! - **Upload time**: a share `uploaded_during_fraction` uniformly over the D
//!   simulated days, the rest uniformly over the `upload_history_days`
//!   before. A video is never shown or watched before its upload.
//! - **Quality** q = σ(μ_q + σ_q·z) ∈ (0, 1).
//! - **Clickbait** c: with probability `clickbait_fraction`, c ~ U(0.6, 1);
//!   otherwise c = 0.2·U³ (mostly near 0).
//! - **Popularity**: a seeded random permutation assigns ranks; organic
//!   popularity π_v ∝ rank_v^(−α) (Zipf, α = 1) and the popularity level
//!   ℓ_v = 1 − ln(rank_v)/ln(N) ∈ [0, 1].
//!
//! ## Users
//! - **Interests**: k_u = min(1 + Poisson(mean − 1), 8, T) dominant topics
//!   drawn ∝ topic size, with interest w_u(t) = 1 for the first and U(0.3, 1)
//!   for the others; every other topic gets the user's floor ~ U(0, 0.1).
//! - **Devices**: a primary device drawn from the population mix (phone,
//!   tablet, tv, desktop); with loyalty l ~ U(L − ¼, L + ¼), the user's
//!   session device mix is p_u = l·𝟙(primary) + (1 − l)·mix.
//! - **Activity**: λ_u sessions per day, log-normal (median 1, σ = 1: heavy
//!   tailed), at most 100.
//! - **Tendencies** τ_L (like), τ_D (dismiss), τ_R (rate): each its mean
//!   times e^(0.5z − 1/8) (mean-preserving), at most 1.
//! - **Clock**: sessions of user u arrive as a Poisson process whose
//!   intensity at UTC hour h is λ_u·24·Σ_d p_u(d)·H_d(h) (H_d: device d's
//!   hour profile, summing to 1 over a day — phone: commute, lunch and
//!   evening; tablet: evening; tv: a sharp 19–22 h peak; desktop: working
//!   hours), so λ_u a day on average; a session's device is drawn
//!   ∝ p_u(d)·H_d(h). The log generator rescales every λ_u by one factor to
//!   fit its target (see [`logs`]).
//!
//! ## Response to a shown list
//! Topic match m(u, v) = max(floor_u, max over t ∈ topics(v) of w_u(t)).
//! Each response is one logistic function of the same features,
//!
//! `g(u, v) = σ(b + w_m·m(u,v) + w_p·ℓ_v + w_q·(q_v − ½) + κ·w_c·c_v)`,
//!
//! with its own weights ([`config::Logit`]; defaults in brackets):
//! - **Examination** (position bias, by device):
//!   `e(p, d) = (1 + (p − 1)/s_d)^(−η_d)`, e(1, d) = 1; tv (s = 1, η = 1.6)
//!   falls much faster than desktop (s = 4, η = 0.7); phone (2, 1.0), tablet
//!   (2.5, 0.9).
//! - **Click given examination** (true relevance) r(u, v) = g with
//!   [b = −4, w_m = 3, w_p = 1.5, w_q = 0.5, w_c = +3]. Slots are independent
//!   (position-based model): **P(click at p) = e(p, d)·r(u, v)** exactly.
//! - **Watch**: a clicked (or organically picked) video is watched for a
//!   fraction F = U^((1 − f)/f) of its length, whose mean is exactly
//!   f(u, v) = g with [b = −0.5, w_m = 1.5, w_p = 0, w_q = 2, w_c = −3].
//! - **Satisfaction** s(u, v) = g with [b = −1, w_m = 2.5, w_p = 0, w_q = 3,
//!   w_c = −4]. After a watch the user likes with probability τ_L·s,
//!   dismisses with probability τ_D·(1 − s)², and with probability τ_R rates
//!   1 + Binomial(4, s) stars (mean 1 + 4s).
//! - **Dismissal without a click**: an examined, unclicked video is dismissed
//!   with probability τ_D·δ·(1 − m) (δ = 0.1).
//!
//! Clickbait thus raises clicks and lowers watch time and satisfaction:
//! engagement and satisfaction partly conflict. κ ∈ [0, 1] scales every
//! clickbait weight: at κ = 0 they agree (both rise with match and quality);
//! at κ = 1 clickbait buys ~+3 logits of clicks at −4 logits of satisfaction.
//!
//! ## Sessions: watch-next chains
//! 1. A session starts at time T: the user picks a video **organically**
//!    (with probability 0.8 a topic of theirs, ∝ interest, 10% of the time
//!    any topic, then a video of it ∝ popularity; otherwise a video ∝
//!    popularity) and starts playing it. Its watch event has no request id.
//! 2. As the query video starts playing, the list of K is requested and
//!    shown (impressions at that moment). The user reaches the list when done
//!    watching: unclicked examined videos are dismissed at +0.4 s·p; clicked
//!    videos are clicked in list order (each 1 s + 0.5 s·p + Exp(1 s) after
//!    the last activity), played 1 s later and watched back to back; the
//!    watch event is logged at the end of playback, likes / dismissals /
//!    ratings 1 / 1.5 / 2 s after.
//! 3. After a list with clicks the session goes on with probability
//!    `continue_prob·(1 − ω·(1 − s))` (s: satisfaction with the last clicked
//!    video; dissatisfied users leave sooner); it then goes on with the last
//!    clicked video as the next query (its list was requested when it started
//!    playing), or with probability `organic_after_click` with a new organic
//!    pick. After a list without clicks the user picks organically with
//!    probability `organic_after_no_click`, else leaves. Organic picks come
//!    5 s + Exp(20 s) after the last activity. A session shows at most
//!    `max_steps` lists; a user's sessions never overlap. Organic watches get
//!    no like, dismissal or rating (they answer no request).
//!
//! ## Logging policies
//! [`LoggingPolicy::PopularityNoise`] (top K of a candidate pool by noisy
//! popularity) and [`LoggingPolicy::RandomOrder`] (the same pool, uniformly
//! shuffled; unbiased position estimates) — see [`policy`]. Their
//! impressions carry the position, the query video, `model_version` = the
//! policy's name, no experiment arm, no features, the propensity when known
//! (1/|pool| for random order, else 0), and, as a logging policy has no
//! candidate generator, one source [`watchnext_core::event::Source::Context`]
//! with the policy's score (0 for random order).
//!
//! Ids: users `u{i}`, videos `v{i}`, topics `t{k}`, requests `r{user}-{n}`
//! (the user's n-th request). The epoch defaults to 2024-01-01 UTC.

pub mod config;
pub mod error;
pub mod live;
pub mod logs;
pub mod policy;
mod random;
mod response;
mod titles;
pub mod world;

pub use config::{WORLD_CONFIG_FILE, WorldConfig};
pub use error::WorldError;
pub use live::{LiveRequest, LiveResponse, NextAction, Population, ShownVideo};
pub use logs::{CountingSink, LogSummary, generate_logs};
pub use policy::LoggingPolicy;
pub use world::{SIM_DEVICES, UserTruth, VideoTruth, World, sim_device_index};
