//! The inverted index topic → videos, built from one catalogue off the
//! request path.
//!
//! [`CatalogIndex`] holds what depends on the catalogue alone: dense topic
//! ids, each video's topics (flattened), upload times, and per topic the
//! posting list of its videos **by upload time, newest first** (the
//! freshness-ordered list). [`PriorOrder`] holds the same posting lists
//! **ordered by a static prior** (popularity and quality at the time of the
//! sort, see [`crate::score`]), re-sorted periodically as the statistics
//! move, and the freshness-ordered lists again; each of its postings
//! carries the video's prior and upload time, so that the first pass of a
//! request reads only contiguous memory. All are flat arrays
//! (`postings[offsets[t]..offsets[t + 1]]`).

use std::{collections::HashMap, sync::Arc};

use rayon::prelude::*;
use watchnext_core::{VideoId, catalog::Catalog};

/// Everything the topic generator derives from one catalogue.
#[derive(Debug)]
pub(crate) struct CatalogIndex {
    /// The catalogue this index was built from (id → dense index lookups).
    pub(crate) catalog: Arc<Catalog>,
    /// Which catalogue this is, counting from 1 in this process.
    pub(crate) generation: u64,
    /// Topic name → dense topic id.
    pub(crate) topic_ids: HashMap<String, u32>,
    /// Topics of video `v`: `video_topics[topic_offsets[v]..topic_offsets[v + 1]]`.
    topic_offsets: Vec<usize>,
    video_topics: Vec<u32>,
    /// Validated id of every video (`None` only if one failed validation).
    pub(crate) ids: Vec<Option<VideoId>>,
    /// Upload time of every video, ms (0 = unknown).
    pub(crate) upload_ms: Vec<i64>,
    /// Posting list of topic `t`: `fresh[posting_offsets[t]..posting_offsets[t + 1]]`.
    pub(crate) posting_offsets: Vec<usize>,
    /// Postings by upload time, newest first (ties by index).
    fresh: Vec<u32>,
}

impl CatalogIndex {
    /// Builds the index of `catalog` (linear time plus one sort per topic).
    pub(crate) fn build(catalog: Arc<Catalog>, generation: u64) -> Self {
        let videos = catalog.videos();
        let n = videos.len();
        let mut topic_ids: HashMap<String, u32> = HashMap::new();
        let mut topic_offsets = Vec::with_capacity(n + 1);
        let mut video_topics = Vec::with_capacity(n * 2);
        let mut ids = Vec::with_capacity(n);
        let mut upload_ms = Vec::with_capacity(n);
        for v in videos {
            topic_offsets.push(video_topics.len());
            let start = video_topics.len();
            let id = VideoId::parse("id", &v.id).ok();
            // A video index must fit a u32 below the seen-set's empty marker.
            let indexable = id.is_some() && ids.len() < u32::MAX as usize;
            if indexable {
                for name in &v.topics {
                    let next = topic_ids.len() as u32;
                    let t = *topic_ids.entry(name.clone()).or_insert(next);
                    if !video_topics[start..].contains(&t) {
                        video_topics.push(t);
                    }
                }
            }
            ids.push(id);
            upload_ms.push(v.upload_ms);
        }
        topic_offsets.push(video_topics.len());

        // Counting sort of (topic, video) pairs into per-topic posting lists.
        let topics = topic_ids.len();
        let mut posting_offsets = vec![0usize; topics + 1];
        for &t in &video_topics {
            posting_offsets[t as usize + 1] += 1;
        }
        for t in 0..topics {
            posting_offsets[t + 1] += posting_offsets[t];
        }
        let mut fill = posting_offsets.clone();
        let mut fresh = vec![0u32; video_topics.len()];
        for v in 0..n {
            for &t in &video_topics[topic_offsets[v]..topic_offsets[v + 1]] {
                fresh[fill[t as usize]] = v as u32;
                fill[t as usize] += 1;
            }
        }
        topic_slices_mut(&mut fresh, &posting_offsets).into_par_iter().for_each(|list| {
            list.sort_unstable_by(|&a, &b| upload_ms[b as usize].cmp(&upload_ms[a as usize]).then(a.cmp(&b)))
        });
        Self { catalog, generation, topic_ids, topic_offsets, video_topics, ids, upload_ms, posting_offsets, fresh }
    }

    /// Number of videos.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Number of distinct topics.
    pub(crate) fn topics(&self) -> usize {
        self.topic_ids.len()
    }

    /// Topics of video `v` (dense ids).
    pub(crate) fn topics_of(&self, v: u32) -> &[u32] {
        let v = v as usize;
        match (self.topic_offsets.get(v), self.topic_offsets.get(v + 1)) {
            (Some(&a), Some(&b)) => &self.video_topics[a..b],
            _ => &[],
        }
    }

