//! Each user's most recent watches, learnt from the feedback stream, for
//! requests that carry no history of their own: the recommender fills a
//! request's history from it (for the ranker's features and to filter
//! watched videos), the sequence generator encodes it.
//!
//! [`remember`] is the one rule every history builder follows — this store
//! at serving, the trainer's point-in-time replay when it rebuilds a past
//! request's history — so a history feature means the same in training and
//! at serving: a video watched again moves to the most recent place instead
//! of appearing twice, and only the `per_user` most recent distinct videos
//! are kept.
//!
//! Video ids are interned once (a `u32` per id), so a watch costs 16 bytes
//! (video, time, seconds watched) and a user about `per_user × 16 + 100`
//! bytes (100k users with 50 watches each ≈ 90 MB). Users are never
//! forgotten; a deployment with tens of millions of users should send
//! history in the request instead.

use std::{collections::VecDeque, sync::RwLock};

use dashmap::DashMap;

use crate::{
    event::{Event, EventKind},
    ids::{UserId, VideoId},
    request::HistoryEntry,
};

/// One remembered watch.
#[derive(Debug, Clone, Copy)]
struct Watch {
    video: u32,
    seconds: f32,
    at_ms: i64,
}

/// Appends `entry` to `ring` (oldest first): an entry for the same video
/// (`same`) is removed first, so a re-watch moves to the most recent place,
/// and the oldest entries go beyond `cap` (at least 1).
pub fn remember<T>(ring: &mut VecDeque<T>, entry: T, cap: usize, same: impl Fn(&T, &T) -> bool) {
    if let Some(at) = ring.iter().position(|e| same(e, &entry)) {
        ring.remove(at);
    }
    while ring.len() >= cap.max(1) {
        ring.pop_front();
    }
    ring.push_back(entry);
}

/// Recent watches per user, updated concurrently with reads.
#[derive(Debug)]
pub struct RecentWatches {
    per_user: usize,
    ids: DashMap<VideoId, u32>,
    names: RwLock<Vec<VideoId>>,
    users: DashMap<UserId, VecDeque<Watch>>,
}

impl RecentWatches {
    /// Keeps the `per_user` most recent watches of each user (at least 1).
    pub fn new(per_user: usize) -> Self {
        Self { per_user: per_user.max(1), ids: DashMap::new(), names: RwLock::new(Vec::new()), users: DashMap::new() }
    }

    fn intern(&self, video: &VideoId) -> u32 {
        if let Some(id) = self.ids.get(video) {
            return *id;
        }
        *self.ids.entry(video.clone()).or_insert_with(|| {
            let mut names = self.names.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            names.push(video.clone());
            (names.len() - 1) as u32
        })
    }

    /// Records the watch events among `events` (in log order), by [`remember`].
    pub fn observe(&self, events: &[Event]) {
        for e in events {
            let EventKind::Watch { seconds_watched, .. } = e.kind else { continue };
            let id = self.intern(&e.video);
            let mut ring = match self.users.get_mut(&e.user) {
                Some(ring) => ring,
                None => self.users.entry(e.user.clone()).or_default(),
            };
            let watch = Watch { video: id, seconds: seconds_watched, at_ms: e.timestamp_ms };
            remember(&mut ring, watch, self.per_user, |a, b| a.video == b.video);
        }
    }

    /// The user's recent watches, oldest first (empty for an unknown user).
    pub fn recent(&self, user: &UserId) -> Vec<VideoId> {
        self.entries(user).into_iter().map(|h| h.video).collect()
    }

    /// The user's recent watches with their times and seconds watched,
    /// oldest first, as a request's history.
    pub fn entries(&self, user: &UserId) -> Vec<HistoryEntry> {
        let Some(ring) = self.users.get(user) else { return Vec::new() };
        let watches: Vec<Watch> = ring.iter().copied().collect();
        drop(ring);
        let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        watches
            .iter()
            .filter_map(|w| {
                names.get(w.video as usize).map(|v| HistoryEntry {
                    video: v.clone(),
                    watched_at_ms: w.at_ms,
                    seconds_watched: w.seconds,
                })
            })
            .collect()
    }

    /// How many recent watches of `user` are kept (0 for an unknown user).
    pub fn count(&self, user: &UserId) -> usize {
        self.users.get(user).map_or(0, |ring| ring.len())
    }

    /// Users seen.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// An estimate of the heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        let names = self.names.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id_bytes: usize = names.iter().map(|v| 2 * v.as_str().len() + 64).sum();
        let user_bytes: usize = self
            .users
            .iter()
            .map(|e| e.key().as_str().len() + 96 + e.value().capacity() * std::mem::size_of::<Watch>())
            .sum();
        id_bytes + user_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Device;

    fn watch(user: &str, video: &str) -> Event {
        Event {
            timestamp_ms: 1,
            request_id: String::new(),
            user: UserId::parse("u", user).unwrap(),
            video: VideoId::parse("v", video).unwrap(),
            device: Device::Phone,
            kind: EventKind::Watch { seconds_watched: 1.0, video_duration_seconds: 2.0 },
        }
    }

    fn names(r: &RecentWatches, user: &str) -> Vec<String> {
        r.recent(&UserId::parse("u", user).unwrap()).iter().map(|v| v.as_str().to_owned()).collect()
    }

    #[test]
    fn remember_moves_a_rewatch_to_the_end_and_keeps_the_cap() {
        let mut ring = std::collections::VecDeque::new();
        for v in [1, 2, 3, 2, 4] {
            remember(&mut ring, v, 3, |a, b| a == b);
        }
        assert_eq!(ring, [3, 2, 4]);
        remember(&mut ring, 9, 0, |a, b| a == b);
        assert_eq!(ring, [9], "a cap of 0 keeps one");
    }

    #[test]
    fn keeps_the_most_recent_watches_per_user_oldest_first() {
        let r = RecentWatches::new(3);
        r.observe(&[watch("a", "1"), watch("a", "2"), watch("b", "9"), watch("a", "3"), watch("a", "4")]);
        assert_eq!(names(&r, "a"), ["2", "3", "4"]);
        assert_eq!(names(&r, "b"), ["9"]);
        // A re-watch moves to the end instead of appearing twice.
        r.observe(&[watch("a", "2")]);
        assert_eq!(names(&r, "a"), ["3", "4", "2"]);
        assert!(names(&r, "nobody").is_empty());
        assert_eq!(r.users(), 2);
        let entries = r.entries(&UserId::parse("u", "a").unwrap());
        assert_eq!((entries[2].video.as_str(), entries[2].seconds_watched), ("2", 1.0));
    }
}
