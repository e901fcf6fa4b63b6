//! Request validation on arbitrary wire bytes: every RPC's request decoded
//! from the input and validated as the servers do. Never a panic; an event
//! accepted by validation survives a round trip through its wire form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use watchnext_core::{
    config::FeedbackConfig,
    event::{Event, check_ingest},
    request::Query,
};
use watchnext_proto::v1 as pb;

const NOW_MS: i64 = 1_780_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, wire)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(r) = pb::RecommendRequest::decode(wire) {
                let _ = Query::from_recommend(&r, 1_000, NOW_MS);
            }
        }
        1 => {
            if let Ok(r) = pb::GenerateRequest::decode(wire) {
                let _ = Query::from_generate(&r, 1_000, NOW_MS);
            }
        }
        2 => {
            if let Ok(r) = pb::RankRequest::decode(wire) {
                let _ = Query::from_rank(&r, 1_000, NOW_MS);
            }
        }
        _ => {
            let Ok(r) = pb::RecordRequest::decode(wire) else { return };
            let limits = FeedbackConfig::default();
            for wire_event in &r.events {
                let Ok(event) = Event::from_proto(wire_event, NOW_MS) else { continue };
                if check_ingest(wire_event, &event, &limits, NOW_MS).is_ok() {
                    let again = Event::from_proto(&event.to_proto(), NOW_MS).expect("an accepted event re-validates");
                    assert_eq!(again, event, "an accepted event survives its wire form");
                }
            }
        }
    }
});
