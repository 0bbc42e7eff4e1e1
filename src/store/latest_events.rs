//! The rooms' latest events for the initial timeline in Postgres (table
//! `room_latest_events`, migration V7).
//!
//! Owns: that table's statements. May not touch: the rules that compute
//! the window, the read index.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::Json;

use super::rows::{column, room_id};
use super::{CorruptRow, Store, StoreError};
use crate::model::{LatestEvents, RoomId};
use crate::rules::RoomState;

pub(super) const TABLE: &str = "room_latest_events";

/// Writes the final window of each room of a group (an empty one deletes
/// the room's row).
pub(super) async fn write_latest_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    windows: &BTreeMap<RoomId, LatestEvents>,
) -> Result<(), StoreError> {
    let (empty, held): (Vec<_>, Vec<_>) = windows.iter().partition(|(_, w)| w.is_empty());
    if !empty.is_empty() {
        let ids: Vec<&str> = empty.iter().map(|(r, _)| r.as_str()).collect();
        transaction
            .execute(
                &format!("DELETE FROM {TABLE} WHERE room_id = ANY($1)"),
                &[&ids],
            )
            .await?;
    }
    if !held.is_empty() {
        let ids: Vec<&str> = held.iter().map(|(r, _)| r.as_str()).collect();
        let values: Vec<Json<&LatestEvents>> = held.iter().map(|(_, w)| Json(*w)).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (room_id, events)
                     SELECT * FROM UNNEST($1::text[], $2::jsonb[])
                     ON CONFLICT (room_id) DO UPDATE SET events = EXCLUDED.events"
                ),
                &[&ids, &values],
            )
            .await?;
    }
    Ok(())
}

fn parse_window(row: &tokio_postgres::Row, index: usize) -> Result<LatestEvents, StoreError> {
    serde_json::from_value(column(row, TABLE, index)?)
        .map_err(|e| StoreError::corrupt(TABLE, CorruptRow::LatestEvents(e)))
}

impl Store {
    /// Every room's window (rooms holding none are absent; a window stored
    /// under a larger setting keeps its events until its room's next one).
    pub(super) async fn latest_events(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, LatestEvents)>, StoreError> {
        let query = format!("SELECT room_id, events FROM {TABLE}");
        client
            .query(&query, &[])
            .await?
            .iter()
            .map(|row| Ok((room_id(row, TABLE, 0)?, parse_window(row, 1)?)))
            .collect()
    }

    /// Adds the stored windows of `rooms` to their loaded states.
    pub(super) async fn load_latest_events_into(
        &self,
        client: &deadpool_postgres::Object,
        ids: &[&str],
        states: &mut HashMap<RoomId, RoomState>,
    ) -> Result<(), StoreError> {
        let query = format!("SELECT room_id, events FROM {TABLE} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            let room = room_id(row, TABLE, 0)?;
            if let Some(state) = states.get_mut(&room) {
                state.latest_events = parse_window(row, 1)?;
            }
        }
        Ok(())
    }
}
