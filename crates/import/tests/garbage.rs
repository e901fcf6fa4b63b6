//! Nothing a file contains makes an importer panic: random mutations of
//! valid fixtures are imported with `OnError::Skip` and `OnError::Fail`, and
//! each import either succeeds with sorted events or fails with an error.

mod common;

use std::path::Path;

use common::{assert_time_ordered, write};
use watchnext_core::event::Event;
use watchnext_import::{
    GenericOptions, ImportError, Imported, MovieLensOptions, ObdOptions, OnError, import_generic, import_movielens,
    import_obd,
};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Overwrites, inserts and deletes a few bytes, favouring the bytes that
/// matter to the parsers.
fn mutate(rng: &mut Lcg, input: &[u8]) -> Vec<u8> {
    const SPECIAL: &[u8] = b",|:\t\n\r\"\\{}[]-.0123456789 \xe9\xc3\xff\x00";
    let mut out = input.to_vec();
    for _ in 0..1 + rng.next() % 6 {
        let at = if out.is_empty() { 0 } else { rng.next() as usize % out.len() };
        let byte = SPECIAL[rng.next() as usize % SPECIAL.len()];
        match rng.next() % 3 {
            0 if !out.is_empty() => out[at] = byte,
            1 => out.insert(at, byte),
            _ if !out.is_empty() => {
                out.remove(at);
            }
            _ => out.push(byte),
        }
    }
    out
}

fn check(result: Result<Imported, ImportError>, events: &[Event]) {
    match result {
        Ok(imported) => {
            assert_time_ordered(events);
            assert_eq!(imported.report.events.total(), events.len() as u64);
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}

fn rounds(
    seed: u64,
    files: &[(&str, &[u8])],
    import: impl Fn(&Path, OnError, &mut Vec<Event>) -> Result<Imported, ImportError>,
) {
    let mut rng = Lcg(seed);
    for _ in 0..150 {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for (name, content) in files {
            let content = if rng.next().is_multiple_of(2) { mutate(&mut rng, content) } else { content.to_vec() };
            write(dir.path(), name, content);
        }
        for on_error in [OnError::Skip, OnError::Fail] {
            let mut events = Vec::new();
            check(import(dir.path(), on_error, &mut events), &events);
        }
    }
}

#[test]
fn movielens_survives_garbage() {
    let movies_csv = b"movieId,title,genres\n1,\"Heat, The (1995)\",Action|Crime\n2,Up (2009),(no genres listed)\n";
    let ratings_csv = b"userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,2.5,50\n2,1,1.0,70\n";
    let options = |on_error| MovieLensOptions { on_error, ..MovieLensOptions::default() };
    rounds(1, &[("movies.csv", movies_csv), ("ratings.csv", ratings_csv)], |dir, on_error, sink| {
        import_movielens(dir, &options(on_error), sink)
    });
    let movies_dat = b"1::Cit\xe9 (1995)::Drama|War\n2::Up (2009)::Comedy\n";
    let ratings_dat = b"1::1::5::978300760\n2::2::3::978302109\n2::1::1::978301968\n";
    rounds(2, &[("movies.dat", movies_dat), ("ratings.dat", ratings_dat)], |dir, on_error, sink| {
        import_movielens(dir, &options(on_error), sink)
    });
    let item = b"1|Toy Story (1995)|01-Jan-1995||url|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n";
    let data = b"196\t1\t3\t881250949\n22\t1\t1\t881250950\n";
    let genre = b"unknown|0\nAction|1\n";
    rounds(3, &[("u.item", item), ("u.data", data)], |dir, on_error, sink| {
        import_movielens(dir, &options(on_error), sink)
    });
    let item = b"1|Toy Story (1995)|01-Jan-1995||url|0|1\n2|Heat (1995)|||url|1|1\n";
    rounds(4, &[("u.item", item), ("u.data", data), ("u.genre", genre)], |dir, on_error, sink| {
        import_movielens(dir, &options(on_error), sink)
    });
}

#[test]
fn open_bandit_survives_garbage() {
    let log = b",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,\
user_feature_3\n0,2019-11-24 00:00:34.762830+00:00,0,1,0,0.0125,a,b,c,d\n\
1,2019-11-24 00:00:30.000000+00:00,1,2,1,0.0125,a,b,c,d\n";
    let items =
        b",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n0,0,-0.4,x,y,z\n1,1,0.9,x,y,w\n";
    rounds(5, &[("bts/men/men.csv", log), ("bts/men/item_context.csv", items)], |dir, on_error, sink| {
        import_obd(&dir.join("bts/men"), &ObdOptions { on_error }, sink)
    });
}

#[test]
fn generic_survives_garbage() {
    let csv = b"timestamp_ms,user_id,video_id,event,position,seconds_watched,rating\n\
5,u1,v1,impression,1,,\n3,u1,v1,watch,,12.5,\n4,u1,v1,rating,,,4\n";
    let jsonl =
        b"{\"timestamp_ms\":5,\"user_id\":\"u1\",\"video_id\":\"v1\",\"event\":\"impression\",\"position\":1}\n\
{\"timestamp_ms\":3,\"user_id\":\"u1\",\"video_id\":\"v1\",\"event\":\"click\"}\n";
    let catalog = b"video_id,title,topics,duration_seconds,upload_ms\nv1,One,a|b,10,5\n";
    for (seed, name, content) in [(6, "e.csv", &csv[..]), (7, "e.jsonl", &jsonl[..])] {
        rounds(seed, &[(name, content), ("c.csv", catalog)], |dir, on_error, sink| {
            let options = GenericOptions { on_error, catalog: Some(dir.join("c.csv")), ..GenericOptions::default() };
            import_generic(&dir.join(name), &options, sink)
        });
    }
}
