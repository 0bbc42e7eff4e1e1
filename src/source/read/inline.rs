//! Inline events: a state row the rules must resolve (a relevant key, or a
//! local member) whose event is not among the range's rows travels with
//! the event inline, as the writers' feeds would send it.
//!
//! Owns: which rows need their event inline, and attaching the events
//! (pure; the events are read from Synapse's database by the caller). May
//! not touch: SQL, roomcache's tables, the rules' internals (only
//! [`RelevantKey::of`] is asked).

use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::{is_local_member, SourceEvent, WriterStateRow};
use crate::feed::{InlineEvent, StateRow};
use crate::rules::RelevantKey;

/// Which state rows need their event inline.
pub(super) struct InlineNeed<'a> {
    /// The events the range's rows carry.
    pub(super) in_range: &'a HashSet<String>,
    pub(super) server_name: &'a str,
}

impl InlineNeed<'_> {
    /// Whether `row` refers to an event outside the range that the rules
    /// must resolve.
    fn needs_inline(&self, row: &StateRow) -> bool {
        row.event_id
            .as_ref()
            .is_some_and(|id| !self.in_range.contains(id.as_str()))
            && (RelevantKey::of(&row.event_type, &row.state_key).is_some()
                || is_local_member(&row.event_type, &row.state_key, self.server_name))
    }

    /// The IDs of the events `rows` need inline, in row order.
    pub(super) fn missing_event_ids(&self, rows: &[WriterStateRow]) -> Vec<String> {
        rows.iter()
            .filter(|state| self.needs_inline(&state.row))
            .filter_map(|state| state.row.event_id.as_ref().map(|id| id.as_str().to_owned()))
            .collect()
    }

    /// `rows` with their inline events attached from `found`; a row whose
    /// event is missing from the source is skipped with a warning.
    pub(super) fn attach(
        &self,
        rows: Vec<WriterStateRow>,
        found: &HashMap<String, SourceEvent>,
    ) -> Vec<WriterStateRow> {
        let mut attached = Vec::with_capacity(rows.len());
        for WriterStateRow { writer, mut row } in rows {
            if self.needs_inline(&row) {
                let Some(event) = row.event_id.as_ref().and_then(|id| found.get(id.as_str()))
                else {
                    warn!(room_id = %row.room_id, event_type = row.event_type, state_key = row.state_key,
                        "a delta row refers to an event missing from the source; skipped");
                    continue;
                };
                row.event = Some(InlineEvent {
                    event: event.event.clone(),
                    stream_ordering: event.stream_ordering,
                    instance_name: Some(event.writer.clone()),
                });
            }
            attached.push(WriterStateRow { writer, row });
        }
        attached
    }
}
