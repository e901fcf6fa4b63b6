//! MovieLens import on small hand-written folders of every layout.

mod common;

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use common::{assert_time_ordered, count, lists, outcomes, positions, write};
use watchnext_core::{
    Device,
    event::{Event, EventKind},
};
use watchnext_import::{ImportError, MovieLensLayout, MovieLensOptions, OnError, import_movielens};

fn import(dir: &Path, options: MovieLensOptions) -> (watchnext_import::Imported, Vec<Event>) {
    let mut events = Vec::new();
    let imported = import_movielens(dir, &options, &mut events).expect("a valid fixture");
    (imported, events)
}

fn skip() -> MovieLensOptions {
    MovieLensOptions { on_error: OnError::Skip, ..MovieLensOptions::default() }
}

const MOVIES_CSV: &str = "movieId,title,genres\n\
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n\
2,\"American President, The (1995)\",Comedy|Drama|Romance\n\
3,\"Cité des enfants perdus, La (1995)\",Adventure|Drama\n\
4,Babylon 5,(no genres listed)\n\
5,Heat (1965),Action|Crime\n\
6,\"Quote \"\"Test\"\" (2001)\",Drama\n";

/// Unsorted on purpose; movies 4 and 6 are never rated.
const RATINGS_CSV: &str = "userId,movieId,rating,timestamp\n\
2,1,5.0,300\n\
1,1,4.0,100\n\
1,2,2.0,200\n\
1,3,3.5,200\n\
2,5,0.5,50\n";

