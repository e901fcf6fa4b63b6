//! Generic CSV / JSON Lines events and catalogues.

mod common;

use common::{assert_time_ordered, write};
use watchnext_core::{
    Device,
    catalog::{Catalog, Video},
    event::{Event, EventKind},
};
use watchnext_import::{EventsFormat, GenericOptions, ImportError, OnError, import_catalog, import_generic};

const HEADER: &str = "timestamp_ms,user_id,video_id,event,request_id,position,device,seconds_watched,\
video_duration_seconds,rating,query_video_id,propensity\n";

/// The same six events as CSV rows and as JSON lines, out of time order.
const CSV_ROWS: &str = "1700000004000,u1,v9,watch,r1,,phone,212.5,300,,,\n\
1700000000000,u1,v9,impression,r1,1,phone,,,,v3,0.25\n\
1700000000000,u1,v9,click,r1,,PHONE,,,,,\n\
1700000005000,u2,v3,rating,,,,,,4.5,,\n\
1700000005000,u2,v3,like,,,tv,,,,,\n\
1700000001000,u2,v3,dismiss,,,,,,,,\n";

const JSON_ROWS: &str = r#"{"timestamp_ms":1700000004000,"user_id":"u1","video_id":"v9","event":"watch","request_id":"r1","device":"phone","seconds_watched":212.5,"video_duration_seconds":300}
{"timestamp_ms":1700000000000,"user_id":"u1","video_id":"v9","event":"impression","request_id":"r1","position":1,"device":"phone","query_video_id":"v3","propensity":0.25}
{"timestamp_ms":"1700000000000","user_id":"u1","video_id":"v9","event":"click","request_id":"r1","device":"PHONE","rating":null}

{"timestamp_ms":1700000005000,"user_id":"u2","video_id":"v3","event":"rating","rating":4.5}
{"timestamp_ms":1700000005000,"user_id":"u2","video_id":"v3","event":"like","device":"tv"}
{"timestamp_ms":1700000001000,"user_id":"u2","video_id":"v3","event":"dismiss","device":""}
"#;

fn check_six(events: &[Event]) {
    assert_time_ordered(events);
    let got: Vec<(i64, &str, &str)> = events.iter().map(|e| (e.timestamp_ms, e.user.as_str(), e.kind.name())).collect();
    // Stable: equal times keep the file's order.
    assert_eq!(
        got,
        [
            (1_700_000_000_000, "u1", "impression"),
            (1_700_000_000_000, "u1", "click"),
            (1_700_000_001_000, "u2", "dismiss"),
            (1_700_000_004_000, "u1", "watch"),
            (1_700_000_005_000, "u2", "rating"),
            (1_700_000_005_000, "u2", "like"),
        ]
    );
    let EventKind::Impression(imp) = &events[0].kind else { panic!() };
    assert_eq!((imp.position, imp.propensity), (1, 0.25));
    assert_eq!(imp.query_video.as_ref().map(|v| v.as_str()), Some("v3"));
    assert_eq!(events[0].request_id, "r1");
    assert_eq!(events[1].device, Device::Phone);
    assert_eq!(events[2].device, Device::Unknown);
    assert_eq!(events[3].kind, EventKind::Watch { seconds_watched: 212.5, video_duration_seconds: 300.0 });
    assert_eq!(events[4].kind, EventKind::Rating { value: 4.5 });
    assert_eq!(events[5].device, Device::Tv);
}

#[test]
fn csv_and_json_lines_give_the_same_sorted_events() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "events.csv", format!("{HEADER}{CSV_ROWS}"));
    write(dir.path(), "events.jsonl", JSON_ROWS);
    let mut from_csv = Vec::new();
    let a = import_generic(&dir.path().join("events.csv"), &GenericOptions::default(), &mut from_csv).unwrap();
    check_six(&from_csv);
    let mut from_json = Vec::new();
    let b = import_generic(&dir.path().join("events.jsonl"), &GenericOptions::default(), &mut from_json).unwrap();
    assert_eq!(from_csv, from_json);
    for r in [&a.report, &b.report] {
        assert_eq!((r.lines_read, r.users, r.videos, r.skipped), (6, 2, 2, 0));
        assert_eq!((r.events.impressions, r.events.clicks, r.events.watches), (1, 1, 1));
        assert_eq!((r.events.likes, r.events.dismisses, r.events.ratings), (1, 1, 1));
    }
    // No catalogue given: every video named, ids only.
    let ids: Vec<&str> = a.catalog.videos().iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["v3", "v9"]);
}

