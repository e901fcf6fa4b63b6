//! Behaviour of the synthetic world through its public API: determinism,
//! agreement of the logs with the ground truth, and the live population.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hasher},
    sync::Arc,
};

use prost::Message;
use watchnext_core::{
    Device,
    event::{Event, EventKind, EventSink, Source},
};
use watchnext_world::{
    LogSummary, LoggingPolicy, NextAction, Population, ShownVideo, World, WorldConfig, WorldError, generate_logs,
};

const POPULARITY: LoggingPolicy = LoggingPolicy::PopularityNoise { noise: 1.0 };

fn toy() -> World {
    World::build(&WorldConfig::toy()).expect("toy world")
}

fn log(world: &World, policy: LoggingPolicy, target: u64) -> (Vec<Event>, LogSummary) {
    let mut events = Vec::new();
    let summary = generate_logs(world, policy, target, &mut events, false).expect("log");
    (events, summary)
}

/// A hash of the wire encoding of every event.
fn hash_events(events: &[Event]) -> u64 {
    let mut h = DefaultHasher::new();
    for e in events {
        h.write(&e.to_proto().encode_length_delimited_to_vec());
    }
    h.finish()
}

fn hash_catalog(world: &World) -> u64 {
    let mut h = DefaultHasher::new();
    for v in world.catalog().videos() {
        h.write(serde_json::to_string(v).expect("json").as_bytes());
    }
    for v in world.videos() {
        h.write(format!("{v:?}").as_bytes());
    }
    for u in world.users() {
        h.write(format!("{u:?}").as_bytes());
    }
    h.finish()
}

fn index(world: &World, e: &Event) -> (u32, u32) {
    (world.user_index(e.user.as_str()).expect("user"), world.video_index(e.video.as_str()).expect("video"))
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let a = toy();
    let b = toy();
    assert_eq!(hash_catalog(&a), hash_catalog(&b));
    let (ea, _) = log(&a, POPULARITY, 20_000);
    let (eb, _) = log(&b, POPULARITY, 20_000);
    assert_eq!(ea.len(), 20_000);
    assert_eq!(hash_events(&ea), hash_events(&eb));

    let c = World::build(&WorldConfig::toy().with_seed(8)).unwrap();
    assert_ne!(hash_catalog(&a), hash_catalog(&c));
    let (ec, _) = log(&c, POPULARITY, 20_000);
    assert_ne!(hash_events(&ea), hash_events(&ec));
    // Another policy, another stream.
    let (er, _) = log(&a, LoggingPolicy::RandomOrder, 20_000);
    assert_ne!(hash_events(&ea), hash_events(&er));
}

#[test]
fn the_thread_count_does_not_change_anything() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            // Several chunks per day (a high target per day) and many user blocks.
            let mut config = WorldConfig::toy();
            config.users = 1_500;
            config.days = 3;
            let world = World::build(&config).unwrap();
            let (events, summary) = log(&world, LoggingPolicy::RandomOrder, 60_000);
            (hash_catalog(&world), hash_events(&events), summary)
        })
    };
    let one = run(1);
    let two = run(2);
    let three = run(3);
    assert_eq!(one, two);
    assert_eq!(one, three);
}

#[test]
fn config_alone_recovers_the_world() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(watchnext_world::WORLD_CONFIG_FILE);
    let mut config = WorldConfig::toy().with_seed(123);
    config.response.conflict = 0.8;
    config.write(&path).unwrap();
    let back = World::build(&WorldConfig::read(&path).unwrap()).unwrap();
    let world = World::build(&config).unwrap();
    assert_eq!(hash_catalog(&back), hash_catalog(&world));
    assert_eq!(back.click_prob(3, 4), world.click_prob(3, 4));
}

