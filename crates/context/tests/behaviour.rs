//! Behaviour of the context generator on small hand-made data: trending by
//! device and time of day, decay, fresh uploads, fallbacks, publication and
//! catalogue swaps under concurrent load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};

use watchnext_context::{ContextConfig, ContextGenerator};
use watchnext_core::{
    Device, History, RequestContext, RequestId, UserId, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventKind},
    generator::{Generated, Generator},
    request::{HistoryEntry, Query},
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Midnight UTC, 2024-06-01.
const DAY0: i64 = 1_717_200_000_000;

fn video(id: &str, topics: &[&str], upload_ms: i64) -> Video {
    Video {
        id: id.into(),
        title: String::new(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        duration_seconds: 100.0,
        upload_ms,
    }
}

fn query(video: &str, device: Device, time_ms: i64, history: &[&str]) -> Query {
    Query {
        request_id: RequestId::parse("request_id", "r1").expect("valid test input"),
        user: UserId::parse("user_id", "brand-new-user").expect("valid test input"),
        query_video: VideoId::parse("query_video_id", video).expect("valid test input"),
        device,
        history: History(
            history
                .iter()
                .map(|h| HistoryEntry {
                    video: VideoId::parse("video_id", h).expect("valid test input"),
                    watched_at_ms: time_ms - 60_000,
                    seconds_watched: 60.0,
                })
                .collect(),
        ),
        context: RequestContext { time_ms, ..RequestContext::default() },
    }
}

fn event(video: &str, device: Device, t: i64, kind: EventKind) -> Event {
    Event {
        timestamp_ms: t,
        request_id: String::new(),
        user: UserId::parse("user_id", "u1").expect("valid test input"),
        video: VideoId::parse("video_id", video).expect("valid test input"),
        device,
        kind,
    }
}

/// `n` watches of `video` on `device` at `t`, `t + 1 ms`, …
fn watches(video: &str, device: Device, t: i64, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(
                video,
                device,
                t + i as i64,
                EventKind::Watch { seconds_watched: 50.0, video_duration_seconds: 100.0 },
            )
        })
        .collect()
}

fn immediate() -> ContextConfig {
    ContextConfig { publish_interval_ms: 0, ..ContextConfig::default() }
}

fn ids(g: &Generated) -> Vec<&str> {
    g.candidates.iter().map(|c| c.video.as_str()).collect()
}

/// Catalogue of `tv-*`, `phone-*` and `other-*` videos uploaded long ago.
fn catalog() -> Arc<Catalog> {
    let mut videos = Vec::new();
    for prefix in ["tv", "phone", "other"] {
        for i in 0..5 {
            videos.push(video(&format!("{prefix}-{i}"), &["misc"], DAY0 - 400 * DAY));
        }
    }
    Arc::new(Catalog::new(videos).expect("valid test input"))
}

/// Evening tv viewers watch `tv-*`, morning phone viewers `phone-*`, more of the lower numbers.
fn viewing() -> Vec<Event> {
    let mut events = Vec::new();
    for day in 0..3 {
        for i in 0..5 {
            events.extend(watches(&format!("tv-{i}"), Device::Tv, DAY0 + day * DAY + 21 * HOUR, 10 - 2 * i));
            events.extend(watches(&format!("phone-{i}"), Device::Phone, DAY0 + day * DAY + 8 * HOUR, 10 - 2 * i));
        }
    }
    events.sort_by_key(|e| e.timestamp_ms);
    events
}

#[test]
fn a_cold_user_on_an_unknown_video_gets_trending_for_their_device_and_hour() {
    let g = ContextGenerator::with_catalog(immediate(), &catalog()).unwrap();
    g.observe(&viewing());
    let at = DAY0 + 3 * DAY + 21 * HOUR + 30 * 60_000;
    let out = g.generate(&query("never-seen", Device::Tv, at, &[]), 5);
    assert_eq!(ids(&out), ["tv-0", "tv-1", "tv-2", "tv-3", "tv-4"]);
    assert!(
        out.note.contains("`never-seen` is not in the catalogue: fell back to trending for tv at 20-22h"),
        "{}",
        out.note
    );
    assert!(out.candidates.windows(2).all(|w| w[0].score > w[1].score));

    // A longer list goes on with global trending.
    let out = g.generate(&query("never-seen", Device::Tv, at, &[]), 10);
    assert_eq!(&ids(&out)[..5], ["tv-0", "tv-1", "tv-2", "tv-3", "tv-4"]);
    assert!(ids(&out)[5..].iter().all(|id| id.starts_with("phone-")));
    assert_eq!(g.status().events_counted, 180);
}

