//! Merging the generators' lists into the candidates the ranker scores: the
//! one piece of code the recommender runs on every request and the
//! trainer's point-in-time replay runs on every logged moment
//! (`watchnext_trainer::replay`), so what the ranker learns from and what it
//! orders at serving are the same candidates with the same provenance.
//!
//! One candidate per video, carrying every generator that proposed it with
//! that generator's score and the video's 1-based place in that generator's
//! list (provenance, a [`Vote`] each; a generator's first vote wins if it
//! proposes a video twice). The place counts every entry of the list,
//! excluded ones too, so it is the generator's own rank. The query video and the videos the request
//! excludes (the user's recent history) are dropped, and so is a video the
//! catalogue says was uploaded after the request's time: it cannot be
//! watched yet (a request replayed or stamped in the past would otherwise be
//! offered videos from its future). Candidates are ordered
//! by reciprocal-rank fusion of the lists (Σ 1 / (k + rank), k = [`RRF_K`],
//! ties by video id) and the best `max` kept.

use std::collections::{HashMap, HashSet, hash_map::Entry};

use crate::{
    catalog::{Catalog, FastHash},
    event::{Source, Vote},
    ids::VideoId,
    request::Query,
};

/// Rank constant of the reciprocal-rank fusion.
pub const RRF_K: f64 = 60.0;

/// One generator's answer: its source and `(video, score)` best first.
pub type SourceList = (Source, Vec<(VideoId, f32)>);

/// Every generator that proposed a video, with its score and rank.
pub type Provenance = Vec<Vote>;

/// A merged candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub video: VideoId,
    /// The reciprocal-rank fusion score (the order without a ranker).
    pub fused: f64,
    /// `(source, that generator's score)` for every generator that proposed it.
    pub sources: Provenance,
}

/// The videos a query's candidates must not contain: the query video and the
/// request's history.
pub fn excluded(query: &Query) -> HashSet<&VideoId, FastHash> {
    query.history.0.iter().map(|h| &h.video).chain([&query.query_video]).collect()
}

/// Whether `video` exists at `time_ms` by `catalog`: not uploaded later.
/// A video the catalogue does not know, or whose upload time it does not
/// know (0), is taken to exist.
pub fn released(catalog: Option<&Catalog>, video: &VideoId, time_ms: i64) -> bool {
    let upload_ms = catalog.and_then(|c| c.feature_keys(c.index_of(video.as_str())?)).map_or(0, |k| k.upload_ms);
    upload_ms == 0 || upload_ms <= time_ms
}

