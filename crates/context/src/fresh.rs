//! Fresh uploads by topic, built from one catalogue off the request path:
//! per topic, its videos by upload time, newest first, in one flat array
//! whose entries carry the upload time. A request finds the first upload
//! not after its time by binary search and reads forward while uploads are
//! young enough — contiguous memory only, whatever the catalogue size.

use std::{collections::HashMap, sync::Arc};

use watchnext_core::{VideoId, catalog::Catalog};

/// The fresh-upload index of one catalogue.
#[derive(Debug)]
pub(crate) struct FreshIndex {
    /// The catalogue this index was built from.
    pub(crate) catalog: Arc<Catalog>,
    /// Which catalogue this is, counting from 1 in this process.
    pub(crate) generation: u64,
    /// Validated id of every video (`None` only if one failed validation).
    ids: Vec<Option<VideoId>>,
    /// Topics of video `v` (dense ids): `video_topics[topic_offsets[v]..topic_offsets[v + 1]]`.
    topic_offsets: Vec<usize>,
    video_topics: Vec<u32>,
    /// Videos of topic `t` with a known upload time, newest first:
    /// `by_upload[posting_offsets[t]..posting_offsets[t + 1]]`.
    posting_offsets: Vec<usize>,
    by_upload: Vec<Upload>,
}

/// A posting: a video and its upload time.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Upload {
    video: u32,
    upload_ms: i64,
}

/// One fresh upload found for a request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fresh {
    pub(crate) video: u32,
    /// How many of the query video's topics it has.
    pub(crate) shared_topics: u32,
    pub(crate) upload_ms: i64,
}

impl FreshIndex {
    pub(crate) fn build(catalog: Arc<Catalog>, generation: u64) -> Self {
        let videos = catalog.videos();
        let mut topic_ids: HashMap<&str, u32> = HashMap::new();
        let mut topic_offsets = Vec::with_capacity(videos.len() + 1);
        let mut video_topics = Vec::with_capacity(videos.len() * 2);
        let mut ids = Vec::with_capacity(videos.len());
        let mut upload_ms = Vec::with_capacity(videos.len());
        for v in videos {
            topic_offsets.push(video_topics.len());
            let start = video_topics.len();
            for name in &v.topics {
                let next = topic_ids.len() as u32;
                let t = *topic_ids.entry(name.as_str()).or_insert(next);
                if !video_topics[start..].contains(&t) {
                    video_topics.push(t);
                }
            }
            ids.push(VideoId::parse("id", &v.id).ok());
            upload_ms.push(v.upload_ms);
        }
        topic_offsets.push(video_topics.len());

        let topics = topic_ids.len();
        let mut posting_offsets = vec![0usize; topics + 1];
        let listed = |v: usize| upload_ms[v] > 0 && ids[v].is_some() && v < u32::MAX as usize;
        for v in (0..videos.len()).filter(|&v| listed(v)) {
            for &t in &video_topics[topic_offsets[v]..topic_offsets[v + 1]] {
                posting_offsets[t as usize + 1] += 1;
            }
        }
        for t in 0..topics {
            posting_offsets[t + 1] += posting_offsets[t];
        }
        let mut fill = posting_offsets.clone();
        let mut by_upload = vec![Upload { video: 0, upload_ms: 0 }; posting_offsets[topics]];
        for v in (0..videos.len()).filter(|&v| listed(v)) {
            for &t in &video_topics[topic_offsets[v]..topic_offsets[v + 1]] {
                by_upload[fill[t as usize]] = Upload { video: v as u32, upload_ms: upload_ms[v] };
                fill[t as usize] += 1;
            }
        }
        for w in posting_offsets.windows(2) {
            by_upload[w[0]..w[1]].sort_unstable_by(|a, b| b.upload_ms.cmp(&a.upload_ms).then(a.video.cmp(&b.video)));
        }
        Self { catalog, generation, ids, topic_offsets, video_topics, posting_offsets, by_upload }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The dense index of a video id.
    pub(crate) fn index_of(&self, id: &str) -> Option<u32> {
        self.catalog.index_of(id)
    }

    pub(crate) fn id(&self, v: u32) -> Option<&VideoId> {
        self.ids.get(v as usize).and_then(Option::as_ref)
    }

    fn topics_of(&self, v: u32) -> &[u32] {
        let v = v as usize;
        match (self.topic_offsets.get(v), self.topic_offsets.get(v + 1)) {
            (Some(&a), Some(&b)) => &self.video_topics[a..b],
            _ => &[],
        }
    }

    fn posting(&self, t: u32) -> &[Upload] {
        let t = t as usize;
        match (self.posting_offsets.get(t), self.posting_offsets.get(t + 1)) {
            (Some(&a), Some(&b)) => self.by_upload.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Uploads on `query`'s topics within `max_age_ms` before `now_ms` (not
    /// after it), the `per_topic` newest of each topic, without `query`
    /// itself: most shared topics first (counted over those lists), then
    /// newest, then by index; at most `limit`.
    pub(crate) fn fresh_on_topics(
        &self,
        query: u32,
        now_ms: i64,
        max_age_ms: i64,
        per_topic: usize,
        limit: usize,
    ) -> Vec<Fresh> {
        let mut out: Vec<Fresh> = Vec::new();
        for &t in self.topics_of(query) {
            let list = self.posting(t);
            let start = list.partition_point(|p| p.upload_ms > now_ms);
            let young = list[start..].iter().take_while(|p| now_ms - p.upload_ms <= max_age_ms);
            out.extend(young.filter(|p| p.video != query).take(per_topic).map(|p| Fresh {
                video: p.video,
                shared_topics: 1,
                upload_ms: p.upload_ms,
            }));
        }
        // A video in several of the lists shares that many topics.
        out.sort_unstable_by_key(|f| f.video);
        out.dedup_by(|later, first| {
            let same = later.video == first.video;
            if same {
                first.shared_topics += 1;
            }
            same
        });
        out.sort_unstable_by(|a, b| {
            b.shared_topics.cmp(&a.shared_topics).then(b.upload_ms.cmp(&a.upload_ms)).then(a.video.cmp(&b.video))
        });
        out.truncate(limit);
        out
    }
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
    fn fresh_uploads_are_young_enough_not_future_and_on_the_query_topics() {
        let catalog = Catalog::new(vec![
            video("q", &["x", "y"], 1),
            video("new-xy", &["x", "y"], 90),
            video("new-x", &["x"], 95),
            video("future-x", &["x"], 200),
            video("old-x", &["x"], 10),
            video("new-z", &["z"], 99),
            video("unknown-upload-x", &["x"], 0),
        ])
        .unwrap();
        let index = FreshIndex::build(Arc::new(catalog), 1);
        let found = index.fresh_on_topics(0, 100, 50, 10, 10);
        let names: Vec<_> = found.iter().filter_map(|f| index.id(f.video)).map(VideoId::as_str).collect();
        assert_eq!(names, ["new-xy", "new-x"], "two shared topics first, then newest");
        assert_eq!(found[0].shared_topics, 2);
        let capped = index.fresh_on_topics(0, 100, 1_000, 1, 10);
        assert_eq!(capped.len(), 2, "per-topic cap times the number of topics");
        assert_eq!(index.fresh_on_topics(0, 100, 50, 10, 1).len(), 1, "overall limit");
    }
}
