//! Open Bandit Dataset import on a small hand-written folder.

mod common;

use common::{assert_time_ordered, write};
use watchnext_core::event::{Event, EventKind};
use watchnext_import::{ImportError, ObdOptions, OnError, import_obd, obd::obd_user_id};

const HEADER: &str = ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,\
user_feature_3,user-item_affinity_0,user-item_affinity_1\n";

const ITEMS: &str = ",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n\
0,0,-0.49,aed79,67503,5c1e2\n\
1,1,0.97,31af3,84da8,1ead5\n\
2,2,0.10,31af3,67503,f56fa\n";

fn folder(rows: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    write(dir.path(), "random/all/all.csv", format!("{HEADER}{rows}"));
    write(dir.path(), "random/all/item_context.csv", ITEMS);
    dir
}

#[test]
fn rows_become_impressions_and_clicks_in_time_order() {
    // Row 1 is earlier than row 0: the output is sorted.
    let dir = folder(
        "0,2019-11-24 00:00:34.762830+00:00,0,1,0,0.0125,a,b,c,d,0.0,0.0\n\
         1,2019-11-24 00:00:30.000000+00:00,1,2,1,0.0125,a,b,c,d,0.0,1.0\n\
         2,2019-11-24 00:01:00.5+00:00,2,3,1,0.0125,e,b,c,d,0.0,0.0\n",
    );
    let path = dir.path().join("random/all");
    let mut events: Vec<Event> = Vec::new();
    let imported = import_obd(&path, &ObdOptions::default(), &mut events).unwrap();
    let r = &imported.report;
    assert_eq!((r.lines_read, r.events.impressions, r.events.clicks, r.users, r.videos), (3 + 3, 3, 2, 2, 3));
    assert_eq!(r.events.total(), 5);
    assert_eq!(r.source, format!("obd random/all ({})", path.display()));
    assert_time_ordered(&events);

    let summary: Vec<(i64, &str, &str, &str)> =
        events.iter().map(|e| (e.timestamp_ms, e.request_id.as_str(), e.video.as_str(), e.kind.name())).collect();
    assert_eq!(
        summary,
        [
            (1_574_553_630_000, "obd:random:all:1", "obd:1", "impression"),
            (1_574_553_630_000, "obd:random:all:1", "obd:1", "click"),
            (1_574_553_634_762, "obd:random:all:0", "obd:0", "impression"),
            (1_574_553_660_500, "obd:random:all:2", "obd:2", "impression"),
            (1_574_553_660_500, "obd:random:all:2", "obd:2", "click"),
        ]
    );
    let EventKind::Impression(imp) = &events[0].kind else { panic!("{:?}", events[0]) };
    assert_eq!((imp.position, imp.propensity, imp.experiment_arm.as_str()), (2, 0.0125, "random"));
    assert!(imp.query_video.is_none());
    // Users: a stable hash of the four user features.
    assert_eq!(events[0].user.as_str(), obd_user_id(["a", "b", "c", "d"]));
    assert_eq!(events[2].user, events[0].user);
    assert_ne!(events[3].user, events[0].user);
    assert!(events[0].user.as_str().starts_with("obd:") && events[0].user.as_str().len() == 20);

    // Catalogue: hashed categoricals as prefixed topics.
    let v = imported.catalog.get("obd:1").unwrap();
    assert_eq!(v.topics, ["item_feature_1:31af3", "item_feature_2:84da8", "item_feature_3:1ead5"]);
    assert_eq!((v.duration_seconds, v.upload_ms), (0.0, 0));
}

#[test]
fn malformed_rows_are_skipped_with_their_line_or_stop_the_import() {
    let good = "0,2019-11-24 00:00:34.762830+00:00,0,1,0,0.0125,a,b,c,d,0.0,0.0\n";
    let dir = folder(&format!(
        "{good}\
         1,2019-11-24 00:00:35+00:00,0,4,0,0.0125,a,b,c,d,0.0,0.0\n\
         2,2019-11-24 00:00:35+00:00,0,1,2,0.0125,a,b,c,d,0.0,0.0\n\
         3,2019-11-24 00:00:35+00:00,9,1,0,0.0125,a,b,c,d,0.0,0.0\n\
         4,2019-11-24 00:00:35+00:00,0,1,0,0,a,b,c,d,0.0,0.0\n\
         5,2019-11-31 00:00:35+00:00,0,1,0,0.5,a,b,c,d,0.0,0.0\n\
         6,2019-11-24 00:00:35+00:00,0,1,0,0.5,a,b,c\n\
         {good}"
    ));
    let path = dir.path().join("random/all");
    let log = path.join("all.csv").display().to_string();
    let mut events = Vec::new();
    let imported = import_obd(&path, &ObdOptions { on_error: OnError::Skip }, &mut events).unwrap();
    let r = &imported.report;
    assert_eq!((r.skipped, r.events.impressions), (6, 2), "{r}");
    for (line, words) in [
        (3, "position `4`"),
        (4, "click `2`"),
        (5, "item 9 is not in item_context.csv"),
        (6, "propensity_score `0`"),
        (7, "no such date"),
        (8, "has 9 fields"),
    ] {
        let prefix = format!("{log}:{line}: ");
        assert!(r.problems.iter().any(|p| p.starts_with(&prefix) && p.contains(words)), "{prefix}{words}: {r}");
    }
    let mut events = Vec::new();
    let err = import_obd(&path, &ObdOptions::default(), &mut events).unwrap_err();
    assert!(matches!(&err, ImportError::Malformed { line: 3, .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("{log}:3: position `4`")), "{err}");
    assert!(events.is_empty());
}

#[test]
fn a_folder_without_the_campaign_file_is_named() {
    let dir = folder("");
    std::fs::remove_file(dir.path().join("random/all/all.csv")).unwrap();
    let err = import_obd(&dir.path().join("random/all"), &ObdOptions::default(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("`all.csv` is missing"), "{err}");
}
