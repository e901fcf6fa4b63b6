//! Every importer's parser on arbitrary file contents: MovieLens (the three
//! layouts), generic events (CSV and JSON Lines), generic catalogues and
//! Open Bandit logs. Never a panic: a malformed line is an error naming it,
//! or skipped and counted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use watchnext_core::event::Event;
use watchnext_import::{
    EventsFormat, GenericOptions, MovieLensOptions, ObdOptions, OnError, import_catalog, import_generic,
    import_movielens, import_obd,
};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let on_error = if which & 0x80 == 0 { OnError::Fail } else { OnError::Skip };
    // Two files' contents, split at the first NUL byte.
    let (first, second) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut sink: Vec<Event> = Vec::new();
    match which % 7 {
        0 | 1 | 2 => {
            let (movies, ratings) =
                [("movies.csv", "ratings.csv"), ("movies.dat", "ratings.dat"), ("u.item", "u.data")]
                    [usize::from(which % 7)];
            std::fs::write(d.join(movies), first).expect("write");
            std::fs::write(d.join(ratings), second).expect("write");
            let options = MovieLensOptions { negatives: 2, seed: 1, on_error };
            let _ = import_movielens(d, &options, &mut sink);
        }
        3 | 4 => {
            let (name, format) = if which % 7 == 3 {
                ("events.csv", EventsFormat::Csv)
            } else {
                ("events.jsonl", EventsFormat::JsonLines)
            };
            std::fs::write(d.join(name), first).expect("write");
            let catalog = (!second.is_empty()).then(|| {
                std::fs::write(d.join("catalog.jsonl"), second).expect("write");
                d.join("catalog.jsonl")
            });
            let options = GenericOptions { on_error, format: Some(format), catalog };
            let _ = import_generic(&d.join(name), &options, &mut sink);
        }
        5 => {
            let name = if which & 0x40 == 0 { "catalog.csv" } else { "catalog.jsonl" };
            std::fs::write(d.join(name), first).expect("write");
            let _ = import_catalog(&d.join(name), on_error);
        }
        _ => {
            let campaign = d.join("random").join("all");
            std::fs::create_dir_all(&campaign).expect("mkdir");
            std::fs::write(campaign.join("all.csv"), first).expect("write");
            std::fs::write(campaign.join("item_context.csv"), second).expect("write");
            let _ = import_obd(&campaign, &ObdOptions { on_error }, &mut sink);
        }
    }
    // Whatever was imported came out in time order.
    assert!(sink.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms), "events out of time order");
});
