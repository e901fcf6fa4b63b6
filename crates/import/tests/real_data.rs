//! The importers on the real data sets in `shared/data` (next to the
//! repository), when they are there; each test prints a note and passes
//! when they are not. Expected numbers are computed here from the raw files
//! with trivial parsers, independently of the importers.

mod common;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Instant,
};

use common::{assert_time_ordered, lists, positions};
use watchnext_core::event::Event;
use watchnext_import::{MovieLensOptions, ObdOptions, OnError, import_movielens, import_obd};

fn data_dir(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(name);
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("note: {} is absent; skipping this real-data test", dir.display());
        None
    }
}

/// Data rows of a header-led CSV file.
fn rows(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("a readable data file");
    text.lines().skip(1).filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

#[test]
fn ml_latest_small_round_trips_with_exact_counts() {
    let Some(dir) = data_dir("ml-latest-small") else { return };
    // Independent expectations from ratings.csv and movies.csv.
    let ratings = rows(&dir.join("ratings.csv"));
    let mut users = HashSet::new();
    let (mut likes, mut dismisses) = (0u64, 0u64);
    for line in &ratings {
        let f: Vec<&str> = line.split(',').collect();
        users.insert(f[0].to_owned());
        let r: f64 = f[2].parse().unwrap();
        likes += u64::from(r >= 4.0);
        dismisses += u64::from(r <= 2.0);
    }
    let n = ratings.len() as u64;
    let movies = rows(&dir.join("movies.csv")).len() as u64;
    assert_eq!((n, users.len(), movies), (100_836, 610, 9_742));

    let options = MovieLensOptions { seed: 42, ..MovieLensOptions::default() };
    let mut events: Vec<Event> = Vec::new();
    let start = Instant::now();
    let imported = import_movielens(&dir, &options, &mut events).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let r = &imported.report;
    println!("{r}");
    println!(
        "imported {} events in {seconds:.2} s: {:.0} events/s, {:.0} ratings/s",
        events.len(),
        events.len() as f64 / seconds,
        n as f64 / seconds
    );
    assert_eq!(r.skipped, 0, "{r}");
    assert_eq!(r.lines_read, n + movies);
    assert_eq!((r.users, r.videos), (610, 9_742));
    assert_eq!(imported.catalog.len(), 9_742);
    assert_eq!((r.events.ratings, r.events.clicks, r.events.watches), (n, n, n));
    assert_eq!(r.events.impressions, n * (u64::from(options.negatives) + 1));
    assert_eq!((r.events.likes, r.events.dismisses), (likes, dismisses));
    assert_eq!(r.events.total(), events.len() as u64);
    assert_time_ordered(&events);
    // Rated movies (9,724 per the dataset's README) are the only negatives.
    let rated: HashSet<&str> = events.iter().filter(|e| e.kind.name() == "rating").map(|e| e.video.as_str()).collect();
    assert_eq!(rated.len(), 9_724);
    let lists = lists(&events);
    assert_eq!(lists.len() as u64, n);
    for list in lists.values() {
        let mut pos: Vec<u32> = positions(list).iter().map(|(_, p)| *p).collect();
        pos.sort_unstable();
        assert_eq!(pos, [1, 2, 3, 4, 5]);
        assert!(positions(list).iter().all(|(v, _)| rated.contains(v.as_str())));
    }

    // Determinism on real data.
    let mut again: Vec<Event> = Vec::new();
    import_movielens(&dir, &options, &mut again).unwrap();
    assert!(events == again, "the same seed gave different events");
}

#[test]
fn open_bandit_sample_folders_have_the_documented_counts() {
    let Some(root) = data_dir("open-bandit-dataset-sample") else { return };
    // (policy, campaign, items, clicks per STATS.txt)
    for (policy, campaign, items, clicks) in [
        ("random", "all", 80, 38),
        ("random", "men", 34, 46),
        ("random", "women", 46, 46),
        ("bts", "all", 80, 42),
        ("bts", "men", 34, 69),
        ("bts", "women", 46, 46),
    ] {
        let dir = root.join(policy).join(campaign);
        let log = rows(&dir.join(format!("{campaign}.csv")));
        let counted: usize = log.iter().filter(|l| l.split(',').nth(4) == Some("1")).count();
        assert_eq!((log.len(), counted), (10_000, clicks), "{policy}/{campaign}");
        assert_eq!(rows(&dir.join("item_context.csv")).len(), items);

        let mut events: Vec<Event> = Vec::new();
        let imported = import_obd(&dir, &ObdOptions { on_error: OnError::Fail }, &mut events).unwrap();
        let r = &imported.report;
        println!("{r}");
        assert_eq!((r.events.impressions, r.events.clicks as usize, r.skipped), (10_000, clicks, 0), "{r}");
        assert_eq!(r.events.total(), 10_000 + clicks as u64);
        assert_eq!((imported.catalog.len(), r.videos), (items, items as u64));
        assert_eq!(r.lines_read, 10_000 + items as u64);
        assert_time_ordered(&events);
        let (first, last) = r.time_range_ms.unwrap();
        // 2019-11-24T00:00:00Z ..= 2019-12-01T00:00:00Z
        assert!(first >= 1_574_553_600_000 && last < 1_575_158_400_000, "{first} {last}");
        let requests: HashSet<&str> = events.iter().map(|e| e.request_id.as_str()).collect();
        assert_eq!(requests.len(), 10_000);
    }
}
