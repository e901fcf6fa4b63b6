//! One request: the topic profile, the bounded scan of the posting lists,
//! and the top-k selection. Reads one [`Snapshot`] and takes no lock;
//! per-thread scratch space keeps it free of allocations beyond the answer.

use std::cell::RefCell;

use watchnext_core::{
    generator::{Candidate, Generated},
    request::Query,
};

use crate::{Snapshot, config::TopicConfig, score::Scorer};

/// A map video index → slot for one request: open addressing, cleared per
/// request, sized so that it is never more than half full.
#[derive(Debug, Default)]
pub(crate) struct SlotMap {
    keys: Vec<u32>,
    values: Vec<u32>,
    shift: u32,
}

const EMPTY: u32 = u32::MAX;
/// The slot of a video that must not be proposed.
const EXCLUDED: u32 = u32::MAX;

impl SlotMap {
    /// Empties the map and makes room for `items` insertions.
    pub(crate) fn reset(&mut self, items: usize) {
        let cap = (items.max(16) * 2).next_power_of_two();
        if self.keys.len() == cap {
            self.keys.fill(EMPTY);
        } else {
            self.keys = vec![EMPTY; cap];
            self.values = vec![0; cap];
        }
        self.shift = 64 - cap.trailing_zeros();
    }

    /// The slot of `key`, or `None` after inserting it with `slot`.
    pub(crate) fn get_or_insert(&mut self, key: u32, slot: u32) -> Option<u32> {
        let mask = self.keys.len() - 1;
        let mut i = (u64::from(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            match self.keys[i] {
                EMPTY => {
                    self.keys[i] = key;
                    self.values[i] = slot;
                    return None;
                }
                k if k == key => return Some(self.values[i]),
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// A video met by the first pass.
#[derive(Debug, Clone, Copy)]
struct Hit {
    video: u32,
    /// Profile weight of the topics whose lists held it (within their prefixes).
    overlap: f32,
    /// The static prior carried by the posting.
    prior: f32,
    upload_ms: i64,
    /// The topic whose list last contributed (a video is in both lists of a topic).
    last_topic: u32,
    score: f32,
}

/// Per-thread scratch space.
#[derive(Debug, Default)]
struct Scratch {
    seen: SlotMap,
    hits: Vec<Hit>,
    /// `(score, video)` of the rescored candidates.
    scored: Vec<(f32, u32)>,
    /// `(topic, weight)` of the profile.
    profile: Vec<(u32, f32)>,
    /// Known history videos, most recent first.
    history: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Answers `query` from `snap` (see the crate documentation).
pub(crate) fn generate(config: &TopicConfig, snap: &Snapshot, query: &Query, max: usize) -> Generated {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => run(config, snap, query, max, &mut scratch),
        Err(_) => run(config, snap, query, max, &mut Scratch::default()),
    })
}

fn run(config: &TopicConfig, snap: &Snapshot, query: &Query, max: usize, s: &mut Scratch) -> Generated {
    let index = &snap.index;
    let catalog = &index.catalog;
    let mut notes: Vec<String> = Vec::new();
    let query_index = catalog.index_of(query.query_video.as_str());

    // Known history videos, most recent first (all of them are excluded).
    s.history.clear();
    s.history.extend(query.history.0.iter().rev().filter_map(|h| catalog.index_of(h.video.as_str())));

    // The profile: query topics, then the recency-weighted history topics.
    s.profile.clear();
    if let Some(q) = query_index {
        for &t in index.topics_of(q) {
            add(&mut s.profile, t, config.query_topic_weight);
        }
    }
    let read = s.history.len().min(config.max_history);
    if read > 0 && config.history_weight > 0.0 {
        let rho = config.history_recency_decay;
        let norm: f32 = (0..read).map(|r| rho.powi(r as i32)).sum();
        for (r, &h) in s.history[..read].iter().enumerate() {
            let w = config.history_weight * rho.powi(r as i32) / norm;
            for &t in index.topics_of(h) {
                add(&mut s.profile, t, w);
            }
        }
    }
    s.profile.retain(|&(_, w)| w > 0.0);
    s.profile.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.profile.truncate(config.max_topics);

    match (query_index, s.history.is_empty(), query.history.is_empty()) {
        (None, true, _) => notes.push(format!(
            "query video `{}` is not in the catalogue and no history video is: no topics to match",
            query.query_video
        )),
        (None, false, _) => {
            notes.push(format!("query video `{}` is not in the catalogue: history topics only", query.query_video))
        }
        (Some(_), _, true) => notes.push("no history (cold user): query-video topics only".into()),
        (Some(_), true, false) => notes.push("no history video is in the catalogue: query-video topics only".into()),
        (Some(_), false, false) => {}
    }
    if s.profile.is_empty() {
        if query_index.is_some() {
            notes.push("neither the query video nor the history has topics".into());
        }
        return answer(snap, Vec::new(), notes);
    }

    // First pass: a bounded prefix of each profile topic's two posting
    // lists, scored with what the postings carry.
    let total: f32 = s.profile.iter().map(|&(_, w)| w).sum();
    let budgets: Vec<(u32, f32, usize, usize)> = s
        .profile
        .iter()
        .map(|&(t, w)| {
            let n = ((config.scan_budget as f32 * w / total).ceil() as usize).max(config.min_scan_per_topic);
            let fresh = ((n as f32 * config.fresh_scan_share).ceil() as usize).min(n);
            // Never more than the list holds (this also bounds the slot map).
            let len = index.fresh_list(t).len();
            (t, w, (n - fresh).min(len), fresh.min(len))
        })
        .collect();
    let bound: usize = budgets.iter().map(|&(_, _, p, f)| p + f).sum::<usize>() + s.history.len() + 1;
    s.seen.reset(bound);
    for &v in query_index.iter().chain(&s.history) {
        s.seen.get_or_insert(v, EXCLUDED);
    }
    let now = query.context.time_ms;
    let scorer = Scorer::new(config, index, &snap.stats, now);
    s.hits.clear();
    for &(t, w, n_prior, n_fresh) in &budgets {
        let fresh = snap.prior.fresh_list(index, t);
        // The newest uploads not after the request time.
        let start = if config.exclude_future_uploads { fresh.partition_point(|p| p.upload_ms > now) } else { 0 };
        let prior = snap.prior.list(index, t).iter().take(n_prior);
        for p in prior.chain(fresh[start..].iter().take(n_fresh)) {
            match s.seen.get_or_insert(p.video, s.hits.len() as u32) {
                None => s.hits.push(Hit {
                    video: p.video,
                    overlap: w,
                    prior: p.prior,
                    upload_ms: p.upload_ms,
                    last_topic: t,
                    score: 0.0,
                }),
                Some(EXCLUDED) => {}
                Some(slot) => {
                    if let Some(h) = s.hits.get_mut(slot as usize)
                        && h.last_topic != t
                    {
                        h.overlap += w;
                        h.last_topic = t;
                    }
                }
            }
        }
    }
    s.hits.retain_mut(|h| match scorer.combine(h.overlap, h.prior, h.upload_ms) {
        Some(score) => {
            h.score = score;
            true
        }
        None => false,
    });

    // Second pass: the best of the first rescored exactly, with the full
    // topic overlap and the live statistics.
    let keep =
        if config.rescore_factor > 0.0 { ((max as f32 * config.rescore_factor).ceil() as usize).max(max) } else { max };
    let by_hit = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.video.cmp(&b.video));
    if keep == 0 {
        s.hits.clear();
    } else if s.hits.len() > keep {
        s.hits.select_nth_unstable_by(keep - 1, by_hit);
        s.hits.truncate(keep);
    }
    s.scored.clear();
    if config.rescore_factor > 0.0 {
        for h in &s.hits {
            let overlap: f32 =
                index.topics_of(h.video).iter().filter_map(|t| s.profile.iter().find(|p| p.0 == *t).map(|p| p.1)).sum();
            if let Some(score) = scorer.score(h.video as usize, overlap) {
                s.scored.push((score, h.video));
            }
        }
    } else {
        s.scored.extend(s.hits.iter().map(|h| (h.score, h.video)));
    }

    // Top `max`, best first (ties by index, for determinism).
    let by_score = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if max == 0 {
        s.scored.clear();
    } else if s.scored.len() > max {
        s.scored.select_nth_unstable_by(max - 1, by_score);
        s.scored.truncate(max);
    }
    s.scored.sort_unstable_by(by_score);
    let candidates = s
        .scored
        .iter()
        .filter_map(|&(score, v)| {
            index.ids.get(v as usize).and_then(Option::as_ref).map(|id| Candidate { video: id.clone(), score })
        })
        .collect();
    answer(snap, candidates, notes)
}

fn add(profile: &mut Vec<(u32, f32)>, topic: u32, w: f32) {
    match profile.iter_mut().find(|p| p.0 == topic) {
        Some(p) => p.1 += w,
        None => profile.push((topic, w)),
    }
}

fn answer(snap: &Snapshot, candidates: Vec<Candidate>, notes: Vec<String>) -> Generated {
    Generated { candidates, note: notes.join("; "), version: snap.version.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_map_remembers_and_resets() {
        let mut map = SlotMap::default();
        map.reset(100);
        for v in 0..100 {
            assert_eq!(map.get_or_insert(v * 7919, v), None);
        }
        for v in 0..100 {
            assert_eq!(map.get_or_insert(v * 7919, 0), Some(v));
        }
        map.reset(100);
        assert_eq!(map.get_or_insert(0, 5), None);
        map.reset(10_000);
        assert!(map.keys.len() >= 20_000);
        assert_eq!(map.get_or_insert(0, 6), None);
        assert_eq!(map.get_or_insert(0, 7), Some(6));
    }
}