    /// The posting list of topic `t`, newest upload first.
    pub(crate) fn fresh_list(&self, t: u32) -> &[u32] {
        posting(&self.fresh, &self.posting_offsets, t)
    }

    /// The largest known upload time (0 when none is known).
    pub(crate) fn max_upload_ms(&self) -> i64 {
        self.upload_ms.iter().copied().max().unwrap_or(0).max(0)
    }
}

/// One posting: a video with what the first pass of a request needs, so
/// that a scan reads memory sequentially.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Posting {
    pub(crate) video: u32,
    /// The static prior `P_v` when the lists were sorted.
    pub(crate) prior: f32,
    pub(crate) upload_ms: i64,
}

/// The posting lists of one [`CatalogIndex`] with a static prior: ordered
/// by it, and in freshness order carrying it.
#[derive(Debug)]
pub(crate) struct PriorOrder {
    /// Which sort this is, counting from 1 per process.
    pub(crate) generation: u64,
    /// Postings by prior, best first (ties by index), laid out as the index's.
    by_prior: Vec<Posting>,
    /// Postings newest upload first, laid out as the index's.
    by_upload: Vec<Posting>,
}

impl PriorOrder {
    /// Every posting list of `index` with `prior` (one value per video).
    pub(crate) fn build(index: &CatalogIndex, prior: &[f32], generation: u64) -> Self {
        let posting = |v: u32| Posting {
            video: v,
            prior: prior.get(v as usize).copied().unwrap_or(0.0),
            upload_ms: index.upload_ms.get(v as usize).copied().unwrap_or(0),
        };
        let by_upload: Vec<Posting> = index.fresh.par_iter().map(|&v| posting(v)).collect();
        let mut by_prior = by_upload.clone();
        topic_slices_mut(&mut by_prior, &index.posting_offsets)
            .into_par_iter()
            .for_each(|list| list.sort_unstable_by(|a, b| b.prior.total_cmp(&a.prior).then(a.video.cmp(&b.video))));
        Self { generation, by_prior, by_upload }
    }

    /// The posting list of topic `t` of `index`, best prior first.
    pub(crate) fn list<'a>(&'a self, index: &'a CatalogIndex, t: u32) -> &'a [Posting] {
        posting(&self.by_prior, &index.posting_offsets, t)
    }

    /// The posting list of topic `t` of `index`, newest upload first.
    pub(crate) fn fresh_list<'a>(&'a self, index: &'a CatalogIndex, t: u32) -> &'a [Posting] {
        posting(&self.by_upload, &index.posting_offsets, t)
    }
}

fn posting<'a, T>(postings: &'a [T], offsets: &[usize], t: u32) -> &'a [T] {
    let t = t as usize;
    match (offsets.get(t), offsets.get(t + 1)) {
        (Some(&a), Some(&b)) => postings.get(a..b).unwrap_or(&[]),
        _ => &[],
    }
}

/// Splits `postings` into one mutable slice per topic.
fn topic_slices_mut<'a, T>(mut postings: &'a mut [T], offsets: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (head, tail) = std::mem::take(&mut postings).split_at_mut(w[1] - w[0]);
        out.push(head);
        postings = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use watchnext_core::catalog::Video;

    use super::*;

    fn video(id: &str, topics: &[&str], upload_ms: i64) -> Video {
        Video {
            id: id.into(),
            title: String::new(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            duration_seconds: 60.0,
            upload_ms,
        }
    }

    #[test]
    fn posting_lists_hold_each_topic_newest_first_and_by_prior() {
        let catalog = Catalog::new(vec![
            video("a", &["x", "y"], 10),
            video("b", &["y"], 30),
            video("c", &["x", "x"], 20),
            video("d", &[], 40),
        ])
        .unwrap();
        let index = CatalogIndex::build(Arc::new(catalog), 1);
        assert_eq!(index.topics(), 2);
        let x = index.topic_ids["x"];
        let y = index.topic_ids["y"];
        assert_eq!(index.fresh_list(x), [2, 0], "a repeated topic is indexed once");
        assert_eq!(index.fresh_list(y), [1, 0]);
        assert_eq!(index.topics_of(3), [] as [u32; 0]);
        assert_eq!(index.topics_of(99), [] as [u32; 0]);
        assert_eq!(index.max_upload_ms(), 40);

        let prior = PriorOrder::build(&index, &[0.9, 0.1, 0.5, 0.0], 1);
        let videos = |list: &[Posting]| list.iter().map(|p| p.video).collect::<Vec<_>>();
        assert_eq!(videos(prior.list(&index, x)), [0, 2]);
        assert_eq!(videos(prior.list(&index, y)), [0, 1]);
        assert_eq!(videos(prior.fresh_list(&index, x)), [2, 0]);
        assert_eq!(prior.list(&index, x)[1], Posting { video: 2, prior: 0.5, upload_ms: 20 });
        assert!(prior.list(&index, 7).is_empty());
    }
}
