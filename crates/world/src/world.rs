//! The world itself: catalogue, users, the indexes used to sample from them,
//! and the ground-truth functions of the response model.
//!
//! [`World::build`] is a pure function of the [`WorldConfig`]: videos and
//! users are drawn in parallel blocks, each from its own stream, so the
//! result is the same with any number of threads.

use std::fmt;

use rayon::prelude::*;
use watchnext_core::{
    Device, UserId, VideoId,
    catalog::{Catalog, Video},
};

use crate::{
    config::{Logit, WorldConfig},
    error::WorldError,
    random::{self, AliasTable, chance, exponential, index, kind, normal, poisson_quantile, sigmoid, uniform},
    titles,
};

/// Milliseconds in a day.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// The devices the world simulates, in the order of [`UserTruth::device_mix`].
pub const SIM_DEVICES: [Device; 4] = [Device::Phone, Device::Tablet, Device::Tv, Device::Desktop];

/// Position of `device` in [`SIM_DEVICES`]; an unknown device counts as a phone.
pub fn sim_device_index(device: Device) -> usize {
    match device {
        Device::Phone | Device::Unknown => 0,
        Device::Tablet => 1,
        Device::Tv => 2,
        Device::Desktop => 3,
    }
}

/// Relative session-start intensity by UTC hour of day, per simulated device
/// (phone: commute, lunch and evening; tablet: evenings; tv: a sharp evening
/// peak; desktop: working hours).
const HOUR_PROFILES: [[f64; 24]; 4] = [
    [
        1.0, 0.6, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 2.5, 2.0, 1.8, 2.0, 2.5, 2.2, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0, 4.5, 4.5,
        3.5, 2.0,
    ],
    [
        0.8, 0.4, 0.2, 0.1, 0.1, 0.2, 0.6, 1.2, 1.5, 1.5, 1.5, 1.5, 1.8, 1.8, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 4.0, 3.5,
        2.5, 1.5,
    ],
    [
        0.8, 0.3, 0.1, 0.1, 0.1, 0.1, 0.3, 0.6, 0.8, 0.8, 0.8, 0.8, 1.0, 1.0, 1.0, 1.2, 1.5, 2.5, 4.0, 6.0, 7.0, 6.5,
        4.5, 2.0,
    ],
    [
        0.3, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 3.5, 3.5, 3.5, 3.0, 3.5, 3.5, 3.5, 3.2, 2.5, 2.0, 2.0, 1.8, 1.5,
        1.0, 0.6,
    ],
];

/// Share of organic interest picks that explore a uniformly drawn topic.
const ORGANIC_EXPLORE: f64 = 0.1;
/// Tries to find a video already uploaded at the time of a draw.
const AVAILABILITY_TRIES: usize = 8;
/// Cap on a user's sessions per day.
const MAX_SESSIONS_PER_DAY: f64 = 100.0;
/// Examination values are tabulated up to this position.
const EXAM_TABLE: usize = 128;
/// Block sizes of the parallel builders (part of the world's definition:
/// each block has its own random stream).
const VIDEO_BLOCK: usize = 4_096;
const USER_BLOCK: usize = 1_024;

/// The hidden truth about one video.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoTruth {
    /// Topic indices (the first is the primary topic); `topic_count` are used.
    pub topics: [u16; 3],
    pub topic_count: u8,
    /// Latent quality q ∈ (0, 1).
    pub quality: f32,
    /// Clickbait propensity c ∈ [0, 1).
    pub clickbait: f32,
    /// Share of organic popularity (sums to 1 over the catalogue).
    pub popularity: f64,
    /// 1-based popularity rank (1 = most popular).
    pub popularity_rank: u32,
    /// Popularity level ℓ = 1 − ln(rank)/ln(N) ∈ [0, 1].
    pub popularity_level: f32,
    pub duration_seconds: f32,
    pub upload_ms: i64,
}

impl VideoTruth {
    /// The video's topic indices.
    pub fn topics(&self) -> &[u16] {
        &self.topics[..usize::from(self.topic_count)]
    }
}

