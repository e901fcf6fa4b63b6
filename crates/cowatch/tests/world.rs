//! Real data flow: the synthetic world's logs through the generator. Its
//! users watch by topic interest, so co-watched videos should share the
//! query video's topics far more often than random videos do.

mod common;

use common::query;
use watchnext_core::{event::Event, generator::Generator};
use watchnext_cowatch::{CowatchConfig, CowatchGenerator};
use watchnext_world::{LoggingPolicy, World, WorldConfig, generate_logs};

#[test]
fn candidates_share_the_query_videos_topics_far_more_than_random_videos() {
    let world = World::build(&WorldConfig::toy()).unwrap();
    let mut events: Vec<Event> = Vec::new();
    let summary =
        generate_logs(&world, LoggingPolicy::PopularityNoise { noise: 1.0 }, 200_000, &mut events, false).unwrap();
    assert!(summary.watches > 10_000, "{summary:?}");

    let g = CowatchGenerator::new(CowatchConfig::default()).unwrap();
    for batch in events.chunks(4_096) {
        g.observe(batch);
    }
    let stats = g.stats();
    assert_eq!(stats.watches, summary.watches);
    assert!(stats.pair_updates > summary.watches, "{stats:?}");

    let shares_topic = |a: u32, b: &str| {
        let b = world.video_index(b).unwrap();
        world.video(a).topics().iter().any(|t| world.video(b).topics().contains(t))
    };
    let watched: Vec<u32> = (0..world.num_videos()).filter(|&v| g.contains(world.video_id(v).as_str())).collect();
    assert!(watched.len() > 300, "{}", watched.len());

    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rand = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut hits, mut total, mut random_hits, mut random_total, mut queries) = (0, 0, 0, 0, 0);
    for &v in watched.iter().step_by(3) {
        let out = g.generate(&query(world.video_id(v).as_str()), 10);
        if out.candidates.is_empty() {
            continue;
        }
        queries += 1;
        for c in &out.candidates {
            total += 1;
            hits += usize::from(shares_topic(v, c.video.as_str()));
            // The baseline: as many random watched videos.
            let r = watched[rand(watched.len())];
            random_total += 1;
            random_hits += usize::from(shares_topic(v, world.video_id(r).as_str()));
        }
    }
    assert!(queries > 100, "{queries}");
    let share = hits as f64 / total as f64;
    let random = random_hits as f64 / random_total as f64;
    assert!(share > 2.0 * random && share > 0.4, "candidates share a topic {share:.3}, random videos {random:.3}");
}
