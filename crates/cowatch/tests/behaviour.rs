//! What the generator answers: co-watched pairs, popularity normalisation,
//! online updates, time decay, exclusions, blending, top-K and the memory
//! budget.

mod common;

use common::*;
use watchnext_core::{event::Source, generator::Generator};
use watchnext_cowatch::CowatchConfig;

#[test]
fn co_watched_pairs_become_each_others_candidates() {
    let g = generator(CowatchConfig::default());
    let mut events = Vec::new();
    for u in 0..5 {
        events.extend(session(&format!("u{u}"), &["a", "b"], T0 + u * 3 * MINUTE));
    }
    events.extend(session("x", &["c", "d"], T0));
    g.observe(&events);

    assert_eq!(g.source(), Source::Cowatch);
    assert!(g.ready().is_ok());
    assert_eq!(ids(&g, "a", 10), ["b"]);
    assert_eq!(ids(&g, "b", 10), ["a"]);
    assert_eq!(ids(&g, "c", 10), ["d"]);
    let out = g.generate(&query("a"), 10);
    assert!(out.note.is_empty(), "{}", out.note);
    assert!(out.candidates[0].score > 0.0 && out.candidates[0].score <= 1.0);
    // Five pairs, decayed by at most 14 minutes of a week's half-life.
    assert!((g.cowatch_count("a", "b").unwrap() - 5.0).abs() < 5e-3);
    assert!((g.watch_total("a").unwrap() - 5.0).abs() < 5e-3);
    assert_eq!(g.stats().pair_updates, 6);
}

#[test]
fn a_blockbuster_does_not_top_the_list_of_a_niche_video() {
    // No decay to speak of: this is about normalisation alone.
    let g = generator(CowatchConfig { half_life_hours: 1e5, ..CowatchConfig::default() });
    let mut events = Vec::new();
    let mut t = T0;
    let mut next = |step: i64| {
        t += step;
        t
    };
    // 20 viewers of the niche video `a`: every one also watched the
    // blockbuster B right before it; 15 of them watched `p`, a's true
    // partner, before that.
    for u in 0..20 {
        let user = format!("niche{u}");
        let videos: &[&str] = if u < 15 { &["p", "B", "a"] } else { &["B", "a"] };
        events.extend(session(&user, videos, next(10 * MINUTE)));
    }
    // p has 25 more viewers; B is watched by 2,000 people with other videos.
    for u in 0..25 {
        events.extend(session(&format!("p{u}"), &["p", &format!("other{u}")], next(10 * MINUTE)));
    }
    for u in 0..1_980 {
        events.extend(session(&format!("b{u}"), &["B", &format!("filler{}", u % 300)], next(10 * MINUTE)));
    }
    g.observe(&events);

    // Raw counts favour the blockbuster...
    let raw_b = g.cowatch_count("a", "B").unwrap();
    let raw_p = g.cowatch_count("a", "p").unwrap();
    assert!(raw_b > raw_p, "the test needs raw counts favouring B: {raw_b} vs {raw_p}");
    assert!(g.watch_total("B").unwrap() > 1_900.0);
    // ...the normalised score does not.
    let list = ids(&g, "a", 10);
    assert_eq!(list[0], "p", "{list:?}");
    assert!(g.score("a", "p").unwrap() > 3.0 * g.score("a", "B").unwrap());
}

#[test]
fn new_events_change_the_answer_immediately() {
    let g = generator(CowatchConfig::default());
    assert!(g.ready().is_err());
    let out = g.generate(&query("a"), 10);
    assert!(out.candidates.is_empty() && out.note.contains("no co-watch data"), "{}", out.note);

    g.observe(&session("u1", &["a", "b"], T0));
    assert_eq!(ids(&g, "a", 10), ["b"]);
    for u in 0..4 {
        g.observe(&session(&format!("w{u}"), &["a", "c"], T0 + HOUR * (u + 1) * 3));
    }
    assert_eq!(ids(&g, "a", 10), ["c", "b"], "no rebuild step between observe and generate");
    let before = g.generate(&query("a"), 10).version;
    g.observe(&session("u9", &["a", "d"], T0 + HOUR * 20));
    assert_ne!(g.generate(&query("a"), 10).version, before);
}