/// The hidden truth about one user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserTruth {
    /// Dominant topics and their interest weights in (0, 1], sorted by topic.
    pub interests: Vec<(u16, f32)>,
    /// Interest in every other topic.
    pub interest_floor: f32,
    /// Probability of each device of [`SIM_DEVICES`] for a session.
    pub device_mix: [f32; 4],
    /// Sessions per day (the log generator rescales all users by one factor).
    pub sessions_per_day: f32,
    /// τ_L: like probability given a watch is τ_L·s.
    pub like_tendency: f32,
    /// τ_D: dismiss tendency.
    pub dismiss_tendency: f32,
    /// τ_R: probability of rating a watched video.
    pub rate_tendency: f32,
}

impl UserTruth {
    /// Interest w_u(t) in topic `topic`.
    pub fn interest(&self, topic: u16) -> f32 {
        match self.interests.binary_search_by_key(&topic, |&(t, _)| t) {
            Ok(i) => self.interests[i].1,
            Err(_) => self.interest_floor,
        }
    }
}

/// A simulated video platform: catalogue, users and ground truth.
pub struct World {
    config: WorldConfig,
    catalog: Catalog,
    video_ids: Vec<VideoId>,
    user_ids: Vec<UserId>,
    videos: Vec<VideoTruth>,
    users: Vec<UserTruth>,
    topic_videos: Vec<Vec<u32>>,
    topic_tables: Vec<AliasTable>,
    popularity_table: AliasTable,
    /// Normalised hour-of-day profiles (each sums to 1 over the day).
    hours: [[f64; 24]; 4],
    /// e(p, d) for p = 1..=EXAM_TABLE, by simulated device.
    exam: [Vec<f64>; 4],
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.config.seed)
            .field("videos", &self.videos.len())
            .field("users", &self.users.len())
            .field("topics", &self.topic_videos.len())
            .finish_non_exhaustive()
    }
}

fn curve(scale: f64, power: f64, position: u32) -> f64 {
    if position == 0 {
        return 0.0;
    }
    (1.0 + f64::from(position - 1) / scale).powf(-power)
}