#[test]
fn tv_in_the_evening_and_phone_in_the_morning_differ_when_the_data_differ() {
    let g = ContextGenerator::with_catalog(immediate(), &catalog()).unwrap();
    g.observe(&viewing());
    let tv = g.generate(&query("other-0", Device::Tv, DAY0 + 4 * DAY + 21 * HOUR, &[]), 3);
    let phone = g.generate(&query("other-0", Device::Phone, DAY0 + 4 * DAY + 8 * HOUR, &[]), 3);
    assert_eq!(ids(&tv), ["tv-0", "tv-1", "tv-2"]);
    assert_eq!(ids(&phone), ["phone-0", "phone-1", "phone-2"]);
    assert!(tv.note.is_empty() && phone.note.is_empty(), "{} / {}", tv.note, phone.note);

    // Phone at 21h has no data of its own: global trending, said in the note.
    let phone_evening = g.generate(&query("other-0", Device::Phone, DAY0 + 4 * DAY + 21 * HOUR, &[]), 3);
    assert!(phone_evening.note.contains("no trending data for phone at 20-22h yet: global trending"));
    assert_eq!(ids(&phone_evening).len(), 3);

    // The same events on both devices: the same lists.
    let g = ContextGenerator::with_catalog(immediate(), &catalog()).unwrap();
    let mut same = watches("other-3", Device::Tv, DAY0 + 21 * HOUR, 5);
    same.extend(watches("other-3", Device::Phone, DAY0 + 8 * HOUR, 5));
    same.extend(watches("other-1", Device::Tv, DAY0 + 21 * HOUR, 2));
    same.extend(watches("other-1", Device::Phone, DAY0 + 8 * HOUR, 2));
    same.sort_by_key(|e| e.timestamp_ms);
    g.observe(&same);
    let tv = g.generate(&query("tv-0", Device::Tv, DAY0 + DAY + 21 * HOUR, &[]), 3);
    let phone = g.generate(&query("tv-0", Device::Phone, DAY0 + DAY + 8 * HOUR, &[]), 3);
    assert_eq!(ids(&tv), ids(&phone));
    assert_eq!(ids(&tv), ["other-3", "other-1"]);
}

#[test]
fn trending_decays() {
    let one_bucket =
        |half_life_ms| ContextConfig { hour_bucket_hours: 24, trending_half_life_ms: half_life_ms, ..immediate() };
    let mut events = watches("other-0", Device::Desktop, DAY0 + 9 * HOUR, 10);
    events.extend(watches("other-1", Device::Desktop, DAY0 + 14 * HOUR, 3));
    let at = DAY0 + 15 * HOUR;
    for (half_life, expected) in [(HOUR, ["other-1", "other-0"]), (100 * DAY, ["other-0", "other-1"])] {
        let g = ContextGenerator::with_catalog(one_bucket(half_life), &catalog()).unwrap();
        g.observe(&events);
        let out = g.generate(&query("tv-0", Device::Desktop, at, &[]), 2);
        // 10 watches five half-lives ago weigh 10/32 < 3; without decay 10 > 3.
        assert_eq!(ids(&out), expected, "half-life {half_life} ms");
    }
    // A click counts for half a watch by default.
    let g = ContextGenerator::with_catalog(one_bucket(DAY), &catalog()).unwrap();
    let mut events = watches("other-2", Device::Desktop, DAY0, 1);
    events.push(event("other-3", Device::Desktop, DAY0, EventKind::Click));
    events.push(event("other-3", Device::Desktop, DAY0, EventKind::Like));
    g.observe(&events);
    assert_eq!(ids(&g.generate(&query("tv-0", Device::Desktop, DAY0, &[]), 2)), ["other-2", "other-3"]);
    assert_eq!(g.status().events_ignored, 1);
}

#[test]
fn fresh_uploads_on_the_query_topics_appear() {
    let now = DAY0 + 10 * DAY + 13 * HOUR;
    let catalog = Arc::new(
        Catalog::new(vec![
            video("q", &["cats", "boats"], DAY0 - 400 * DAY),
            video("hit", &["news"], DAY0 - 400 * DAY),
            video("fresh-cats", &["cats"], now - DAY),
            video("fresh-cat-boats", &["cats", "boats"], now - 2 * DAY),
            video("old-cats", &["cats"], now - 30 * DAY),
            video("fresh-dogs", &["dogs"], now - HOUR),
            video("future-cats", &["cats"], now + HOUR),
        ])
        .unwrap(),
    );
    let g = ContextGenerator::with_catalog(immediate(), &catalog).unwrap();
    g.observe(&watches("hit", Device::Phone, now - HOUR, 5));
    let out = g.generate(&query("q", Device::Phone, now, &[]), 10);
    let got = ids(&out);
    assert!(got.contains(&"hit"));
    assert!(got.contains(&"fresh-cats") && got.contains(&"fresh-cat-boats"), "{got:?}");
    let pos = |id| got.iter().position(|g| *g == id);
    assert!(pos("fresh-cat-boats") < pos("fresh-cats"), "two shared topics before one: {got:?}");
    for absent in ["old-cats", "fresh-dogs", "future-cats", "q"] {
        assert!(!got.contains(&absent), "{absent} in {got:?}");
    }
    assert!(out.note.is_empty(), "{}", out.note);

    // A brand-new video with nothing trending yet still gets its topic's fresh uploads.
    let g = ContextGenerator::with_catalog(immediate(), &catalog).unwrap();
    let out = g.generate(&query("fresh-cats", Device::Phone, now, &[]), 10);
    assert_eq!(ids(&out), ["fresh-cat-boats"]);
    assert!(out.note.contains("no trending data yet"), "{}", out.note);
}

