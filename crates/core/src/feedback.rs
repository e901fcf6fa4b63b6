//! Validation of feedback events as they arrive on `Feedback.Record`.
//!
//! A batch is accepted or rejected whole, and a rejection names the first
//! offending event by index (`events[3].watch.seconds_watched`), so a client
//! can find and fix it.

use watchnext_proto::v1::{self as pb, feedback_event::Event};

use crate::{
    error::InvalidRequest,
    ids::{UserId, VideoId},
    request::Device,
};

/// Checks every event of a `Record` batch against `max_batch` and the event
/// rules; returns the number of events.
pub fn validate_batch(events: &[pb::FeedbackEvent], max_batch: usize) -> Result<usize, InvalidRequest> {
    if events.is_empty() {
        return Err(InvalidRequest::new("events", "is empty; send at least one event"));
    }
    if events.len() > max_batch {
        return Err(InvalidRequest::new(
            "events",
            format!("has {} events; split it into batches of at most {max_batch}", events.len()),
        ));
    }
    for (i, event) in events.iter().enumerate() {
        validate_event(event).map_err(|e| e.within(&format!("events[{i}]")))?;
    }
    Ok(events.len())
}

/// Checks one event.
pub fn validate_event(event: &pb::FeedbackEvent) -> Result<(), InvalidRequest> {
    UserId::parse("user_id", &event.user_id)?;
    VideoId::parse("video_id", &event.video_id)?;
    Device::from_proto("device", event.device)?;
    if event.timestamp_ms < 0 {
        return Err(InvalidRequest::new("timestamp_ms", "must be >= 0 (Unix epoch milliseconds)"));
    }
    if event.request_id.len() > crate::ids::MAX_ID_BYTES {
        return Err(InvalidRequest::new("request_id", "is longer than 256 bytes"));
    }
    match &event.event {
        None => Err(InvalidRequest::new(
            "event",
            "has no event type (or one this server does not know); set one of impression, click, watch, like, \
             dismiss, rating",
        )),
        Some(Event::Impression(imp)) => {
            if imp.position == 0 {
                return Err(InvalidRequest::new("impression.position", "must be >= 1 (positions are 1-based)"));
            }
            if !imp.query_video_id.is_empty() {
                VideoId::parse("impression.query_video_id", &imp.query_video_id)?;
            }
            for (j, source) in imp.sources.iter().enumerate() {
                if pb::CandidateSource::try_from(source.source).is_err() {
                    return Err(InvalidRequest::new(
                        format!("impression.sources[{j}].source"),
                        format!("unknown candidate source {}", source.source),
                    ));
                }
                if !source.score.is_finite() {
                    return Err(InvalidRequest::new(format!("impression.sources[{j}].score"), "must be finite"));
                }
            }
            if let Some(f) = &imp.features
                && f.dense.iter().any(|v| !v.is_finite())
            {
                return Err(InvalidRequest::new("impression.features.dense", "must be finite numbers"));
            }
            Ok(())
        }
        Some(Event::Watch(w)) => {
            if !w.seconds_watched.is_finite() || w.seconds_watched < 0.0 {
                return Err(InvalidRequest::new("watch.seconds_watched", "must be a finite number >= 0"));
            }
            if !w.video_duration_seconds.is_finite() || w.video_duration_seconds < 0.0 {
                return Err(InvalidRequest::new(
                    "watch.video_duration_seconds",
                    "must be a finite number >= 0 (0 = unknown)",
                ));
            }
            Ok(())
        }
        Some(Event::Rating(r)) => {
            if !r.value.is_finite() {
                return Err(InvalidRequest::new("rating.value", "must be a finite number"));
            }
            Ok(())
        }
        Some(Event::Click(_) | Event::Like(_) | Event::Dismiss(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(e: Event) -> pb::FeedbackEvent {
        pb::FeedbackEvent { user_id: "u".into(), video_id: "v".into(), event: Some(e), ..Default::default() }
    }

    #[test]
    fn valid_events_pass() {
        let events = vec![
            event(Event::Impression(pb::Impression { position: 1, ..Default::default() })),
            event(Event::Click(pb::Click {})),
            event(Event::Watch(pb::Watch { seconds_watched: 30.0, video_duration_seconds: 60.0 })),
            event(Event::Rating(pb::Rating { value: 4.5 })),
        ];
        assert_eq!(validate_batch(&events, 10).unwrap(), 4);
    }

    #[test]
    fn the_first_bad_event_is_named() {
        let mut events = vec![event(Event::Click(pb::Click {})); 3];
        events[1] = event(Event::Watch(pb::Watch { seconds_watched: -1.0, video_duration_seconds: 0.0 }));
        let err = validate_batch(&events, 10).unwrap_err();
        assert_eq!(err.field, "events[1].watch.seconds_watched");

        events[1] = event(Event::Impression(pb::Impression { position: 0, ..Default::default() }));
        assert_eq!(validate_batch(&events, 10).unwrap_err().field, "events[1].impression.position");

        events[1] = pb::FeedbackEvent { user_id: "u".into(), video_id: "v".into(), ..Default::default() };
        assert_eq!(validate_batch(&events, 10).unwrap_err().field, "events[1].event");

        events[1] = event(Event::Click(pb::Click {}));
        let err = validate_batch(&events, 2).unwrap_err();
        assert!(err.field == "events" && err.problem.contains("at most 2"), "{err}");
        assert_eq!(validate_batch(&[], 2).unwrap_err().field, "events");
    }
}
