//! Feature assembly for any Rank request that passes validation: every
//! dense value finite, every sparse value inside its field's buckets.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use watchnext_core::{
    catalog::{Catalog, Video},
    features::{DENSE_LEN, FeatureSchema, RequestFeatures, RequestInput, SPARSE_LEN},
    request::Query,
};
use watchnext_proto::v1 as pb;

const NOW_MS: i64 = 1_780_000_000_000;

/// Ten videos with every kind of gap: no topics, unknown duration and upload
/// time, an upload in the future.
fn catalog() -> &'static Catalog {
    static C: OnceLock<Catalog> = OnceLock::new();
    C.get_or_init(|| {
        let videos = (0..10)
            .map(|i| Video {
                id: format!("v{i}"),
                title: String::new(),
                topics: (0..i % 3).map(|t| format!("topic-{}", (i + t) % 4)).collect(),
                duration_seconds: if i % 4 == 0 { 0.0 } else { 60.0 * i as f32 },
                upload_ms: match i % 3 {
                    0 => 0,
                    1 => NOW_MS - 86_400_000 * i64::from(i),
                    _ => NOW_MS + 1_000,
                },
            })
            .collect();
        Catalog::new(videos).expect("catalogue")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = pb::RankRequest::decode(data) else { return };
    let Ok((query, candidates)) = Query::from_rank(&r, 1_000, NOW_MS) else { return };
    let schema = FeatureSchema::default();
    let catalog = catalog();
    let input = RequestInput::of(&query);
    let request = RequestFeatures::new(&schema, catalog, &input);
    let buckets = schema.sparse_buckets();
    let (mut dense, mut sparse) = ([0.0f32; DENSE_LEN], [0i64; SPARSE_LEN]);
    for c in &candidates {
        request.candidate(catalog, c.video.as_str(), &c.sources, &mut dense, &mut sparse);
        assert!(dense.iter().all(|v| v.is_finite()), "non-finite feature for {}: {dense:?}", c.video.as_str());
        for (v, b) in sparse.iter().zip(buckets) {
            assert!((0..i64::from(b)).contains(v), "sparse {v} outside 0..{b}");
        }
    }
});