#[test]
fn columns_may_be_reordered_and_left_out() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "log.txt", "event,video_id,user_id,timestamp_ms\nclick,v1,u1,5\nlike,v1,u1,3\n");
    let mut events = Vec::new();
    let options = GenericOptions { format: Some(EventsFormat::Csv), ..GenericOptions::default() };
    import_generic(&dir.path().join("log.txt"), &options, &mut events).unwrap();
    assert_eq!(events.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>(), [3, 5]);
    // Without a format and an unknown extension: a clear error.
    let err = import_generic(&dir.path().join("log.txt"), &GenericOptions::default(), &mut events).unwrap_err();
    assert!(err.to_string().contains("unknown format"), "{err}");
}

#[test]
fn malformed_csv_rows_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "0,u1,v1,click,,,,,,,,\n\
               5,u1,v1,share,,,,,,,,\n\
               5,u1,v1,impression,,0,,,,,,\n\
               5,u1,v1,watch,,,,-1,,,,\n\
               5,u1,v1,click,,,,,,4,,\n\
               5,u1,v1,impression,,1,,,,,,1.5\n\
               5,,v1,click,,,,,,,,\n\
               5,u1,v1,click,,,fridge,,,,,\n\
               5,u1,v1,rating,,,,,,,,\n\
               x,u1,v1,click,,,,,,,,\n\
               5,u1,v1,click\n";
    write(dir.path(), "e.csv", format!("{HEADER}{CSV_ROWS}{bad}"));
    let path = dir.path().join("e.csv");
    let shown = path.display().to_string();
    let mut events = Vec::new();
    let options = GenericOptions { on_error: OnError::Skip, ..GenericOptions::default() };
    let imported = import_generic(&path, &options, &mut events).unwrap();
    check_six(&events);
    let r = &imported.report;
    assert_eq!((r.lines_read, r.skipped), (17, 11), "{r}");
    for (line, words) in [
        (8, "`timestamp_ms` is 0"),
        (9, "event `share`"),
        (10, "impression.position"),
        (11, "watch.seconds_watched"),
        (12, "`rating` does not apply to a click event"),
        (13, "impression.propensity"),
        (14, "invalid `user_id`"),
        (15, "device `fridge`"),
        (16, "`rating` is required"),
        (17, "`timestamp_ms` is `x`"),
        (18, "has 4 fields"),
    ] {
        let prefix = format!("{shown}:{line}: ");
        assert!(r.problems.iter().any(|p| p.starts_with(&prefix) && p.contains(words)), "{prefix}{words}: {r}");
    }
    let mut events = Vec::new();
    let err = import_generic(&path, &GenericOptions::default(), &mut events).unwrap_err();
    assert!(matches!(err, ImportError::Malformed { line: 8, .. }), "{err}");
    assert!(events.is_empty());
}