#[test]
fn old_pairs_fade_relative_to_new_ones() {
    // Event time alone drives the decay here (no minimum of watches per half-life).
    let run = |half_life_hours: f64| {
        let g = generator(CowatchConfig { half_life_hours, half_life_min_watches: 0, ..CowatchConfig::default() });
        for u in 0..10 {
            g.observe(&session(&format!("old{u}"), &["a", "b"], T0 + u * 3 * MINUTE));
        }
        // Ten half-lives (of 24 h) later, two users pair `a` with `c`.
        let later = T0 + 240 * HOUR;
        for u in 0..2 {
            g.observe(&session(&format!("new{u}"), &["a", "c"], later + u * 3 * MINUTE));
        }
        g
    };
    let decaying = run(24.0);
    assert_eq!(ids(&decaying, "a", 10), ["c", "b"]);
    let faded = decaying.cowatch_count("a", "b").unwrap();
    let expected = 10.0 * (-10.0f32).exp2();
    assert!((faded / expected - 1.0).abs() < 0.1, "{faded} vs {expected}");
    // Without (noticeable) decay the old, stronger pair wins.
    let lasting = run(1e5);
    assert_eq!(ids(&lasting, "a", 10), ["b", "c"]);
}

#[test]
fn a_sparse_log_fades_only_as_newer_watches_arrive() {
    // A half-life needs 100 watches: the same ten half-lives of event time
    // with only four watches in between fade nothing...
    let config = CowatchConfig { half_life_hours: 24.0, half_life_min_watches: 100, ..CowatchConfig::default() };
    let g = generator(config.clone());
    for u in 0..10 {
        g.observe(&session(&format!("old{u}"), &["a", "b"], T0 + u * 3 * MINUTE));
    }
    let later = T0 + 240 * HOUR;
    for u in 0..2 {
        g.observe(&session(&format!("new{u}"), &["a", "c"], later + u * 3 * MINUTE));
    }
    assert_eq!(ids(&g, "a", 10), ["b", "c"], "four watches are not ten half-lives of evidence");
    let stats = g.stats();
    assert!(stats.clock_ms - stats.decay_clock_ms > 239 * HOUR, "{stats:?}");
    // ...while 1,000 watches of other videos over the next ten days (ten
    // half-lives by both measures) do.
    for i in 0..500 {
        g.observe(&session(&format!("busy{i}"), &["x", "y"], later + HOUR + i * 29 * MINUTE));
    }
    for u in 0..2 {
        g.observe(&session(&format!("newer{u}"), &["a", "c"], later + 250 * HOUR + u * 3 * MINUTE));
    }
    assert_eq!(ids(&g, "a", 10), ["c", "b"]);
    // With event time alone, the first four watches already faded b.
    let timed = generator(CowatchConfig { half_life_min_watches: 0, ..config });
    for u in 0..10 {
        timed.observe(&session(&format!("old{u}"), &["a", "b"], T0 + u * 3 * MINUTE));
    }
    for u in 0..2 {
        timed.observe(&session(&format!("new{u}"), &["a", "c"], later + u * 3 * MINUTE));
    }
    assert_eq!(ids(&timed, "a", 10), ["c", "b"]);
}

#[test]
fn old_but_only_evidence_is_never_wiped() {
    // A one-hour half-life and 2,000 hours of other activity afterwards:
    // 2^-2000 underflows even a double, but a row is read at its own last
    // update, so `a` still answers with what it has.
    let g = generator(CowatchConfig { half_life_hours: 1.0, half_life_min_watches: 0, ..CowatchConfig::default() });
    for u in 0..3 {
        g.observe(&session(&format!("old{u}"), &["a", "b", "c"], T0 + u * 3 * MINUTE));
    }
    g.observe(&session("old3", &["a", "b"], T0 + 10 * MINUTE));
    g.observe(&session("today", &["x", "y"], T0 + 2_000 * HOUR));
    assert_eq!(ids(&g, "a", 10), ["b", "c"]);
    assert!(g.score("a", "b").unwrap() > 0.1, "{:?}", g.score("a", "b"));
    // Asked with old and new history alike, both rows contribute.
    let out = g.generate(&query_with_history("a", &["x"]), 10);
    let got: Vec<_> = out.candidates.iter().map(|c| c.video.as_str()).collect();
    assert_eq!(got, ["b", "c", "y"]);
}

#[test]
fn the_window_bounds_pairs_by_count_time_and_distance() {
    let g = generator(CowatchConfig {
        window_size: 2,
        window_minutes: 30,
        distance_decay: 0.8,
        ..CowatchConfig::default()
    });
    g.observe(&session("u", &["a", "b", "c", "d"], T0));
    assert_eq!(ids(&g, "a", 10), ["b", "c"], "d is beyond the last 2");
    g.observe(&[watch("u", "e", T0 + 4 * MINUTE + 31 * MINUTE)]);
    assert!(g.cowatch_count("d", "e").is_none(), "older than 30 min");
    // Distance weight: a pair two steps apart counts γ = 0.8 (decayed by
    // half an hour of a week's half-life: < 0.3%).
    let close = |x: f32, y: f32| (x / y - 1.0).abs() < 3e-3;
    assert!(close(g.cowatch_count("b", "d").unwrap(), 0.8));
    // Watch-fraction weight: √(1·0.25) for a quarter watch.
    g.observe(&[watch("v", "x", T0), watch_fraction("v", "y", T0 + MINUTE, 0.25)]);
    assert!(close(g.cowatch_count("x", "y").unwrap(), 0.5));
    assert!(close(g.watch_total("y").unwrap(), 0.25));
}