#[test]
fn csv_layout_maps_movies_and_ratings() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "movies.csv", MOVIES_CSV);
    write(dir.path(), "ratings.csv", RATINGS_CSV);
    assert_eq!(MovieLensLayout::detect(dir.path()).unwrap(), MovieLensLayout::Csv);
    let (imported, events) = import(dir.path(), MovieLensOptions::default());

    // Catalogue: every movie, quoting undone, no-genre → no topics, year → upload time.
    let c = &imported.catalog;
    assert_eq!(c.len(), 6);
    let president = c.get("2").unwrap();
    assert_eq!(president.title, "American President, The (1995)");
    assert_eq!(president.topics, ["Comedy", "Drama", "Romance"]);
    assert_eq!(president.upload_ms, 788_918_400_000); // 1995-01-01
    assert_eq!(president.duration_seconds, 0.0);
    assert_eq!(c.get("3").unwrap().title, "Cité des enfants perdus, La (1995)");
    assert_eq!(c.get("6").unwrap().title, "Quote \"Test\" (2001)");
    let babylon = c.get("4").unwrap();
    assert!(babylon.topics.is_empty());
    assert_eq!(babylon.upload_ms, 0);
    assert_eq!(c.get("5").unwrap().upload_ms, -157_766_400_000); // 1965-01-01

    // Counts. Rated pool = {1,2,3,5}: user 1 (rated 1,2,3) has one unrated
    // movie left, user 2 (rated 1,5) two, so lists are 2 or 3 long.
    let r = &imported.report;
    assert_eq!(r.lines_read, 6 + 5);
    assert_eq!((r.users, r.videos, r.skipped), (2, 6, 0));
    assert_eq!(r.events.ratings, 5);
    assert_eq!(r.events.clicks, 5);
    assert_eq!(r.events.watches, 5);
    assert_eq!(r.events.likes, 2);
    assert_eq!(r.events.dismisses, 2);
    assert_eq!(r.events.impressions, 3 + 2 + 2 + 2 + 3);
    assert_eq!(r.events.total() as usize, events.len());
    assert_eq!(r.time_range_ms, Some((50_000, 300_000)));
    assert_time_ordered(&events);

    // Lists in time order, ties by user then movie; labels; query videos.
    let order: Vec<&str> = {
        let mut seen = Vec::new();
        for e in &events {
            if seen.last() != Some(&e.request_id.as_str()) {
                seen.push(e.request_id.as_str());
            }
        }
        seen
    };
    assert_eq!(order, ["ml:2:5", "ml:1:1", "ml:1:2", "ml:1:3", "ml:2:1"]);
    let lists = lists(&events);
    let expect = [
        ("ml:2:5", 50_000, "2", "5", vec!["click", "watch", "rating", "dismiss"], None, 0.5),
        ("ml:1:1", 100_000, "1", "1", vec!["click", "watch", "rating", "like"], None, 4.0),
        ("ml:1:2", 200_000, "1", "2", vec!["click", "watch", "rating", "dismiss"], Some("1"), 2.0),
        ("ml:1:3", 200_000, "1", "3", vec!["click", "watch", "rating"], Some("2"), 3.5),
        ("ml:2:1", 300_000, "2", "1", vec!["click", "watch", "rating", "like"], Some("5"), 5.0),
    ];
    let rated: HashMap<&str, BTreeSet<&str>> =
        HashMap::from([("1", BTreeSet::from(["1", "2", "3"])), ("2", BTreeSet::from(["1", "5"]))]);
    for (rid, t, user, movie, kinds, query, value) in expect {
        let list = &lists[rid];
        assert!(list.iter().all(|e| e.timestamp_ms == t && e.user.as_str() == user && e.device == Device::Unknown));
        let got: Vec<_> = outcomes(list);
        assert_eq!(got, kinds.iter().map(|k| (movie.to_owned(), *k)).collect::<Vec<_>>(), "{rid}");
        let rating = list.iter().find_map(|e| match e.kind {
            EventKind::Rating { value } => Some(value),
            _ => None,
        });
        assert_eq!(rating, Some(value));
        assert!(list.iter().any(|e| matches!(e.kind, EventKind::Watch { seconds_watched, video_duration_seconds }
            if seconds_watched == 0.0 && video_duration_seconds == 0.0)));
        // Impressions: the rated movie plus every unrated movie of the pool
        // (fewer than 4 are left), positions a permutation of 1..=k.
        let imps = positions(list);
        let mut pos: Vec<u32> = imps.iter().map(|(_, p)| *p).collect();
        pos.sort_unstable();
        assert_eq!(pos, (1..=imps.len() as u32).collect::<Vec<_>>());
        let videos: BTreeSet<&str> = imps.iter().map(|(v, _)| v.as_str()).collect();
        let unrated: BTreeSet<&str> = ["1", "2", "3", "5"].into_iter().filter(|m| !rated[user].contains(m)).collect();
        let mut want = unrated.clone();
        want.insert(movie);
        assert_eq!(videos, want, "{rid}");
        for e in list.iter().filter(|e| matches!(e.kind, EventKind::Impression(_))) {
            let EventKind::Impression(imp) = &e.kind else { unreachable!() };
            assert_eq!(imp.query_video.as_ref().map(|v| v.as_str()), query, "{rid}");
            assert_eq!(imp.propensity, 0.0);
        }
    }
}

/// 40 users × 60 movies, about a third rated, from a fixed LCG.
fn synthetic(dir: &Path) -> usize {
    let mut movies = String::from("movieId,title,genres\n");
    for m in 1..=60 {
        movies.push_str(&format!("{m},Movie {m} ({}),Drama|Genre{}\n", 1950 + m, m % 5));
    }
    let mut ratings = String::from("userId,movieId,rating,timestamp\n");
    let mut x: u64 = 12345;
    let mut n = 0;
    for u in 1..=40 {
        for m in 1..=60 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            if (x >> 33).is_multiple_of(3) {
                let rating = ((x >> 40) % 10 + 1) as f32 / 2.0;
                ratings.push_str(&format!("{u},{m},{rating:.1},{}\n", 1_000_000 + (x >> 50) % 5000));
                n += 1;
            }
        }
    }
    write(dir, "movies.csv", movies);
    write(dir, "ratings.csv", ratings);
    n
}