#[test]
fn events_are_time_ordered_and_well_formed() {
    let world = toy();
    let k = world.config().list_size;
    for policy in [POPULARITY, LoggingPolicy::RandomOrder] {
        let (events, summary) = log(&world, policy, 50_000);
        assert_eq!(events.len(), 50_000);
        assert_eq!(summary.events, 50_000);
        assert!(events.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "time order");
        assert!(events[0].timestamp_ms >= world.config().epoch_ms);

        let mut lists: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut shown: HashSet<(&str, &str)> = HashSet::new();
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for e in &events {
            *counts.entry(e.kind.name()).or_default() += 1;
            assert_ne!(e.device, Device::Unknown);
            let v = world.catalog().get(e.video.as_str()).unwrap();
            assert!(v.upload_ms <= e.timestamp_ms, "{} watched before upload", v.id);
            match &e.kind {
                EventKind::Impression(imp) => {
                    assert!((1..=k).contains(&imp.position));
                    assert_eq!(imp.model_version, policy.name());
                    assert_eq!(imp.experiment_arm, "");
                    assert!(imp.features.is_none());
                    assert_eq!(imp.sources.len(), 1);
                    assert_eq!(imp.sources[0].source, Source::Context);
                    assert_ne!(imp.query_video.as_ref(), Some(&e.video));
                    match policy {
                        LoggingPolicy::RandomOrder => {
                            assert!(imp.propensity > 0.0 && imp.propensity <= 1.0 / k as f32)
                        }
                        _ => assert_eq!(imp.propensity, 0.0),
                    }
                    lists.entry(&e.request_id).or_default().push(imp.position);
                    assert!(shown.insert((&e.request_id, e.video.as_str())), "a video twice in one list");
                }
                EventKind::Watch { seconds_watched, video_duration_seconds } => {
                    assert!(*seconds_watched >= 0.0 && seconds_watched <= video_duration_seconds);
                    assert_eq!(*video_duration_seconds, v.duration_seconds);
                    if !e.request_id.is_empty() {
                        assert!(shown.contains(&(e.request_id.as_str(), e.video.as_str())));
                    }
                }
                EventKind::Click | EventKind::Like => {
                    assert!(shown.contains(&(e.request_id.as_str(), e.video.as_str())), "outcome without impression");
                }
                EventKind::Dismiss => assert!(!e.request_id.is_empty()),
                EventKind::Rating { value } => assert!([1.0, 2.0, 3.0, 4.0, 5.0].contains(value)),
            }
        }
        // Every complete list shows positions 1..=K once each (the last lists may be cut off).
        let complete = lists.values().filter(|p| p.len() == k as usize).count();
        assert!(complete + 2 >= lists.len());
        for positions in lists.values().filter(|p| p.len() == k as usize) {
            assert!(positions.iter().copied().eq(1..=k));
        }
        assert_eq!(summary.impressions, counts["impression"]);
        assert_eq!(summary.clicks, counts["click"]);
        assert_eq!(summary.watches, counts["watch"]);
        assert_eq!(summary.likes, counts.get("like").copied().unwrap_or(0));
        assert_eq!(summary.requests, lists.len() as u64);
        let organic = events.iter().filter(|e| e.request_id.is_empty()).count() as u64;
        assert_eq!(summary.organic_watches, organic);
        assert!(organic > 0 && organic < summary.watches);
        let by_cell: u64 = summary.impressions_by_position.iter().flatten().sum();
        assert_eq!(by_cell, summary.impressions);
    }
}

/// Per (position, device): impressions, expected clicks Σπ, Σπ(1 − π), clicks.
type Cells = HashMap<(u32, Device), (u64, f64, f64, u64)>;

fn ctr_cells(world: &World, events: &[Event], exam_device: impl Fn(Device) -> Device) -> Cells {
    let mut cells = Cells::new();
    let mut at: HashMap<(&str, &str), (u32, Device)> = HashMap::new();
    for e in events {
        match &e.kind {
            EventKind::Impression(imp) => {
                let (u, v) = index(world, e);
                let pi = world.examination(imp.position, exam_device(e.device)) * world.click_prob(u, v);
                let cell = cells.entry((imp.position, e.device)).or_default();
                cell.0 += 1;
                cell.1 += pi;
                cell.2 += pi * (1.0 - pi);
                at.insert((&e.request_id, e.video.as_str()), (imp.position, e.device));
            }
            EventKind::Click => {
                let key = at[&(e.request_id.as_str(), e.video.as_str())];
                cells.get_mut(&key).expect("cell").3 += 1;
            }
            _ => {}
        }
    }
    cells
}

/// Cells whose click count is further than 4 binomial standard errors from
/// the ground-truth expectation.
fn outliers(cells: &Cells) -> Vec<String> {
    let mut bad = Vec::new();
    for (&(p, d), &(n, expected, variance, clicks)) in cells {
        if n < 300 {
            continue;
        }
        let z = (clicks as f64 - expected) / variance.sqrt();
        if z.abs() > 4.0 {
            bad.push(format!("position {p} {}: {clicks} clicks of {n}, expected {expected:.1} (z = {z:.1})", d.name()));
        }
    }
    bad
}