#[test]
fn clicks_count_only_when_configured() {
    let click = |user: &str, video: &str, t| {
        let mut e = watch(user, video, t);
        e.kind = watchnext_core::event::EventKind::Click;
        e
    };
    let events = [click("u", "a", T0), click("u", "b", T0 + MINUTE)];
    let ignoring = generator(CowatchConfig::default());
    ignoring.observe(&events);
    assert!(ignoring.ready().is_err());
    let counting = generator(CowatchConfig { click_weight: 0.5, ..CowatchConfig::default() });
    counting.observe(&events);
    assert!((counting.cowatch_count("a", "b").unwrap() - 0.5).abs() < 1e-5);
}

#[test]
fn the_query_and_watched_videos_are_excluded_and_unknown_queries_say_why() {
    let g = generator(CowatchConfig { blend_history: 0, ..CowatchConfig::default() });
    for u in 0..3 {
        g.observe(&session(&format!("u{u}"), &["a", "b", "c", "d"], T0 + u * 3 * HOUR));
    }
    assert_eq!(ids(&g, "a", 10).len(), 3);
    let out = g.generate(&query_with_history("a", &["c", "zzz"]), 10);
    let got: Vec<_> = out.candidates.iter().map(|c| c.video.as_str()).collect();
    assert!(!got.contains(&"c") && !got.contains(&"a") && got.len() == 2, "{got:?}");
    // A long history goes through the hash-set path.
    let long: Vec<String> = (0..40).map(|i| format!("h{i}")).chain(["b".to_owned()]).collect();
    let long: Vec<&str> = long.iter().map(String::as_str).collect();
    let got: Vec<_> =
        g.generate(&query_with_history("a", &long), 10).candidates.into_iter().map(|c| c.video.to_string()).collect();
    assert_eq!(got.len(), 2);
    assert!(!got.contains(&"b".to_owned()));
    assert_eq!(ids(&g, "a", 1).len(), 1, "max is respected");

    let out = g.generate(&query("unknown"), 10);
    assert!(out.candidates.is_empty());
    assert!(out.note.contains("unknown") && out.note.contains("`unknown`"), "{}", out.note);
    let scores: Vec<f32> = g.generate(&query("a"), 10).candidates.iter().map(|c| c.score).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
}

#[test]
fn the_recent_history_is_always_asked_too_and_scores_add_up() {
    // Each pair is watched by 3 users: q and h1 share `both`; h1 and h2
    // are alike (two partners each), so only the query weights tell n1
    // from n2.
    let g = generator(CowatchConfig { half_life_hours: 1e5, ..CowatchConfig::default() });
    let mut t = T0;
    let pairs = [("q", "own"), ("q", "both"), ("h1", "both"), ("h1", "n1"), ("h2", "n2"), ("h2", "m2"), ("h5", "n5")];
    for (a, b) in pairs {
        for u in 0..3 {
            t += HOUR;
            g.observe(&session(&format!("{a}-{b}-{u}"), &[a, b], t));
        }
    }
    let s = |a: &str, b: &str| g.score(a, b).unwrap();
    assert!((s("h1", "n1") - s("h2", "n2")).abs() < 1e-6);
    // History oldest first: h5 … h2, h1; `blend_history` = 4 asks h1
    // (weight 0.5), h2 (0.4), h3 and h4 (unknown), not h5.
    let out = g.generate(&query_with_history("q", &["h5", "h4", "h3", "h2", "h1"]), 10);
    let got: Vec<(&str, f32)> = out.candidates.iter().map(|c| (c.video.as_str(), c.score)).collect();
    let names: Vec<&str> = got.iter().map(|(v, _)| *v).collect();
    assert_eq!(names[..3], ["both", "own", "n1"], "{got:?}");
    assert!(names[3..] == ["n2", "m2"] || names[3..] == ["m2", "n2"], "{got:?}");
    let expect = [
        s("q", "both") + 0.5 * s("h1", "both"),
        s("q", "own"),
        0.5 * s("h1", "n1"),
        0.4 * s("h2", names[3]),
        0.4 * s("h2", names[4]),
    ];
    for ((_, score), want) in got.iter().zip(expect) {
        assert!((score - want).abs() < 1e-5, "{got:?} vs {expect:?}");
    }
    assert!(s("q", "both") < s("q", "own"), "`both` tops the list only through the sum");
    assert!(out.note.is_empty(), "{}", out.note);
    // The old rule is still available: ask the history only for a query
    // video with fewer than `blend_below` neighbours.
    let config = CowatchConfig { half_life_hours: 1e5, blend_below: 2, ..CowatchConfig::default() };
    let strict = generator(config);
    let mut t = T0;
    for (a, b) in [("q", "own"), ("q", "both"), ("h1", "n1")] {
        t += HOUR;
        strict.observe(&session(&format!("{a}-{b}"), &[a, b], t));
    }
    let got: Vec<_> = strict
        .generate(&query_with_history("q", &["h1"]), 10)
        .candidates
        .into_iter()
        .map(|c| c.video.to_string())
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(!got.contains(&"n1".to_owned()), "{got:?}");
}