#[test]
fn the_same_seed_gives_the_same_events_and_another_seed_others() {
    let dir = tempfile::tempdir().unwrap();
    let n = synthetic(dir.path());
    let seeded = |seed| import(dir.path(), MovieLensOptions { seed, ..MovieLensOptions::default() }).1;
    let a = seeded(7);
    assert_eq!(a.len(), seeded(7).len());
    assert!(a == seeded(7));
    let b = seeded(8);
    assert!(a != b);
    // Same ratings either way; only negatives and positions differ.
    assert_eq!(count(&a, "rating"), n);
    assert_eq!(count(&b, "rating"), n);
    assert_eq!(count(&a, "impression"), n * 5);
    assert_time_ordered(&a);
    // Every list: 5 impressions at positions 1..=5, 4 distinct negatives never
    // rated by the user.
    let mut rated: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for e in a.iter().filter(|e| e.kind.name() == "rating") {
        rated.entry(e.user.as_str()).or_default().insert(e.video.as_str());
    }
    let mut positive_at = [0usize; 6];
    for (rid, list) in lists(&a) {
        let movie = rid.rsplit(':').next().unwrap();
        let imps = positions(&list);
        assert_eq!(imps.len(), 5);
        let mut pos: Vec<u32> = imps.iter().map(|(_, p)| *p).collect();
        pos.sort_unstable();
        assert_eq!(pos, [1, 2, 3, 4, 5]);
        let distinct: BTreeSet<&str> = imps.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(distinct.len(), 5);
        for (v, p) in &imps {
            if v == movie {
                positive_at[*p as usize] += 1;
            } else {
                assert!(!rated[list[0].user.as_str()].contains(v.as_str()), "{rid}: {v} was rated");
            }
        }
    }
    // The rated movie lands on every position, roughly evenly (no position bias).
    for (p, &times) in positive_at.iter().enumerate().skip(1) {
        let share = times as f64 / n as f64;
        assert!((0.12..0.28).contains(&share), "position {p}: {share}");
    }
    // Negatives follow the option.
    let none = import(dir.path(), MovieLensOptions { negatives: 0, ..MovieLensOptions::default() }).1;
    assert_eq!(count(&none, "impression"), n);
}

#[test]
fn malformed_lines_are_skipped_and_counted_or_stop_the_import() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "movies.csv", format!("{MOVIES_CSV}x,Broken (1990),Drama\n7,\"Unclosed (1990),Drama\n"));
    write(
        dir.path(),
        "ratings.csv",
        format!("{RATINGS_CSV}1,99,4.0,10\nu,1,4.0,10\n1,5,7,10\n1,5\n1,5,4.0,-3\n\n1,1,3.0,400\n"),
    );
    let (imported, events) = import(dir.path(), skip());
    let r = &imported.report;
    // movies: line 8 bad id, line 9 unclosed quote swallows the rest (one record);
    // ratings: lines 7..=11 malformed, line 13 repeats (user 1, movie 1).
    assert_eq!(r.skipped, 2 + 5 + 1, "{r}");
    let m = dir.path().join("movies.csv").display().to_string();
    let rt = dir.path().join("ratings.csv").display().to_string();
    for (file, line, words) in [
        (&m, 8, "movie id `x`"),
        (&m, 9, "a quoted field is not closed"),
        (&rt, 7, "movie 99 is not in the movies file"),
        (&rt, 8, "user id `u`"),
        (&rt, 9, "rating `7`"),
        (&rt, 10, "has 2 fields"),
        (&rt, 11, "timestamp"),
        (&rt, 13, "user 1 rated movie 1 again"),
    ] {
        let prefix = format!("{file}:{line}: ");
        assert!(
            r.problems.iter().any(|p| p.starts_with(&prefix) && p.contains(words)),
            "no `{prefix}…{words}` in {:#?}",
            r.problems
        );
    }
    // The good lines all made it, the repeated rating did not replace the first.
    assert_eq!(r.events.ratings, 5);
    assert_eq!(imported.catalog.len(), 6);
    let first = events.iter().find(|e| e.request_id == "ml:1:1" && e.kind.name() == "rating").unwrap();
    assert_eq!(first.kind, EventKind::Rating { value: 4.0 });
    assert!(r.to_string().contains("8 lines skipped"), "{r}");

    // Fail: the first bad line, nothing pushed.
    let mut events = Vec::new();
    let err = import_movielens(dir.path(), &MovieLensOptions::default(), &mut events).unwrap_err();
    assert!(matches!(&err, ImportError::Malformed { line: 8, path, .. } if path == &m), "{err}");
    assert!(err.to_string().starts_with(&format!("{m}:8: ")), "{err}");
    assert!(events.is_empty());

    // Fixed movies: the ratings file's first bad line.
    write(dir.path(), "movies.csv", MOVIES_CSV);
    let err = import_movielens(dir.path(), &MovieLensOptions::default(), &mut events).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{rt}:7: movie 99")), "{err}");
    // Only the repeat left: reported on its own line.
    write(dir.path(), "ratings.csv", format!("{RATINGS_CSV}1,1,3.0,400\n"));
    let err = import_movielens(dir.path(), &MovieLensOptions::default(), &mut events).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{rt}:7: user 1 rated movie 1 again")), "{err}");
    assert!(events.is_empty());
}