#[test]
fn unknown_columns_and_keys_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "e.csv", "timestamp_ms,user_id,video_id,event,seconds_watch\n1,u,v,click,\n");
    let options = GenericOptions { on_error: OnError::Skip, ..GenericOptions::default() };
    let err = import_generic(&dir.path().join("e.csv"), &options, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("e.csv:1: unknown column `seconds_watch`"), "{err}");
    write(dir.path(), "e.csv", "user_id,video_id,event\nu,v,click\n");
    let err = import_generic(&dir.path().join("e.csv"), &options, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("e.csv:1: the header has no `timestamp_ms` column"), "{err}");

    write(
        dir.path(),
        "e.jsonl",
        "{\"timestamp_ms\":1,\"user_id\":\"u\",\"video_id\":\"v\",\"event\":\"click\",\"seconds_watch\":3}\n\
         not json\n\
         {\"timestamp_ms\":1,\"user_id\":7,\"video_id\":\"v\",\"event\":\"click\"}\n\
         {\"timestamp_ms\":1,\"user_id\":\"u\",\"video_id\":[1],\"event\":\"click\"}\n",
    );
    let mut events = Vec::new();
    let imported = import_generic(&dir.path().join("e.jsonl"), &options, &mut events).unwrap();
    let r = &imported.report;
    assert_eq!(r.skipped, 3, "{r}");
    assert!(r.problems[0].contains("e.jsonl:1: unknown key `seconds_watch`"), "{r}");
    assert!(r.problems[1].contains("e.jsonl:2: not a JSON object"), "{r}");
    assert!(r.problems[2].contains("e.jsonl:4: `video_id` is [1]"), "{r}");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].user.as_str(), "7");
}

#[test]
fn a_catalogue_in_csv_or_jsonl_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "e.csv", format!("{HEADER}{CSV_ROWS}"));
    write(
        dir.path(),
        "videos.csv",
        "video_id,title,topics,duration_seconds,upload_ms\n\
         v9,\"Cats, at sea\",animals| travel,300,1700000000000\n\
         v3,,,,\n\
         v3,again,,,\n\
         v4,Long,,-5,\n",
    );
    let options = GenericOptions {
        on_error: OnError::Skip,
        catalog: Some(dir.path().join("videos.csv")),
        ..GenericOptions::default()
    };
    let mut events = Vec::new();
    let imported = import_generic(&dir.path().join("e.csv"), &options, &mut events).unwrap();
    check_six(&events);
    let c = &imported.catalog;
    assert_eq!(c.len(), 2);
    let v9 = c.get("v9").unwrap();
    assert_eq!(
        (v9.title.as_str(), v9.topics.clone(), v9.duration_seconds),
        ("Cats, at sea", vec!["animals".to_owned(), "travel".to_owned()], 300.0)
    );
    assert_eq!(v9.upload_ms, 1_700_000_000_000);
    let r = &imported.report;
    assert_eq!((r.skipped, r.lines_read, r.videos), (2, 4 + 6, 2), "{r}");
    assert!(r.problems[0].contains("videos.csv:4: video `v3` appears again (first on line 3)"), "{r}");
    assert!(r.problems[1].contains("videos.csv:5: `duration_seconds` is `-5`"), "{r}");

    // JSON Lines catalogue (the project's own format) lacking v3: v3's events are malformed.
    Catalog::new(vec![Video {
        id: "v9".into(),
        title: "Cats".into(),
        topics: vec![],
        duration_seconds: 1.0,
        upload_ms: 0,
    }])
    .unwrap()
    .write(&dir.path().join("catalog.jsonl"))
    .unwrap();
    let options = GenericOptions {
        on_error: OnError::Skip,
        catalog: Some(dir.path().join("catalog.jsonl")),
        ..GenericOptions::default()
    };
    let mut events = Vec::new();
    let imported = import_generic(&dir.path().join("e.csv"), &options, &mut events).unwrap();
    assert_eq!((events.len(), imported.report.skipped), (3, 3));
    assert!(imported.report.problems[0].contains("e.csv:5: video `v3` is not in the catalogue"));
    assert_eq!(imported.catalog.get("v9").unwrap().title, "Cats");

    // On its own.
    let alone = import_catalog(&dir.path().join("videos.csv"), OnError::Skip).unwrap();
    assert_eq!((alone.catalog.len(), alone.report.skipped, alone.report.events.total()), (2, 2, 0));
    let err = import_catalog(&dir.path().join("videos.csv"), OnError::Fail).unwrap_err();
    assert!(err.to_string().contains("videos.csv:4:"), "{err}");
}