#[test]
fn a_cold_query_borrows_the_neighbours_of_recent_history() {
    let g = generator(CowatchConfig::default());
    for u in 0..3 {
        g.observe(&session(&format!("u{u}"), &["h1", "n1"], T0 + u * 3 * HOUR));
        g.observe(&session(&format!("v{u}"), &["h2", "n2"], T0 + u * 3 * HOUR + HOUR));
        g.observe(&session(&format!("w{u}"), &["q", "own"], T0 + u * 3 * HOUR + 2 * HOUR));
    }
    // Unknown query video, history h2 (older) then h1 (most recent).
    let out = g.generate(&query_with_history("cold", &["h2", "h1"]), 10);
    let got: Vec<_> = out.candidates.iter().map(|c| c.video.as_str()).collect();
    assert_eq!(got, ["n1", "n2"], "the most recent history video's neighbours first");
    assert!(out.note.contains("blended"), "{}", out.note);
    // A known query with few neighbours keeps its own first.
    let out = g.generate(&query_with_history("q", &["h1"]), 10);
    let got: Vec<_> = out.candidates.iter().map(|c| c.video.as_str()).collect();
    assert_eq!(got, ["own", "n1"]);
    // Blending off: the unknown query gets nothing.
    let strict = generator(CowatchConfig { blend_history: 0, ..CowatchConfig::default() });
    strict.observe(&session("u", &["h1", "n1"], T0));
    assert!(strict.generate(&query_with_history("cold", &["h1"]), 10).candidates.is_empty());
}

#[test]
fn top_k_and_the_memory_budget_hold_under_a_stream_far_larger_than_the_budget() {
    let k = 8;
    let budget = 96 * 1024;
    let config = CowatchConfig {
        max_neighbours: k,
        memory_budget_bytes: budget,
        max_users: 500,
        window_size: 5,
        ..CowatchConfig::default()
    };
    let g = generator(config);
    // 400k watches of 100k distinct videos by 2,000 users; every 10th event
    // a hot pair (hot-a, hot-b) is watched by someone.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut t = T0;
    for batch in 0..400 {
        let mut events = Vec::with_capacity(1_000);
        for i in 0..1_000 {
            t += 1_000;
            let user = format!("u{}", rand() % 2_000);
            if i % 10 == 0 {
                events.push(watch(&user, "hot-a", t));
                events.push(watch(&user, "hot-b", t + 1));
            } else {
                events.push(watch(&user, &format!("v{}", rand() % 100_000), t));
            }
        }
        g.observe(&events);
        let memory = g.memory();
        assert!(memory.table_bytes <= budget, "batch {batch}: {memory:?}");
        assert!(memory.users <= 500, "batch {batch}: {memory:?}");
    }
    let (longest, _) = g.neighbour_lists();
    assert!(longest <= k, "{longest}");
    let stats = g.stats();
    assert!(stats.evicted_videos > 50_000, "{stats:?}");
    assert!(stats.evicted_users > 0, "{stats:?}");
    assert!(stats.memory.videos > 100 && stats.memory.bytes_per_video > 0.0, "{stats:?}");
    assert_eq!(ids(&g, "hot-a", 1), ["hot-b"], "a frequent pair survives the churn");
}

#[test]
fn config_problems_name_the_field() {
    let err = watchnext_cowatch::CowatchGenerator::new(CowatchConfig { max_neighbours: 0, ..CowatchConfig::default() })
        .unwrap_err();
    assert!(err.to_string().contains("max_neighbours"), "{err}");
}

#[test]
fn a_watch_stamped_far_in_the_future_does_not_freeze_a_video() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let g = generator(CowatchConfig::default());
    // Year 2600: taken as (wall clock + 1 day), not as 2600, so the watches
    // of the last hours still count for `a`.
    g.observe(&[watch("x", "a", 20_000_000_000_000)]);
    assert!(g.stats().clock_ms <= now + 25 * HOUR);
    for u in 0..5 {
        g.observe(&session(&format!("u{u}"), &["a", "b"], now - 2 * HOUR + u * 3 * MINUTE));
    }
    g.observe(&session("v", &["a", "c"], now - HOUR));
    assert_eq!(ids(&g, "a", 10), ["b", "c"]);
}