#[test]
fn a_header_without_the_columns_is_fatal_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "movies.csv", MOVIES_CSV);
    write(dir.path(), "ratings.csv", "user,movie,rating,timestamp\n1,1,4.0,10\n");
    let err = import_movielens(dir.path(), &skip(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("ratings.csv:1: the header has no `userId` column"), "{err}");
}

#[test]
fn an_unknown_folder_names_the_layouts() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ratings.csv", RATINGS_CSV);
    let err = import_movielens(dir.path(), &skip(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, ImportError::Unusable { .. }));
    assert!(err.to_string().contains("u.data + u.item"), "{err}");
}

#[test]
fn ml_1m_dat_layout_reads_latin1_titles() {
    let dir = tempfile::tempdir().unwrap();
    let mut movies = Vec::new();
    movies.extend_from_slice(b"1::Toy Story (1995)::Animation|Children's|Comedy\r\n");
    movies.extend_from_slice(b"2::Cit\xe9 des enfants perdus, La (1995)::Adventure|Sci-Fi\r\n");
    movies.extend_from_slice(b"3::Odd::Title (1999)::Drama\r\n");
    movies.extend_from_slice(b"4::Broken\r\n");
    write(dir.path(), "movies.dat", movies);
    write(dir.path(), "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n2::3::1::978301968\n2::2::4\n");
    write(dir.path(), "users.dat", "1::F::1::10::48067\n");
    assert_eq!(MovieLensLayout::detect(dir.path()).unwrap(), MovieLensLayout::Dat);
    let (imported, events) = import(dir.path(), skip());
    let c = &imported.catalog;
    assert_eq!(c.get("2").unwrap().title, "Cité des enfants perdus, La (1995)");
    assert_eq!(c.get("1").unwrap().topics, ["Animation", "Children's", "Comedy"]);
    assert_eq!(c.get("3").unwrap().title, "Odd::Title (1999)");
    assert_eq!(c.len(), 3);
    let r = &imported.report;
    assert_eq!(r.skipped, 2, "{r}");
    assert!(r.problems[0].ends_with("movies.dat:4: has 2 `::`-separated fields; expected MovieID::Title::Genres"));
    assert!(r.problems[1].contains("ratings.dat:4: has 3 fields"), "{:?}", r.problems);
    assert_eq!((r.events.ratings, r.events.likes, r.events.dismisses, r.users), (3, 1, 1, 2));
    assert_eq!(events[0].timestamp_ms, 978_300_760_000);
    assert_time_ordered(&events);
}