#[test]
fn the_query_and_history_videos_are_never_proposed() {
    let g = ContextGenerator::with_catalog(immediate(), &catalog()).unwrap();
    g.observe(&viewing());
    let at = DAY0 + 4 * DAY + 21 * HOUR;
    let out = g.generate(&query("tv-0", Device::Tv, at, &["tv-1", "phone-0"]), 20);
    let got = ids(&out);
    assert_eq!(&got[..3], ["tv-2", "tv-3", "tv-4"]);
    for absent in ["tv-0", "tv-1", "phone-0"] {
        assert!(!got.contains(&absent));
    }
    assert!(g.generate(&query("tv-0", Device::Tv, at, &[]), 0).candidates.is_empty());
}

#[test]
fn without_a_catalogue_it_is_not_ready_but_still_serves_trending() {
    let g = ContextGenerator::new(immediate()).unwrap();
    assert_eq!(g.ready().unwrap_err(), "no catalogue loaded yet");
    let out = g.generate(&query("tv-0", Device::Tv, DAY0, &[]), 5);
    assert!(out.candidates.is_empty());
    assert!(out.note.contains("no catalogue loaded yet") && out.note.contains("no trending data yet"), "{}", out.note);

    g.observe(&viewing());
    let out = g.generate(&query("tv-0", Device::Tv, DAY0 + 21 * HOUR, &[]), 2);
    assert_eq!(ids(&out), ["tv-1", "tv-2"]);
    assert!(out.note.contains("trending only"));

    g.update_catalog(&catalog());
    assert!(g.ready().is_ok());
    g.update_catalog(&Arc::new(Catalog::default()));
    assert_eq!(g.ready().unwrap_err(), "the catalogue is empty");
    assert!(ContextGenerator::new(ContextConfig { hour_bucket_hours: 7, ..ContextConfig::default() }).is_err());
}

#[test]
fn trending_becomes_visible_when_published_and_follows_the_catalogue() {
    let config = ContextConfig { publish_interval_ms: 3_600_000, ..ContextConfig::default() };
    let g = ContextGenerator::with_catalog(config, &catalog()).unwrap();
    g.observe(&watches("tv-3", Device::Tv, DAY0 + 21 * HOUR, 3));
    let q = query("x", Device::Tv, DAY0 + 21 * HOUR, &[]);
    assert_eq!(ids(&g.generate(&q, 3)), ["tv-3"], "the first batch is published at once");
    g.observe(&watches("tv-4", Device::Tv, DAY0 + 21 * HOUR, 5));
    assert_eq!(ids(&g.generate(&q, 3)), ["tv-3"], "later batches wait for the interval");
    assert_eq!(g.status().events_unpublished, 5);
    g.publish();
    assert_eq!(ids(&g.generate(&q, 3)), ["tv-4", "tv-3"]);

    // A video removed from the catalogue leaves the lists at the swap.
    let fewer =
        Arc::new(Catalog::new(catalog().videos().iter().filter(|v| v.id != "tv-4").cloned().collect()).unwrap());
    g.update_catalog(&fewer);
    let out = g.generate(&q, 3);
    assert_eq!(ids(&out), ["tv-3"]);
    assert!(out.version.starts_with("context/c2/"), "{}", out.version);
}

#[test]
fn requests_keep_being_answered_while_events_and_catalogues_arrive() {
    let g = Arc::new(ContextGenerator::with_catalog(immediate(), &catalog()).unwrap());
    g.observe(&viewing());
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (g, stop, answered, failures) = (g.clone(), stop.clone(), answered.clone(), failures.clone());
        threads.push(thread::spawn(move || {
            let q = query("never-seen", Device::Tv, DAY0 + 5 * DAY + 21 * HOUR, &[]);
            while !stop.load(Ordering::Relaxed) {
                let out = g.generate(&q, 5);
                if out.candidates.len() != 5 || out.candidates[0].video.as_str() != "tv-0" {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (g, stop) = (g.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                g.observe(&watches(&format!("other-{}", i % 5), Device::Phone, DAY0 + 4 * DAY + i, 1));
                i += 1;
            }
        }));
    }
    let mut videos = catalog().videos().to_vec();
    for k in 0..20 {
        videos.extend((0..2_000).map(|i| video(&format!("bulk-{k}-{i}"), &["misc"], DAY0 - 500 * DAY)));
        g.update_catalog(&Arc::new(Catalog::new(videos.clone()).unwrap()));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 100);
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(g.status().videos, 15 + 40_000);
}