#[test]
fn random_order_ctr_matches_the_ground_truth_by_position_and_device() {
    let world = toy();
    let (events, summary) = log(&world, LoggingPolicy::RandomOrder, 300_000);
    let cells = ctr_cells(&world, &events, |d| d);
    let tested = cells.values().filter(|c| c.0 >= 300).count();
    assert!(tested >= 36, "only {tested} cells with enough impressions");
    let bad = outliers(&cells);
    assert!(bad.is_empty(), "{bad:#?}");
    let (expected, clicks): (f64, u64) = cells.values().fold((0.0, 0), |(e, c), x| (e + x.1, c + x.3));
    let sd: f64 = cells.values().map(|x| x.2).sum::<f64>().sqrt();
    assert!((clicks as f64 - expected).abs() < 4.0 * sd, "{clicks} clicks, expected {expected:.0} ± {sd:.0}");
    assert_eq!(clicks, summary.clicks);

    // The check has teeth: with the desktop curve for tv the counts disagree.
    let wrong = ctr_cells(&world, &events, |d| if d == Device::Tv { Device::Desktop } else { d });
    assert!(outliers(&wrong).len() >= 3, "a wrong examination model went unnoticed");

    // Position bias as measured: tv falls much faster than desktop.
    let ratio = |d: Device| summary.ctr(5, d).unwrap() / summary.ctr(1, d).unwrap();
    assert!(
        ratio(Device::Tv) < 0.5 * ratio(Device::Desktop),
        "tv {} desktop {}",
        ratio(Device::Tv),
        ratio(Device::Desktop)
    );
}

#[test]
fn clickbait_engages_but_disappoints() {
    let world = toy();
    let (events, _) = log(&world, POPULARITY, 300_000);
    // (impressions, clicks, likes, dismissals, seconds watched / duration)
    let mut groups = [(0u64, 0u64, 0u64, 0u64, 0.0f64); 2];
    let group = |v: u32| {
        let c = world.video(v).clickbait;
        if c >= 0.6 {
            Some(1)
        } else if c < 0.2 {
            Some(0)
        } else {
            None
        }
    };
    for e in &events {
        let (_, v) = index(&world, e);
        let Some(g) = group(v) else { continue };
        let cell = &mut groups[g];
        match &e.kind {
            EventKind::Impression(_) => cell.0 += 1,
            EventKind::Click => cell.1 += 1,
            EventKind::Like => cell.2 += 1,
            EventKind::Dismiss => cell.3 += 1,
            EventKind::Watch { seconds_watched, video_duration_seconds } if !e.request_id.is_empty() => {
                cell.4 += f64::from(*seconds_watched / *video_duration_seconds)
            }
            _ => {}
        }
    }
    let [honest, bait] = groups;
    let ctr = |g: (u64, u64, u64, u64, f64)| g.1 as f64 / g.0 as f64;
    let like_rate = |g: (u64, u64, u64, u64, f64)| g.2 as f64 / g.1 as f64;
    let dismiss_rate = |g: (u64, u64, u64, u64, f64)| g.3 as f64 / g.0 as f64;
    let watched = |g: (u64, u64, u64, u64, f64)| g.4 / g.1 as f64;
    assert!(bait.1 > 200, "{bait:?}");
    assert!(ctr(bait) > 1.3 * ctr(honest), "ctr {} vs {}", ctr(bait), ctr(honest));
    assert!(like_rate(bait) < 0.8 * like_rate(honest), "likes/click {} vs {}", like_rate(bait), like_rate(honest));
    assert!(dismiss_rate(bait) > dismiss_rate(honest), "dismiss {} vs {}", dismiss_rate(bait), dismiss_rate(honest));
    assert!(watched(bait) < watched(honest), "watched {} vs {}", watched(bait), watched(honest));
}