impl World {
    /// Builds the world described by `config` (validated first).
    pub fn build(config: &WorldConfig) -> Result<Self, WorldError> {
        config.validate()?;
        let n = config.videos as usize;
        let t = config.topics as usize;
        let seed = config.seed;
        let c = &config.catalog;

        let topic_weights: Vec<f64> = (0..t).map(|k| ((k + 1) as f64).powf(-c.topic_exponent)).collect();
        let topic_table = AliasTable::new(&topic_weights);

        // Popularity ranks: a seeded random permutation.
        let mut order: Vec<u32> = (0..config.videos).collect();
        let mut rng = random::stream(seed, kind::RANKS, 0, 0);
        for i in (1..n).rev() {
            order.swap(i, index(&mut rng, i + 1));
        }
        let mut rank = vec![0u32; n];
        for (r, &v) in order.iter().enumerate() {
            rank[v as usize] = r as u32 + 1;
        }
        drop(order);
        let raw: Vec<f64> = rank.iter().map(|&r| f64::from(r).powf(-c.popularity_exponent)).collect();
        let total: f64 = raw.iter().sum();
        let ln_n = (n as f64).ln();

        let topic_names: Vec<String> = (0..t).map(|k| format!("t{k}")).collect();
        let per_video_topics: f64 = c.topics_per_video.iter().sum();
        let during_ms = i64::from(config.days) * DAY_MS;
        let before_ms = i64::from(c.upload_history_days) * DAY_MS;

        let blocks: Vec<Vec<(VideoTruth, Video)>> = (0..n.div_ceil(VIDEO_BLOCK))
            .into_par_iter()
            .map(|b| {
                let mut rng = random::stream(seed, kind::VIDEOS, b as u64, 0);
                let range = b * VIDEO_BLOCK..((b + 1) * VIDEO_BLOCK).min(n);
                range
                    .map(|v| {
                        let u = uniform(&mut rng) * per_video_topics;
                        let want = if u < c.topics_per_video[0] {
                            1
                        } else if u < c.topics_per_video[0] + c.topics_per_video[1] {
                            2
                        } else {
                            3
                        };
                        let want = want.min(t);
                        let mut topics = [0u16; 3];
                        topics[0] = topic_table.sample(&mut rng).unwrap_or(0) as u16;
                        let mut count = 1;
                        for _ in 0..20 {
                            if count == want {
                                break;
                            }
                            let k = index(&mut rng, t) as u16;
                            if !topics[..count].contains(&k) {
                                topics[count] = k;
                                count += 1;
                            }
                        }
                        let duration = (c.duration_median_seconds * (c.duration_sigma * normal(&mut rng)).exp())
                            .clamp(10.0, 14_400.0);
                        let upload_ms = if chance(&mut rng, c.uploaded_during_fraction) {
                            config.epoch_ms + (uniform(&mut rng) * during_ms as f64) as i64
                        } else {
                            (config.epoch_ms - (uniform(&mut rng) * before_ms as f64) as i64).max(1)
                        };
                        let quality = sigmoid(c.quality_mean + c.quality_sigma * normal(&mut rng));
                        let clickbait = if chance(&mut rng, c.clickbait_fraction) {
                            0.6 + 0.4 * uniform(&mut rng)
                        } else {
                            0.2 * uniform(&mut rng).powi(3)
                        };
                        let title = titles::title(&mut rng, topics[0]);
                        let r = rank[v];
                        let truth = VideoTruth {
                            topics,
                            topic_count: count as u8,
                            quality: quality as f32,
                            clickbait: clickbait as f32,
                            popularity: raw[v] / total,
                            popularity_rank: r,
                            popularity_level: (1.0 - f64::from(r).ln() / ln_n) as f32,
                            duration_seconds: duration as f32,
                            upload_ms,
                        };
                        let video = Video {
                            id: format!("v{v}"),
                            title,
                            topics: topics[..count].iter().map(|&k| topic_names[usize::from(k)].clone()).collect(),
                            duration_seconds: duration as f32,
                            upload_ms,
                        };
                        (truth, video)
                    })
                    .collect()
            })
            .collect();
        drop(raw);
        let mut videos = Vec::with_capacity(n);
        let mut catalog_videos = Vec::with_capacity(n);
        for (truth, video) in blocks.into_iter().flatten() {
            videos.push(truth);
            catalog_videos.push(video);
        }
        let video_ids = catalog_videos
            .par_iter()
            .map(|v| VideoId::parse("videos", &v.id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WorldError::config("videos", e.to_string()))?;
        let catalog = Catalog::new(catalog_videos).map_err(|e| WorldError::config("videos", e))?;

        let mut topic_videos: Vec<Vec<u32>> = vec![Vec::new(); t];
        for (v, truth) in videos.iter().enumerate() {
            for &k in truth.topics() {
                topic_videos[usize::from(k)].push(v as u32);
            }
        }
        let topic_tables: Vec<AliasTable> = topic_videos
            .par_iter()
            .map(|list| AliasTable::new(&list.iter().map(|&v| videos[v as usize].popularity).collect::<Vec<_>>()))
            .collect();
        let popularity_table = AliasTable::new(&videos.iter().map(|v| v.popularity).collect::<Vec<_>>());

        let users = build_users(config, &topic_table);
        let user_ids = (0..config.users)
            .into_par_iter()
            .map(|u| UserId::parse("users", &format!("u{u}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| WorldError::config("users", e.to_string()))?;

        let mut hours = HOUR_PROFILES;
        for profile in &mut hours {
            let sum: f64 = profile.iter().sum();
            profile.iter_mut().for_each(|h| *h /= sum);
        }
        let e = &config.response.examination;
        let exam = [e.phone, e.tablet, e.tv, e.desktop]
            .map(|c| (1..=EXAM_TABLE as u32).map(|p| curve(c.scale, c.power, p)).collect::<Vec<_>>());

        Ok(Self {
            config: config.clone(),
            catalog,
            video_ids,
            user_ids,
            videos,
            users,
            topic_videos,
            topic_tables,
            popularity_table,
            hours,
            exam,
        })
    }

    /// The configuration the world was built from.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The catalogue (ids `v{index}`).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn num_videos(&self) -> u32 {
        self.videos.len() as u32
    }

    pub fn num_users(&self) -> u32 {
        self.users.len() as u32
    }

    /// Every video's truth, by index.
    pub fn videos(&self) -> &[VideoTruth] {
        &self.videos
    }

    /// Every user's truth, by index.
    pub fn users(&self) -> &[UserTruth] {
        &self.users
    }

    /// The truth about video `video` (panics if out of range).
    pub fn video(&self, video: u32) -> &VideoTruth {
        &self.videos[video as usize]
    }

    /// The truth about user `user` (panics if out of range).
    pub fn user(&self, user: u32) -> &UserTruth {
        &self.users[user as usize]
    }

    /// The id of video `video`.
    pub fn video_id(&self, video: u32) -> &VideoId {
        &self.video_ids[video as usize]
    }

    /// The id of user `user`.
    pub fn user_id(&self, user: u32) -> &UserId {
        &self.user_ids[user as usize]
    }

    /// Index of a video id (`v17` → 17), if it is in the catalogue.
    pub fn video_index(&self, id: &str) -> Option<u32> {
        self.catalog.index_of(id)
    }

    /// Index of a user id (`u17` → 17), if the world has that user.
    pub fn user_index(&self, id: &str) -> Option<u32> {
        let digits = id.strip_prefix('u')?;
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        digits.parse::<u32>().ok().filter(|&u| u < self.num_users())
    }

    /// Videos of topic `topic`.
    pub fn topic_videos(&self, topic: u16) -> &[u32] {
        self.topic_videos.get(usize::from(topic)).map_or(&[], Vec::as_slice)
    }

    // ---- ground truth ----------------------------------------------------

    /// Examination probability e(p, d) of position `position` (1-based; 0
    /// for position 0) on `device`.
    pub fn examination(&self, position: u32, device: Device) -> f64 {
        let d = sim_device_index(device);
        match self.exam[d].get((position as usize).wrapping_sub(1)) {
            Some(&e) => e,
            None => {
                let e = &self.config.response.examination;
                let c = [e.phone, e.tablet, e.tv, e.desktop][d];
                curve(c.scale, c.power, position)
            }
        }
    }

    /// Topic match m(u, v) = max over the video's topics of the user's
    /// interest.
    pub fn topic_match(&self, user: u32, video: u32) -> f64 {
        let u = &self.users[user as usize];
        let m = self.videos[video as usize].topics().iter().map(|&t| u.interest(t)).fold(u.interest_floor, f32::max);
        f64::from(m)
    }

    fn logit(&self, l: &Logit, video: u32, m: f64) -> f64 {
        let v = &self.videos[video as usize];
        sigmoid(
            l.bias
                + l.topic_match * m
                + l.popularity * f64::from(v.popularity_level)
                + l.quality * (f64::from(v.quality) - 0.5)
                + self.config.response.conflict * l.clickbait * f64::from(v.clickbait),
        )
    }

    pub(crate) fn click_prob_given_match(&self, video: u32, m: f64) -> f64 {
        self.logit(&self.config.response.click, video, m)
    }

    pub(crate) fn watch_fraction_given_match(&self, video: u32, m: f64) -> f64 {
        self.logit(&self.config.response.watch, video, m)
    }

    pub(crate) fn satisfaction_given_match(&self, video: u32, m: f64) -> f64 {
        self.logit(&self.config.response.satisfaction, video, m)
    }

    /// True relevance r(u, v): probability that user `user` clicks `video`
    /// once they have examined it.
    pub fn click_prob(&self, user: u32, video: u32) -> f64 {
        self.click_prob_given_match(video, self.topic_match(user, video))
    }

    /// Probability of a click at `position` on `device`: e(p, d)·r(u, v).
    pub fn click_through(&self, user: u32, video: u32, position: u32, device: Device) -> f64 {
        self.examination(position, device) * self.click_prob(user, video)
    }

    /// f(u, v): expected fraction of the video watched once clicked (or
    /// picked organically).
    pub fn expected_watch_fraction(&self, user: u32, video: u32) -> f64 {
        self.watch_fraction_given_match(video, self.topic_match(user, video))
    }

    /// Expected seconds watched once clicked: f(u, v)·duration.
    pub fn expected_watch_seconds(&self, user: u32, video: u32) -> f64 {
        self.expected_watch_fraction(user, video) * f64::from(self.videos[video as usize].duration_seconds)
    }

    /// s(u, v) ∈ (0, 1): how satisfied the user is after watching the video.
    pub fn satisfaction(&self, user: u32, video: u32) -> f64 {
        self.satisfaction_given_match(video, self.topic_match(user, video))
    }

    /// Probability of a like after a watch: τ_L·s.
    pub fn like_prob(&self, user: u32, video: u32) -> f64 {
        f64::from(self.users[user as usize].like_tendency) * self.satisfaction(user, video)
    }

    /// Probability of a dismissal after a watch: τ_D·(1 − s)².
    pub fn dismiss_prob_after_watch(&self, user: u32, video: u32) -> f64 {
        f64::from(self.users[user as usize].dismiss_tendency) * (1.0 - self.satisfaction(user, video)).powi(2)
    }

    /// Probability of a dismissal of an examined, unclicked video: τ_D·δ·(1 − m).
    pub fn dismiss_prob_unclicked(&self, user: u32, video: u32) -> f64 {
        f64::from(self.users[user as usize].dismiss_tendency)
            * self.config.response.dismiss_unclicked
            * (1.0 - self.topic_match(user, video))
    }

    /// Probability of rating a watched video: τ_R.
    pub fn rate_prob(&self, user: u32) -> f64 {
        f64::from(self.users[user as usize].rate_tendency)
    }

    /// Expected rating (1–5 stars) given one is given: 1 + 4s.
    pub fn expected_rating(&self, user: u32, video: u32) -> f64 {
        1.0 + 4.0 * self.satisfaction(user, video)
    }

    // ---- sampling helpers shared by the log generator and live users -----

    pub(crate) fn available(&self, video: u32, at_ms: i64) -> bool {
        self.videos[video as usize].upload_ms <= at_ms
    }

    /// A video ∝ popularity, uploaded by `at_ms`.
    pub(crate) fn popular_video<R: rand::Rng + ?Sized>(&self, rng: &mut R, at_ms: i64) -> Option<u32> {
        (0..AVAILABILITY_TRIES)
            .filter_map(|_| self.popularity_table.sample(rng).map(|v| v as u32))
            .find(|&v| self.available(v, at_ms))
    }

    /// A video of `topic` ∝ popularity, uploaded by `at_ms`.
    pub(crate) fn topic_video<R: rand::Rng + ?Sized>(&self, rng: &mut R, topic: u16, at_ms: i64) -> Option<u32> {
        let list = self.topic_videos.get(usize::from(topic))?;
        let table = &self.topic_tables[usize::from(topic)];
        (0..AVAILABILITY_TRIES).filter_map(|_| table.sample(rng).map(|i| list[i])).find(|&v| self.available(v, at_ms))
    }

    /// A uniformly drawn video, uploaded by `at_ms`.
    pub(crate) fn uniform_video<R: rand::Rng + ?Sized>(&self, rng: &mut R, at_ms: i64) -> Option<u32> {
        (0..AVAILABILITY_TRIES).map(|_| index(rng, self.videos.len()) as u32).find(|&v| self.available(v, at_ms))
    }

    /// What a user watches of their own accord (home page, search,
    /// subscriptions): with probability `organic_interest_share` a topic of
    /// theirs (∝ interest; 10% of the time any topic) and a video of it ∝
    /// popularity, otherwise a video ∝ popularity.
    pub(crate) fn organic_video<R: rand::Rng + ?Sized>(&self, rng: &mut R, user: u32, at_ms: i64) -> Option<u32> {
        let u = &self.users[user as usize];
        if chance(rng, self.config.session.organic_interest_share) {
            let topic = if chance(rng, ORGANIC_EXPLORE) || u.interests.is_empty() {
                index(rng, self.topic_videos.len()) as u16
            } else {
                let total: f32 = u.interests.iter().map(|&(_, w)| w).sum();
                let mut x = uniform(rng) as f32 * total;
                let mut pick = u.interests[u.interests.len() - 1].0;
                for &(t, w) in &u.interests {
                    if x < w {
                        pick = t;
                        break;
                    }
                    x -= w;
                }
                pick
            };
            if let Some(v) = self.topic_video(rng, topic, at_ms) {
                return Some(v);
            }
        }
        self.popular_video(rng, at_ms)
    }

    /// The normalised hour-of-day profile of simulated device `device`.
    pub(crate) fn hour_profile(&self, device: usize) -> &[f64; 24] {
        &self.hours[device]
    }

    /// A device for a session of `user`, drawn from their mix.
    pub(crate) fn session_device<R: rand::Rng + ?Sized>(&self, rng: &mut R, user: u32) -> Device {
        let mix = &self.users[user as usize].device_mix;
        let mut x = uniform(rng) as f32;
        for (d, &p) in mix.iter().enumerate() {
            if x < p {
                return SIM_DEVICES[d];
            }
            x -= p;
        }
        SIM_DEVICES[mix.iter().rposition(|&p| p > 0.0).unwrap_or(0)]
    }

    /// The start of `user`'s next session after `after_ms` and its device:
    /// the next event of a Poisson process whose intensity at UTC hour h is
    /// λ_u·24·Σ_d p_u(d)·H_d(h) sessions a day (H_d: the device's hour profile,
    /// summing to 1 over the day; so λ_u a day on average), drawn by thinning;
    /// the device is drawn ∝ p_u(d)·H_d(h).
    pub(crate) fn next_session<R: rand::Rng + ?Sized>(&self, rng: &mut R, user: u32, after_ms: i64) -> (i64, Device) {
        let u = &self.users[user as usize];
        let rate = f64::from(u.sessions_per_day).max(1e-6);
        let by_device =
            |h: usize| -> [f64; 4] { std::array::from_fn(|d| f64::from(u.device_mix[d]) * self.hours[d][h]) };
        let per_hour: [f64; 24] = std::array::from_fn(|h| by_device(h).iter().sum());
        let peak = per_hour.iter().copied().fold(0.0, f64::max).max(1e-12);
        let mean_gap_ms = DAY_MS as f64 / (rate * 24.0 * peak);
        let mut t = after_ms;
        for _ in 0..10_000 {
            t += (exponential(rng, mean_gap_ms) as i64).max(1);
            let h = (t.rem_euclid(DAY_MS) / HOUR_MS) as usize;
            if uniform(rng) * peak < per_hour[h] {
                let weights = by_device(h);
                let mut x = uniform(rng) * per_hour[h];
                for (d, &w) in weights.iter().enumerate() {
                    if x < w {
                        return (t, SIM_DEVICES[d]);
                    }
                    x -= w;
                }
                return (t, SIM_DEVICES[weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)]);
            }
        }
        (t, self.session_device(rng, user))
    }
}

fn build_users(config: &WorldConfig, topic_table: &AliasTable) -> Vec<UserTruth> {
    let p = &config.population;
    let t = config.topics as usize;
    let m = &p.device_mix;
    let mix_total = m.phone + m.tablet + m.tv + m.desktop;
    let mix = [m.phone, m.tablet, m.tv, m.desktop].map(|x| x / mix_total);
    let tendency = |rng: &mut rand_chacha::ChaCha8Rng, mean: f64| {
        // Mean-preserving log-normal spread, capped at 1.
        (mean * (0.5 * normal(rng) - 0.125).exp()).min(1.0) as f32
    };
    let n = config.users as usize;
    let blocks: Vec<Vec<UserTruth>> = (0..n.div_ceil(USER_BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut rng = random::stream(config.seed, kind::USERS, b as u64, 0);
            (b * USER_BLOCK..((b + 1) * USER_BLOCK).min(n))
                .map(|_| {
                    let sessions_per_day = (p.sessions_per_day_median
                        * (p.sessions_per_day_sigma * normal(&mut rng)).exp())
                    .min(MAX_SESSIONS_PER_DAY);
                    let u = uniform(&mut rng);
                    let count = (1 + poisson_quantile(p.interest_topics_mean - 1.0, u, || 0.0) as usize).min(8).min(t);
                    let mut interests: Vec<(u16, f32)> = Vec::with_capacity(count);
                    for _ in 0..40 {
                        if interests.len() == count {
                            break;
                        }
                        let k = topic_table.sample(&mut rng).unwrap_or(0) as u16;
                        if interests.iter().all(|&(x, _)| x != k) {
                            let w = if interests.is_empty() { 1.0 } else { 0.3 + 0.7 * uniform(&mut rng) };
                            interests.push((k, w as f32));
                        }
                    }
                    interests.sort_by_key(|&(k, _)| k);
                    let interest_floor = (p.interest_floor_max * uniform(&mut rng)) as f32;
                    let mut x = uniform(&mut rng);
                    let mut primary = 3;
                    for (d, &share) in mix.iter().enumerate() {
                        if x < share {
                            primary = d;
                            break;
                        }
                        x -= share;
                    }
                    let loyalty = (p.device_loyalty + 0.5 * uniform(&mut rng) - 0.25).clamp(0.0, 1.0);
                    let mut device_mix = mix.map(|s| ((1.0 - loyalty) * s) as f32);
                    device_mix[primary] += loyalty as f32;
                    UserTruth {
                        interests,
                        interest_floor,
                        device_mix,
                        sessions_per_day: sessions_per_day as f32,
                        like_tendency: tendency(&mut rng, p.like_tendency),
                        dismiss_tendency: tendency(&mut rng, p.dismiss_tendency),
                        rate_tendency: tendency(&mut rng, p.rate_tendency),
                    }
                })
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> World {
        World::build(&WorldConfig::toy()).unwrap()
    }

    #[test]
    fn the_catalogue_has_the_configured_shape() {
        let world = toy();
        let config = world.config();
        assert_eq!(world.catalog().len(), 1_000);
        assert_eq!(world.num_users(), 500);
        let videos = world.catalog().videos();
        assert_eq!(videos[17].id, "v17");
        assert!(videos.iter().all(|v| !v.title.is_empty() && (1..=3).contains(&v.topics.len())));
        // Log-normal durations around the median.
        let mut durations: Vec<f32> = videos.iter().map(|v| v.duration_seconds).collect();
        durations.sort_by(f32::total_cmp);
        let median = f64::from(durations[durations.len() / 2]);
        assert!((median / config.catalog.duration_median_seconds - 1.0).abs() < 0.15, "median {median}");
        // Uploads before and during the period.
        let during = videos.iter().filter(|v| v.upload_ms >= config.epoch_ms).count();
        assert!((100..300).contains(&during), "{during} uploaded during the period");
        // A minority of clickbait.
        let clickbait = world.videos().iter().filter(|v| v.clickbait >= 0.6).count();
        assert!((50..160).contains(&clickbait), "{clickbait} clickbait videos");
        // Zipf popularity: rank 1 has ~1/H_N of the mass, ranks are a permutation.
        let top = world.videos().iter().find(|v| v.popularity_rank == 1).unwrap();
        assert!((top.popularity - 1.0 / 7.485).abs() < 1e-3, "{}", top.popularity);
        let mut ranks: Vec<u32> = world.videos().iter().map(|v| v.popularity_rank).collect();
        ranks.sort_unstable();
        assert!(ranks.iter().copied().eq(1..=1_000));
        let total: f64 = world.videos().iter().map(|v| v.popularity).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn users_have_sparse_interests_and_a_device_mix() {
        let world = toy();
        for (i, u) in world.users().iter().enumerate() {
            assert!((1..=8).contains(&u.interests.len()), "user {i}");
            assert!(u.interests.iter().any(|&(_, w)| w == 1.0));
            assert!(u.interest_floor < 0.1 + 1e-6);
            let sum: f32 = u.device_mix.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "user {i}: {sum}");
            assert!(u.sessions_per_day > 0.0);
        }
        assert_eq!(world.user_index("u12"), Some(12));
        assert_eq!(world.user_index("u500"), None);
        assert_eq!(world.user_index("u012"), None);
        assert_eq!(world.user_index("x1"), None);
        assert_eq!(world.video_index("v999"), Some(999));
        assert_eq!(world.user_id(3).as_str(), "u3");
        assert_eq!(world.video_id(3).as_str(), "v3");
    }

    #[test]
    fn tv_examination_falls_faster_than_desktop() {
        let world = toy();
        for p in 2..=10 {
            let tv = world.examination(p, Device::Tv);
            let desktop = world.examination(p, Device::Desktop);
            assert!(tv < desktop, "position {p}: tv {tv} desktop {desktop}");
            assert!(world.examination(p, Device::Phone) < world.examination(p - 1, Device::Phone));
        }
        assert_eq!(world.examination(1, Device::Tv), 1.0);
        assert_eq!(world.examination(0, Device::Tv), 0.0);
        assert_eq!(world.examination(500, Device::Tv), curve(1.0, 1.6, 500));
        assert_eq!(world.examination(3, Device::Unknown), world.examination(3, Device::Phone));
    }

    #[test]
    fn ground_truth_is_consistent() {
        let world = toy();
        for u in [0, 7, 499] {
            for v in [0, 10, 999] {
                let r = world.click_prob(u, v);
                let f = world.expected_watch_fraction(u, v);
                let s = world.satisfaction(u, v);
                for x in [r, f, s] {
                    assert!(x > 0.0 && x < 1.0);
                }
                assert!((world.expected_rating(u, v) - (1.0 + 4.0 * s)).abs() < 1e-12);
                assert!(world.like_prob(u, v) <= s);
                assert!(
                    (world.click_through(u, v, 3, Device::Tv) - r * world.examination(3, Device::Tv)).abs() < 1e-12
                );
            }
        }
        // A user's favourite topic matches fully.
        let u = world.user(0);
        let (topic, _) = u.interests.iter().copied().find(|&(_, w)| w == 1.0).unwrap();
        let v = world.topic_videos(topic)[0];
        assert_eq!(world.topic_match(0, v), 1.0);
    }

    #[test]
    fn conflict_zero_removes_the_clickbait_effect() {
        let mut config = WorldConfig::toy();
        config.response.conflict = 0.0;
        let calm = World::build(&config).unwrap();
        config.response.conflict = 1.0;
        let torn = World::build(&config).unwrap();
        let bait = (0..1_000).find(|&v| calm.video(v).clickbait > 0.8).unwrap();
        assert!(torn.click_prob(0, bait) > calm.click_prob(0, bait));
        assert!(torn.satisfaction(0, bait) < calm.satisfaction(0, bait));
        assert!(torn.expected_watch_fraction(0, bait) < calm.expected_watch_fraction(0, bait));
    }

    #[test]
    fn next_sessions_follow_the_clock() {
        let world = toy();
        // The user who watches most on tv.
        let user = (0..world.num_users())
            .max_by(|&a, &b| world.user(a).device_mix[2].total_cmp(&world.user(b).device_mix[2]))
            .unwrap();
        let mut rng = random::stream(1, 99, 0, 0);
        let (mut tv, mut tv_evening) = (0, 0);
        let mut t = world.config().epoch_ms;
        for _ in 0..5_000 {
            let (at, device) = world.next_session(&mut rng, user, t);
            assert!(at > t);
            if device == Device::Tv {
                tv += 1;
                let hour = (at.rem_euclid(DAY_MS) / HOUR_MS) as usize;
                tv_evening += usize::from((18..=22).contains(&hour));
            }
            t = at;
        }
        assert!(tv > 2_500, "{tv}");
        assert!(tv_evening * 10 > tv * 6, "{tv_evening} of {tv} tv sessions in the evening");
        // λ_u sessions a day.
        let rate = 5_000.0 / ((t - world.config().epoch_ms) as f64 / DAY_MS as f64);
        let want = f64::from(world.user(user).sessions_per_day);
        assert!((rate / want - 1.0).abs() < 0.06, "{rate} vs {want} sessions a day");
    }
}
