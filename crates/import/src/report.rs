//! What an import produced: the catalogue and a report of counts.

use std::fmt;

use watchnext_core::{
    catalog::Catalog,
    event::{Event, EventKind, EventSink},
};

use crate::error::{ImportError, Problems};

/// Events written, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub impressions: u64,
    pub clicks: u64,
    pub watches: u64,
    pub likes: u64,
    pub dismisses: u64,
    pub ratings: u64,
}

impl EventCounts {
    /// Every event written.
    pub fn total(&self) -> u64 {
        self.impressions + self.clicks + self.watches + self.likes + self.dismisses + self.ratings
    }

    fn count(&mut self, kind: &EventKind) {
        let slot = match kind {
            EventKind::Impression(_) => &mut self.impressions,
            EventKind::Click => &mut self.clicks,
            EventKind::Watch { .. } => &mut self.watches,
            EventKind::Like => &mut self.likes,
            EventKind::Dismiss => &mut self.dismisses,
            EventKind::Rating { .. } => &mut self.ratings,
        };
        *slot += 1;
    }
}

/// The counts of one import.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// What was read, e.g. `movielens ml-latest (csv)` or `obd random/all`.
    pub source: String,
    /// Data lines read from every input file (headers and blank lines not
    /// counted), malformed ones included.
    pub lines_read: u64,
    /// Events pushed into the sink, by kind.
    pub events: EventCounts,
    /// Distinct users among the events.
    pub users: u64,
    /// Videos in the returned catalogue.
    pub videos: u64,
    /// Malformed lines skipped ([`crate::OnError::Skip`]).
    pub skipped: u64,
    /// The first [`crate::MAX_PROBLEMS`] skipped lines, as `file:line: problem`.
    pub problems: Vec<String>,
    /// Timestamps of the first and the last event (Unix epoch ms), if any.
    pub time_range_ms: Option<(i64, i64)>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.events;
        write!(
            f,
            "{}: {} lines, {} events (impression {}, click {}, watch {}, like {}, dismiss {}, rating {}), {} users, \
             {} videos, {} lines skipped",
            self.source,
            self.lines_read,
            e.total(),
            e.impressions,
            e.clicks,
            e.watches,
            e.likes,
            e.dismisses,
            e.ratings,
            self.users,
            self.videos,
            self.skipped
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        if self.skipped > self.problems.len() as u64 {
            write!(f, "\n  ... and {} more", self.skipped - self.problems.len() as u64)?;
        }
        Ok(())
    }
}

/// The result of a successful import.
#[derive(Debug)]
pub struct Imported {
    /// The videos the events refer to (and, for MovieLens, every movie listed).
    pub catalog: Catalog,
    pub report: ImportReport,
}

/// Passes events to the caller's sink, counting them by kind and checking
/// that time never goes backwards.
pub(crate) struct Emitter<'a, S> {
    sink: &'a mut S,
    counts: EventCounts,
    range: Option<(i64, i64)>,
}

impl<'a, S: EventSink> Emitter<'a, S> {
    pub(crate) fn new(sink: &'a mut S) -> Self {
        Self { sink, counts: EventCounts::default(), range: None }
    }

    pub(crate) fn push(&mut self, event: Event) -> Result<(), ImportError> {
        let t = event.timestamp_ms;
        self.range = match self.range {
            None => Some((t, t)),
            Some((first, last)) => {
                debug_assert!(t >= last, "events out of time order: {t} after {last}");
                Some((first, last.max(t)))
            }
        };
        self.counts.count(&event.kind);
        self.sink.push(event).map_err(|e| ImportError::Sink(Box::new(e)))
    }

    /// The report of everything pushed so far.
    pub(crate) fn finish(
        self,
        source: String,
        lines_read: u64,
        users: u64,
        catalog: &Catalog,
        problems: Problems,
    ) -> ImportReport {
        ImportReport {
            source,
            lines_read,
            events: self.counts,
            users,
            videos: catalog.len() as u64,
            skipped: problems.skipped,
            problems: problems.messages,
            time_range_ms: self.range,
        }
    }
}