#[test]
fn a_sink_error_stops_generation() {
    #[derive(Debug)]
    struct Full(usize);
    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct DiskFull;
    impl EventSink for Full {
        type Error = DiskFull;
        fn push(&mut self, _: Event) -> Result<(), DiskFull> {
            if self.0 == 0 {
                return Err(DiskFull);
            }
            self.0 -= 1;
            Ok(())
        }
    }
    let world = toy();
    let err = generate_logs(&world, POPULARITY, 1_000, &mut Full(10), false).unwrap_err();
    assert!(matches!(err, WorldError::Sink(_)) && err.to_string().contains("disk full"), "{err}");
    let mut none = Vec::new();
    assert_eq!(generate_logs(&world, POPULARITY, 0, &mut none, false).unwrap().events, 0);
    let err = generate_logs(&world, LoggingPolicy::PopularityNoise { noise: f64::NAN }, 10, &mut none, false);
    assert!(matches!(err, Err(WorldError::Config { field, .. }) if field == "policy.noise"));
}

fn run_live(world: &Arc<World>, requests: usize) -> (Vec<Event>, Cells) {
    let mut users = Population::new(Arc::clone(world), world.config().epoch_ms);
    let mut events = Vec::new();
    let mut last = i64::MIN;
    for _ in 0..requests {
        let request = users.next_request().expect("request");
        assert!(request.time_ms >= last, "requests in time order");
        last = request.time_ms;
        assert!(request.history.0.iter().all(|h| h.watched_at_ms <= request.time_ms));
        let mut shown = users.policy_list(&request, LoggingPolicy::RandomOrder).expect("list");
        for s in &mut shown {
            s.impression.experiment_arm = "treatment".into();
        }
        let response = users.respond(&request, &shown).expect("response");
        assert!(response.events.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        for e in &response.events {
            assert!(e.timestamp_ms >= request.time_ms);
            assert_eq!(e.user, request.user);
            if let EventKind::Impression(imp) = &e.kind {
                assert_eq!(imp.query_video.as_ref(), Some(&request.query_video));
                assert_eq!(imp.experiment_arm, "treatment");
                assert_eq!(e.request_id, request.request_id.as_str());
                assert_eq!(e.video, shown[imp.position as usize - 1].video);
            }
        }
        match &response.next {
            NextAction::Continue { at_ms, .. } => assert!(*at_ms > request.time_ms),
            NextAction::EndSession { next_session_ms } => assert!(*next_session_ms > request.time_ms),
        }
        events.extend(response.events);
    }
    let cells = ctr_cells(world, &events, |d| d);
    (events, cells)
}

#[test]
fn live_users_answer_by_the_same_ground_truth() {
    let world = Arc::new(toy());
    let (events, cells) = run_live(&world, 15_000);
    let (expected, clicks): (f64, u64) = cells.values().fold((0.0, 0), |(e, c), x| (e + x.1, c + x.3));
    let sd: f64 = cells.values().map(|x| x.2).sum::<f64>().sqrt();
    assert!(clicks > 1_000);
    assert!((clicks as f64 - expected).abs() < 4.0 * sd, "{clicks} clicks, expected {expected:.0} ± {sd:.0}");
    assert!(outliers(&cells).is_empty(), "{:#?}", outliers(&cells));
    assert!(events.iter().any(|e| e.request_id.is_empty()), "organic watches");

    // Reproducible given the lists shown.
    let (again, _) = run_live(&world, 2_000);
    let (first, _) = run_live(&world, 2_000);
    assert_eq!(hash_events(&again), hash_events(&first));
}

#[test]
fn live_requests_are_answered_once_and_only_with_known_videos() {
    let world = Arc::new(toy());
    let mut users = Population::new(Arc::clone(&world), world.config().epoch_ms);
    let request = users.next_request().unwrap();
    let unknown = vec![ShownVideo::new(watchnext_core::VideoId::parse("v", "nope").unwrap(), "m")];
    match users.respond(&request, &unknown) {
        Err(WorldError::UnknownVideo { id, position }) => assert_eq!((id.as_str(), position), ("nope", 1)),
        other => panic!("{other:?}"),
    }
    // Still outstanding: an empty list is a valid answer (nothing to click).
    let response = users.respond(&request, &[]).unwrap();
    assert!(response.events.iter().all(|e| !matches!(e.kind, EventKind::Impression(_))));
    assert!(matches!(users.respond(&request, &[]), Err(WorldError::NotOutstanding { .. })));

    let second = users.next_request().unwrap();
    let next_session = users.abandon(&second).unwrap();
    assert!(next_session > second.time_ms);
    assert!(users.abandon(&second).is_err());
}
