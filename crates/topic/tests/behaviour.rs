//! Behaviour of the topic generator on small hand-made catalogues: what it
//! proposes, how the online estimates order otherwise equal videos, the
//! fallbacks, and catalogue swaps under concurrent load.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
};

use watchnext_core::{
    Device, History, RequestContext, RequestId, UserId, VideoId,
    catalog::{Catalog, Video},
    event::{Event, EventKind},
    generator::Generator,
    request::{HistoryEntry, Query},
};
use watchnext_topic::{TopicConfig, TopicGenerator};

const DAY: i64 = 86_400_000;
/// The request time of every test: 2024-06-01.
const NOW: i64 = 1_717_200_000_000;

fn video(id: &str, topics: &[&str], upload_ms: i64) -> Video {
    Video {
        id: id.into(),
        title: String::new(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        duration_seconds: 100.0,
        upload_ms,
    }
}

fn query(video: &str, history: &[&str]) -> Query {
    Query {
        request_id: RequestId::parse("request_id", "r1").expect("valid test input"),
        user: UserId::parse("user_id", "u1").expect("valid test input"),
        query_video: VideoId::parse("query_video_id", video).expect("valid test input"),
        device: Device::Phone,
        history: History(
            history
                .iter()
                .map(|h| HistoryEntry {
                    video: VideoId::parse("video_id", h).expect("valid test input"),
                    watched_at_ms: NOW - 60_000,
                    seconds_watched: 60.0,
                })
                .collect(),
        ),
        context: RequestContext { time_ms: NOW, ..RequestContext::default() },
    }
}

fn event(video: &str, t: i64, kind: EventKind) -> Event {
    Event {
        timestamp_ms: t,
        request_id: String::new(),
        user: UserId::parse("user_id", "u9").expect("valid test input"),
        video: VideoId::parse("video_id", video).expect("valid test input"),
        device: Device::Phone,
        kind,
    }
}

fn watch(video: &str, t: i64, seconds: f32) -> Event {
    event(video, t, EventKind::Watch { seconds_watched: seconds, video_duration_seconds: 100.0 })
}

/// Videos `{topic}-{i}` for i in 0..n, each of the one topic, uploaded 100+ days ago.
fn topic_videos(topic: &str, n: usize) -> Vec<Video> {
    (0..n).map(|i| video(&format!("{topic}-{i}"), &[topic], NOW - (100 + i as i64) * DAY)).collect()
}

fn manual() -> TopicConfig {
    TopicConfig { prior_refresh_ms: 0, ..TopicConfig::default() }
}

fn generator(videos: Vec<Video>) -> TopicGenerator {
    TopicGenerator::with_catalog(manual(), &Arc::new(Catalog::new(videos).expect("valid test input")))
        .expect("valid test input")
}

fn ids(g: &watchnext_core::generator::Generated) -> Vec<&str> {
    g.candidates.iter().map(|c| c.video.as_str()).collect()
}

#[test]
fn candidates_share_the_query_topics_and_never_the_query_itself() {
    let mut videos = topic_videos("cats", 30);
    videos.extend(topic_videos("cars", 30));
    videos.extend(topic_videos("cooking", 30));
    videos.push(video("cat-cars", &["cats", "cars"], NOW - 200 * DAY));
    videos.push(video("cat-cars-2", &["cats", "cars"], NOW - 300 * DAY));
    let g = generator(videos);
    assert!(g.ready().is_ok());
    let out = g.generate(&query("cats-0", &[]), 50);
    assert_eq!(out.candidates.len(), 31, "every other cats video, and the two shared with cars");
    assert!(ids(&out).iter().all(|id| id.starts_with("cats-") || id.starts_with("cat-cars")), "{:?}", ids(&out));
    assert!(!ids(&out).contains(&"cats-0"));
    assert!(out.candidates.windows(2).all(|w| w[0].score >= w[1].score), "best first");
    assert!(out.note.contains("cold user"), "{}", out.note);
    assert!(out.version.starts_with("topic/c1/"), "{}", out.version);

    // A video sharing both query topics covers twice the profile.
    let out = g.generate(&query("cat-cars", &[]), 70);
    assert_eq!(out.candidates.len(), 61, "30 cats, 30 cars, cat-cars-2");
    assert_eq!(out.candidates[0].video.as_str(), "cat-cars-2");
    assert!(out.candidates[0].score > 1.9 * out.candidates[1].score);
    assert!(!ids(&out).iter().any(|id| id.starts_with("cooking-")));
}

#[test]
fn history_topics_pull_in_their_videos_and_history_is_excluded() {
    let mut videos = topic_videos("cats", 20);
    videos.extend(topic_videos("cooking", 20));
    videos.extend(topic_videos("chess", 20));
    let g = generator(videos);

    let cold = g.generate(&query("cats-0", &[]), 100);
    assert!(ids(&cold).iter().all(|id| id.starts_with("cats-")));

    let warm = g.generate(&query("cats-0", &["cooking-3", "cooking-4"]), 100);
    let cooking: Vec<_> = ids(&warm).into_iter().filter(|id| id.starts_with("cooking-")).collect();
    assert_eq!(cooking.len(), 18, "every cooking video but the two watched: {cooking:?}");
    assert!(!cooking.contains(&"cooking-3") && !cooking.contains(&"cooking-4"));
    assert!(!ids(&warm).iter().any(|id| id.starts_with("chess-")), "no topic of the query or history");
    assert!(warm.note.is_empty(), "{}", warm.note);
    // The query's topics weigh more than the history's.
    assert!(warm.candidates[0].video.as_str().starts_with("cats-"));
    let best_cooking = warm.candidates.iter().find(|c| c.video.as_str().starts_with("cooking-")).unwrap();
    assert!(best_cooking.score < warm.candidates[0].score);
}

#[test]
fn a_fresher_video_outranks_an_otherwise_equal_one() {
    let videos = vec![
        video("q", &["cats"], NOW - 300 * DAY),
        video("old", &["cats"], NOW - 60 * DAY),
        video("new", &["cats"], NOW - DAY),
        video("future", &["cats"], NOW + DAY),
    ];
    let g = generator(videos);
    let out = g.generate(&query("q", &[]), 10);
    assert_eq!(ids(&out), ["new", "old"], "the future upload is left out");
    assert!(out.candidates[0].score > out.candidates[1].score * 1.5);
}

#[test]
fn a_more_watched_video_outranks_an_otherwise_equal_one_and_quality_counts() {
    let videos = vec![
        video("q", &["cats"], NOW - 300 * DAY),
        video("quiet", &["cats"], NOW - 60 * DAY),
        video("watched", &["cats"], NOW - 60 * DAY),
        video("liked", &["cats"], NOW - 60 * DAY),
        video("dismissed", &["cats"], NOW - 60 * DAY),
    ];
    let g = generator(videos);
    // Ties are broken by catalogue order before any feedback.
    assert_eq!(ids(&g.generate(&query("q", &[]), 10)), ["quiet", "watched", "liked", "dismissed"]);

    // Half-watched: quality stays at the prior mean, popularity rises.
    let events: Vec<Event> = (0..10).map(|i| watch("watched", NOW - DAY + i, 50.0)).collect();
    g.observe(&events);
    g.observe(&[event("liked", NOW - DAY, EventKind::Like), event("dismissed", NOW - DAY, EventKind::Dismiss)]);
    let out = g.generate(&query("q", &[]), 10);
    assert_eq!(ids(&out), ["watched", "liked", "quiet", "dismissed"]);

    let watched = g.estimate("watched", NOW).unwrap();
    assert!((watched.popularity - 10.0 * 2f64.powf(-1.0 / 3.0)).abs() < 1e-6, "one day at a 3-day half-life");
    assert!((watched.quality - 0.5).abs() < 1e-6);
    let liked = g.estimate("liked", NOW).unwrap();
    assert!((liked.quality - 3.5 / 6.0).abs() < 1e-6, "(5·0.5 + 1)/(5 + 1)");
    let dismissed = g.estimate("dismissed", NOW).unwrap();
    assert!((dismissed.quality - 2.5 / 7.0).abs() < 1e-6, "(5·0.5 + 0)/(5 + 2)");
    assert_eq!(g.status().events_applied, 12);
    assert!(g.estimate("nope", NOW).is_none());

    // Popularity decays: three half-lives later it is an eighth.
    let later = g.estimate("watched", NOW + 9 * DAY).unwrap();
    assert!((later.popularity / watched.popularity - 0.125).abs() < 1e-9);
}

#[test]
fn refreshing_the_prior_lets_a_newly_popular_video_into_a_small_scan() {
    let mut videos = topic_videos("cats", 500);
    videos.push(video("q", &["cats"], NOW - 300 * DAY));
    let config = TopicConfig { scan_budget: 20, min_scan_per_topic: 20, fresh_scan_share: 0.0, ..manual() };
    let g = TopicGenerator::with_catalog(config, &Arc::new(Catalog::new(videos).unwrap())).unwrap();
    let events: Vec<Event> = (0..50).map(|i| watch("cats-400", NOW - DAY + i, 50.0)).collect();
    g.observe(&events);
    // The order was sorted before the watches: cats-400 is beyond the 20 read.
    assert!(!ids(&g.generate(&query("q", &[]), 10)).contains(&"cats-400"));
    let before = g.status().version;
    g.refresh_prior();
    assert_ne!(g.status().version, before);
    assert_eq!(ids(&g.generate(&query("q", &[]), 10))[0], "cats-400");
}

#[test]
fn a_background_refresh_follows_the_event_clock() {
    let mut videos = topic_videos("cats", 500);
    videos.push(video("q", &["cats"], NOW - 300 * DAY));
    let config = TopicConfig {
        scan_budget: 20,
        min_scan_per_topic: 20,
        fresh_scan_share: 0.0,
        prior_refresh_ms: 60_000,
        ..TopicConfig::default()
    };
    let g = TopicGenerator::with_catalog(config, &Arc::new(Catalog::new(videos).unwrap())).unwrap();
    let events: Vec<Event> = (0..50).map(|i| watch("cats-400", NOW - DAY + i * 10_000, 50.0)).collect();
    g.observe(&events);
    for _ in 0..500 {
        if ids(&g.generate(&query("q", &[]), 10)).first() == Some(&"cats-400") {
            return;
        }
        thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the prior was not refreshed in the background");
}

#[test]
fn unknown_query_videos_and_users_get_a_fallback_or_an_empty_list_with_a_note() {
    let mut videos = topic_videos("cats", 10);
    videos.extend(topic_videos("chess", 10));
    videos.push(video("untagged", &[], NOW - DAY));
    let g = generator(videos);

    let out = g.generate(&query("nope", &["chess-1"]), 10);
    assert_eq!(out.candidates.len(), 9);
    assert!(ids(&out).iter().all(|id| id.starts_with("chess-")));
    assert!(out.note.contains("`nope` is not in the catalogue: history topics only"), "{}", out.note);

    let out = g.generate(&query("nope", &["gone"]), 10);
    assert!(out.candidates.is_empty());
    assert!(out.note.contains("no topics to match"), "{}", out.note);

    let out = g.generate(&query("untagged", &[]), 10);
    assert!(out.candidates.is_empty());
    assert!(out.note.contains("neither the query video nor the history has topics"), "{}", out.note);

    let out = g.generate(&query("cats-0", &["gone"]), 10);
    assert_eq!(out.candidates.len(), 9);
    assert!(out.note.contains("no history video is in the catalogue"), "{}", out.note);

    assert!(g.generate(&query("cats-0", &[]), 0).candidates.is_empty());
}

#[test]
fn without_a_catalogue_it_is_not_ready_and_answers_empty() {
    let g = TopicGenerator::new(manual()).unwrap();
    assert_eq!(g.ready().unwrap_err(), "no catalogue loaded yet");
    g.observe(&[watch("cats-0", NOW, 10.0)]);
    let out = g.generate(&query("cats-0", &[]), 10);
    assert!(out.candidates.is_empty());
    assert_eq!(out.note, "no catalogue loaded yet");
    assert_eq!(g.status().events_dropped, 1);

    g.update_catalog(&Arc::new(Catalog::new(vec![video("x", &[], NOW)]).unwrap()));
    assert_eq!(g.ready().unwrap_err(), "no video of the catalogue has a topic");
    assert!(TopicGenerator::new(TopicConfig { max_topics: 0, ..TopicConfig::default() }).is_err());
}

#[test]
fn update_catalog_adds_new_videos_without_restart_while_requests_keep_being_answered() {
    let mut base = topic_videos("cats", 300);
    base.extend(topic_videos("chess", 300));
    // Bulk that makes each rebuild take a while, so that readers overlap it.
    base.extend(topic_videos("filler", 30_000));
    let g = Arc::new(generator(base.clone()));
    g.observe(&(0..20).map(|i| watch("cats-7", NOW - DAY + i, 50.0)).collect::<Vec<_>>());
    let before = g.estimate("cats-7", NOW).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (g, stop, answered, failures) = (g.clone(), stop.clone(), answered.clone(), failures.clone());
        threads.push(thread::spawn(move || {
            let q = query("cats-1", &["chess-2"]);
            while !stop.load(Ordering::Relaxed) {
                let out = g.generate(&q, 20);
                let ok = out.candidates.len() == 20 && out.note.is_empty() && !out.version.is_empty();
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        // Ingestion keeps running through the swaps.
        let (g, stop) = (g.clone(), stop.clone());
        threads.push(thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                g.observe(&[watch(&format!("chess-{}", 100 + i % 100), NOW - DAY + i, 50.0)]);
                i += 1;
            }
        }));
    }

    let mut videos = base;
    for k in 0..8 {
        videos.push(video(&format!("new-{k}"), &["cats"], NOW - 60_000));
        g.update_catalog(&Arc::new(Catalog::new(videos.clone()).unwrap()));
        let out = g.generate(&query("cats-1", &[]), 20);
        assert_eq!(out.version, format!("topic/c{}/p{}", k + 2, k + 2));
        let top: Vec<_> = ids(&out);
        for j in 0..=k {
            assert!(top.contains(&format!("new-{j}").as_str()), "new-{j} missing after swap {k}: {top:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(answered.load(Ordering::Relaxed) > 100, "readers kept answering during the swaps");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "a reader got a short, noted or unversioned answer");
    let after = g.estimate("cats-7", NOW).unwrap();
    assert_eq!(after.popularity, before.popularity, "statistics survive a catalogue swap");
    assert!(g.status().events_applied > 20);
}
