//! Held-out next watches after a time split: the quickest way to ask "does
//! this generator propose what users went on to watch?" in a crate's own
//! tests. Learn from the events before the split, then for every watch after
//! it that answered a request, ask for K candidates for that request's query
//! video (with the user's recent watches as history) and count how often the
//! watched video is among them, against a uniformly random list of K.

use std::collections::{HashMap, HashSet, VecDeque};

use watchnext_core::{
    History, RequestContext, RequestId, VideoId,
    event::{Event, EventKind},
    generator::Generator,
    request::{HistoryEntry, Query},
};

/// One held-out next watch and the request it answered.
#[derive(Debug, Clone)]
pub struct NextWatch {
    pub query: Query,
    pub target: VideoId,
}

/// Held-out cases: watches at index `split` or later that answered a
/// request, with the user's last `history_len` watches as history (targets
/// already in the history or equal to the query are skipped), keeping every
/// `stride`-th.
pub fn next_watches(events: &[Event], split: usize, history_len: usize, stride: usize) -> Vec<NextWatch> {
    let mut history: HashMap<&str, VecDeque<(&VideoId, i64)>> = HashMap::new();
    let mut query_of: HashMap<&str, &VideoId> = HashMap::new();
    let mut cases = Vec::new();
    let mut seen = 0usize;
    for (i, e) in events.iter().enumerate() {
        match &e.kind {
            EventKind::Impression(imp) => {
                if let Some(q) = &imp.query_video {
                    query_of.insert(e.request_id.as_str(), q);
                }
            }
            EventKind::Watch { .. } => {
                let h = history.entry(e.user.as_str()).or_default();
                if i >= split
                    && let Some(&q) = query_of.get(e.request_id.as_str())
                    && e.video != *q
                    && !h.iter().any(|(v, _)| **v == e.video)
                    && let Ok(request_id) = RequestId::parse("request_id", &e.request_id)
                {
                    seen += 1;
                    if seen.is_multiple_of(stride.max(1)) {
                        let entries = h
                            .iter()
                            .map(|&(v, t)| HistoryEntry { video: v.clone(), watched_at_ms: t, seconds_watched: 1.0 })
                            .collect();
                        cases.push(NextWatch {
                            query: Query {
                                request_id,
                                user: e.user.clone(),
                                query_video: q.clone(),
                                device: e.device,
                                history: History(entries),
                                context: RequestContext { time_ms: e.timestamp_ms, ..RequestContext::default() },
                            },
                            target: e.video.clone(),
                        });
                    }
                }
                h.push_back((&e.video, e.timestamp_ms));
                if h.len() > history_len {
                    h.pop_front();
                }
            }
            _ => {}
        }
    }
    cases
}

/// Recall@K of a generator on held-out next watches, next to a random list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallVsRandom {
    /// Share of cases whose target is among the generator's K candidates.
    pub recall: f64,
    /// Expected recall of K videos drawn uniformly from the catalogue minus
    /// the query video and the history.
    pub random: f64,
    /// Answers that broke the contract by holding more than K candidates.
    pub oversized: usize,
}

/// Asks `generator` for `k` candidates per case (catalogue of `videos`).
pub fn recall_vs_random(generator: &dyn Generator, cases: &[NextWatch], k: usize, videos: usize) -> RecallVsRandom {
    let (mut hits, mut random, mut oversized) = (0usize, 0.0, 0usize);
    for case in cases {
        let out = generator.generate(&case.query, k);
        oversized += usize::from(out.candidates.len() > k);
        hits += usize::from(out.candidates.iter().any(|c| c.video == case.target));
        let excluded: HashSet<_> = case.query.history.0.iter().map(|h| &h.video).collect();
        let pool = videos.saturating_sub(1 + excluded.len()).max(1);
        random += (k as f64 / pool as f64).min(1.0);
    }
    let n = cases.len().max(1) as f64;
    RecallVsRandom { recall: hits as f64 / n, random: random / n, oversized }
}