/// Merges `lists` for a request at `time_ms` (see the module
/// documentation), best fused first, at most `max`.
pub fn merge(
    lists: &[SourceList],
    excluded: &HashSet<&VideoId, FastHash>,
    catalog: Option<&Catalog>,
    time_ms: i64,
    max: usize,
) -> Vec<Merged> {
    let capacity = lists.iter().map(|(_, l)| l.len()).sum();
    let mut merged: HashMap<&VideoId, (f64, Provenance), FastHash> =
        HashMap::with_capacity_and_hasher(capacity, FastHash::default());
    // Videos not released at the request's time (none, usually).
    let mut future: HashSet<&VideoId, FastHash> = HashSet::default();
    for (source, list) in lists {
        for (rank, (video, score)) in list.iter().enumerate() {
            if excluded.contains(video) {
                continue;
            }
            let entry = match merged.entry(video) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    if !future.is_empty() && future.contains(video) {
                        continue;
                    }
                    if !released(catalog, video, time_ms) {
                        future.insert(video);
                        continue;
                    }
                    e.insert((0.0, Provenance::new()))
                }
            };
            entry.0 += 1.0 / (RRF_K + rank as f64 + 1.0);
            if !entry.1.iter().any(|v| v.source == *source) {
                entry.1.push(Vote::new(*source, *score, u32::try_from(rank + 1).unwrap_or(u32::MAX)));
            }
        }
    }
    let mut fused: Vec<Merged> =
        merged.into_iter().map(|(v, (fused, sources))| Merged { video: v.clone(), fused, sources }).collect();
    fused.sort_by(|a, b| b.fused.total_cmp(&a.fused).then_with(|| a.video.cmp(&b.video)));
    fused.truncate(max);
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str) -> VideoId {
        VideoId::parse("v", id).unwrap()
    }

    #[test]
    fn merges_with_provenance_fuses_ranks_and_drops_excluded() {
        let lists = vec![
            (Source::Topic, vec![(v("a"), 0.9), (v("b"), 0.8), (v("q"), 0.7)]),
            (Source::Cowatch, vec![(v("b"), 3.0), (v("c"), 2.0), (v("b"), 1.0)]),
            (Source::Context, vec![(v("h"), 5.0), (v("d"), 4.0)]),
        ];
        let (q, h) = (v("q"), v("h"));
        let excluded: HashSet<&VideoId, FastHash> = [&q, &h].into_iter().collect();
        let merged = merge(&lists, &excluded, None, 0, 10);
        let order: Vec<&str> = merged.iter().map(|m| m.video.as_str()).collect();
        // b: ranks 2 (topic) and 1 (+3, co-watch, counted again); a rank 1; c and d rank 2 (an
        // excluded video keeps its place in its list).
        assert_eq!(order, ["b", "a", "c", "d"]);
        assert_eq!(merged[0].sources, [Vote::new(Source::Topic, 0.8, 2), Vote::new(Source::Cowatch, 3.0, 1)]);
        // c is co-watch's second; d context's second, after the excluded h.
        assert_eq!(merged[2].sources, [Vote::new(Source::Cowatch, 2.0, 2)]);
        assert_eq!(merged[3].sources, [Vote::new(Source::Context, 4.0, 2)]);
        let expected = 1.0 / (RRF_K + 2.0) + 1.0 / (RRF_K + 1.0) + 1.0 / (RRF_K + 3.0);
        assert!((merged[0].fused - expected).abs() < 1e-12);
        // c and d tie on fused score: the video id breaks it.
        assert!((merged[2].fused - merged[3].fused).abs() < 1e-15);
        assert_eq!(merge(&lists, &excluded, None, 0, 2).len(), 2);
        assert!(merge(&[], &excluded, None, 0, 5).is_empty());
        // With a catalogue: d is uploaded at 100, so a request at 99 cannot have it.
        let video = |id: &str, upload_ms: i64| crate::catalog::Video {
            id: id.into(),
            title: String::new(),
            topics: vec![],
            duration_seconds: 0.0,
            upload_ms,
        };
        let catalog = Catalog::new(vec![video("a", 0), video("b", 50), video("d", 100)]).unwrap();
        let at = |t: i64| -> Vec<String> {
            merge(&lists, &excluded, Some(&catalog), t, 10).iter().map(|m| m.video.as_str().to_owned()).collect()
        };
        assert_eq!(at(99), ["b", "a", "c"], "c is not in the catalogue, a has no upload time");
        assert_eq!(at(100), ["b", "a", "c", "d"]);
    }

    proptest::proptest! {
        /// Any lists: one candidate per video, none excluded, best fused
        /// first, at most `max`, and every vote carries that generator's
        /// first place for the video.
        #[test]
        fn merge_keeps_its_promises(
            lists in proptest::collection::vec(proptest::collection::vec((0u8..40, -5.0f32..5.0), 0..30), 1..5),
            excluded_ids in proptest::collection::vec(0u8..40, 0..5),
            max in 1usize..50,
        ) {
            let lists: Vec<SourceList> = lists
                .iter()
                .zip(crate::registry::GENERATORS.iter().copied())
                .map(|(l, s)| (s, l.iter().map(|(id, score)| (v(&format!("v{id}")), *score)).collect()))
                .collect();
            let excluded_videos: Vec<VideoId> = excluded_ids.iter().map(|id| v(&format!("v{id}"))).collect();
            let excluded: HashSet<&VideoId, FastHash> = excluded_videos.iter().collect();
            let merged = merge(&lists, &excluded, None, 0, max);
            proptest::prop_assert!(merged.len() <= max);
            let unique: HashSet<&VideoId> = merged.iter().map(|m| &m.video).collect();
            proptest::prop_assert_eq!(unique.len(), merged.len());
            proptest::prop_assert!(merged.iter().all(|m| !excluded.contains(&m.video)));
            proptest::prop_assert!(merged.windows(2).all(|w| w[0].fused >= w[1].fused));
            for m in &merged {
                for vote in &m.sources {
                    let (_, list) = lists.iter().find(|(s, _)| *s == vote.source).unwrap();
                    let first = list.iter().position(|(video, _)| video == &m.video).unwrap();
                    proptest::prop_assert_eq!(vote.rank as usize, first + 1);
                    proptest::prop_assert_eq!(vote.score, list[first].1);
                }
            }
        }
    }
}