#[test]
fn ml_10m_dat_layout_reads_utf8_and_half_stars() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "movies.dat", "1::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n");
    write(dir.path(), "ratings.dat", "1::1::4.5::838985046\n2::1::1.5::838983525\n");
    write(dir.path(), "tags.dat", "1::1::quirky::838985046\n");
    let (imported, events) = import(dir.path(), MovieLensOptions::default());
    assert_eq!(imported.catalog.get("1").unwrap().title, "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)");
    let values: Vec<f32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Rating { value } => Some(value),
            _ => None,
        })
        .collect();
    assert_eq!(values, [1.5, 4.5]);
    // One movie: no unrated movie to show next to it.
    assert_eq!(imported.report.events.impressions, 2);
}

fn flags(set: &[usize], n: usize) -> String {
    (0..n).map(|i| if set.contains(&i) { "|1" } else { "|0" }).collect()
}

#[test]
fn ml_100k_layout_reads_flags_latin1_and_genre_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut item = Vec::new();
    item.extend_from_slice(
        format!(
            "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995){}\n",
            flags(&[3, 4, 5], 19)
        )
        .as_bytes(),
    );
    item.extend_from_slice(b"2|Cit\xe9 des enfants perdus, La (1995)|01-Jan-1995||");
    item.extend_from_slice(format!("{}\n", flags(&[2, 15], 19)).as_bytes());
    item.extend_from_slice(format!("267|unknown|||{}\n", flags(&[0], 19)).as_bytes());
    item.extend_from_slice(format!("3|Bad flags (1995)|||{}|2\n", flags(&[], 18)).as_bytes());
    write(dir.path(), "u.item", item);
    write(dir.path(), "u.data", "196\t1\t3\t881250949\n186\t2\t5\t891717742\n186\t267\t1\t891717740\n22\t2\t\n");
    assert_eq!(MovieLensLayout::detect(dir.path()).unwrap(), MovieLensLayout::Ml100k);

    // Without u.genre: the standard names; `unknown` gives no topic.
    let (imported, events) = import(dir.path(), skip());
    let c = &imported.catalog;
    assert_eq!(c.get("1").unwrap().topics, ["Animation", "Children's", "Comedy"]);
    assert_eq!(c.get("2").unwrap().title, "Cité des enfants perdus, La (1995)");
    assert_eq!(c.get("2").unwrap().topics, ["Adventure", "Sci-Fi"]);
    assert!(c.get("267").unwrap().topics.is_empty());
    assert_eq!(c.len(), 3);
    let r = &imported.report;
    assert_eq!(r.skipped, 2, "{r}");
    assert!(r.problems[0].contains("u.item:4: genre flag 18 (`2`) is not 0 or 1"), "{:?}", r.problems);
    assert!(r.problems[1].contains("u.data:4: has 2 fields"), "{:?}", r.problems);
    assert_eq!((r.events.ratings, r.events.likes, r.events.dismisses), (3, 1, 1));
    assert_eq!(r.users, 2);
    assert_time_ordered(&events);

    // With u.genre: its names, and its count decides the number of flags.
    write(dir.path(), "u.genre", "unknown|0\nFunny|2\nScary|1\n\n");
    write(
        dir.path(),
        "u.item",
        format!(
            "1|Toy Story (1995)|01-Jan-1995||url|0|1|1\n2|Heat (1995)|||url|1|0|0\n267|unknown|||{}\n",
            flags(&[0], 19)
        ),
    );
    let (imported, _) = import(dir.path(), skip());
    assert_eq!(imported.catalog.get("1").unwrap().topics, ["Scary", "Funny"]);
    assert!(imported.catalog.get("2").unwrap().topics.is_empty());
    assert!(imported.report.problems[0].contains("u.item:3: has 24 `|`-separated fields; expected 5 + 3"));
}
