//! Reading Synapse's tables as feed rows: events, ex-outliers and
//! current-state deltas of a stream range become the same [`FeedRow`]s a
//! writer would post to the socket.
//!
//! Owns: [`read_range`] (a function over a [`SourceDatabase`], whose
//! methods are all `database.rs`'s), which puts the parts together:
//! reading the range's rows ([`fetch`]), their event rows ([`events`]),
//! their state rows with a "no longer in room" wipe as the true delta of its
//! persist batch ([`deltas`]), local members' events after a wipe
//! ([`local_members`]), events outside the range travelling inline
//! ([`inline`]); and the forget rows of forgotten memberships; and the
//! event rows of Synapse's backfill stream ([`backfill`]). May not
//! touch: SQL text (`super::queries`), roomcache's own tables, the rules.

mod backfill;
mod deltas;
mod events;
mod fetch;
mod inline;
mod local_members;
mod stored_event;

use std::collections::BTreeMap;

use super::range::StreamRange;
use super::{SourceDatabase, SourceError};
use crate::feed::{Event, FeedRow, ForgetRow, StateRow};
pub(crate) use backfill::{
    backfill_positions, backfilled_rows, backfilled_rows_of_rooms, BackfillBounds,
};
pub(crate) use fetch::{
    forgotten_among_events, forgotten_among_members, forgotten_memberships, ForgottenMembership,
};

/// One event read from Synapse, with where and by whom it was stored.
#[derive(Debug, Clone)]
struct SourceEvent {
    stream_ordering: i64,
    topological_ordering: Option<i64>,
    writer: String,
    event: Event,
    outlier: bool,
    rejected: bool,
    out_of_band_membership: bool,
    soft_failed: bool,
}

/// The rows of a stream range in stream order, each with its writer.
#[derive(Debug, Default)]
pub(crate) struct RangeRows {
    pub(crate) rows: Vec<(String, FeedRow)>,
    /// Events read (for statistics).
    pub(crate) events: usize,
}

impl RangeRows {
    /// The rows split per writer (each list in stream order).
    pub(crate) fn by_writer(self) -> BTreeMap<String, Vec<FeedRow>> {
        let mut by_writer: BTreeMap<String, Vec<FeedRow>> = BTreeMap::new();
        for (writer, row) in self.rows {
            by_writer.entry(writer).or_default().push(row);
        }
        by_writer
    }
}

/// A feed row of the range at its stream position, with its writer.
struct RangeRow {
    stream_id: i64,
    /// 0 for an event row, 1 for a state row: at one position, events come
    /// before state.
    order: u8,
    writer: String,
    row: FeedRow,
}

impl RangeRow {
    fn event(stream_id: i64, writer: String, row: FeedRow) -> RangeRow {
        RangeRow {
            stream_id,
            order: 0,
            writer,
            row,
        }
    }

    fn state(state: WriterStateRow) -> RangeRow {
        RangeRow {
            stream_id: state.row.stream_id,
            order: 1,
            writer: state.writer,
            row: FeedRow::State(state.row),
        }
    }
}

/// A state row with the writer that persisted it.
struct WriterStateRow {
    writer: String,
    row: StateRow,
}

/// Whether `(event_type, state_key)` is the membership of a user of
/// `server_name`.
fn is_local_member(event_type: &str, state_key: &str, server_name: &str) -> bool {
    event_type == "m.room.member" && state_key.split_once(':').map(|(_, s)| s) == Some(server_name)
}

/// Every row of the stream range (of the given rooms, or all), as the
/// writers' feeds would carry them. `server_name` decides which members
/// are local.
pub(crate) async fn read_range(
    source: &SourceDatabase,
    range: &StreamRange,
    rooms: Option<&[String]>,
    server_name: &str,
) -> Result<RangeRows, SourceError> {
    if range.is_empty() {
        return Ok(RangeRows::default());
    }
    let events = fetch::events_in_range(source, range, rooms).await?;
    let ex_outliers = fetch::ex_outliers_in_range(source, range, rooms).await?;
    let delta_rows = fetch::deltas_in_range(source, range, rooms).await?;

    let events::EventRows { mut rows, in_range } = events::event_rows(&events, ex_outliers);
    let deltas = deltas::group(delta_rows);
    let deltas::DeltaStateRows {
        rows: mut state_rows,
        in_wipe_batch,
    } = deltas::state_rows(&deltas, &events);
    let candidates = local_members::candidates(&events, &deltas, &in_wipe_batch, server_name);
    for member in candidates {
        let event = member.event;
        if fetch::room_was_left_before(source, event.event.room_id.as_str(), event.stream_ordering)
            .await?
        {
            state_rows.push(member.state_row());
        }
    }

    let inline = inline::InlineNeed {
        in_range: &in_range,
        server_name,
    };
    let missing = inline.missing_event_ids(&state_rows);
    let found = fetch::events_by_id(source, &missing, range.highest()).await?;
    rows.extend(
        inline
            .attach(state_rows, &found)
            .into_iter()
            .map(RangeRow::state),
    );

    // Stable: rows at one position and order keep the order above.
    rows.sort_by_key(|row| (row.stream_id, row.order));
    Ok(RangeRows {
        rows: rows.into_iter().map(|row| (row.writer, row.row)).collect(),
        events: events.len(),
    })
}

/// Forget rows at `stream_id` for the given memberships.
pub(crate) fn forget_rows(stream_id: i64, forgotten: &[ForgottenMembership]) -> Vec<FeedRow> {
    forgotten
        .iter()
        .map(|membership| {
            FeedRow::Forget(ForgetRow {
                stream_id,
                room_id: membership.room_id.clone(),
                user_id: membership.user_id.clone(),
            })
        })
        .collect()
}
