//! The rooms' data in Postgres: each room's current state event IDs of the
//! held types (table `room_current_state`), the types they were computed
//! for (table `room_state_types`), and each room's latest events for the
//! initial timeline (table `room_latest_events`, V7).
//!
//! Owns: those tables' statements: a room's value is one JSON column
//! ([`RoomJsonTable`]), a value with nothing to store is no row. May not
//! touch: the rules that compute the values, the read index.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_postgres::types::Json;

use super::rows::{column, room_id};
use super::{CorruptRow, Store, StoreError};
use crate::model::{LatestEvents, RoomId};
use crate::rules::{CurrentStateIds, HeldStateTypes, RoomState};

const TYPES_TABLE: &str = "room_state_types";

/// A table of one JSON value per room.
struct RoomJsonTable {
    table: &'static str,
    column: &'static str,
    /// What a value that does not parse is.
    corrupt: fn(serde_json::Error) -> CorruptRow,
}

const CURRENT_STATE: RoomJsonTable = RoomJsonTable {
    table: "room_current_state",
    column: "state",
    corrupt: CorruptRow::CurrentState,
};

const LATEST_EVENTS: RoomJsonTable = RoomJsonTable {
    table: "room_latest_events",
    column: "events",
    corrupt: CorruptRow::LatestEvents,
};

impl RoomJsonTable {
    /// Writes each room's final value (an empty one deletes the room's row).
    async fn write<T: Serialize + Sync + std::fmt::Debug>(
        &self,
        transaction: &deadpool_postgres::Transaction<'_>,
        values: &BTreeMap<RoomId, T>,
        is_empty: impl Fn(&T) -> bool,
    ) -> Result<(), StoreError> {
        let RoomJsonTable { table, column, .. } = self;
        let (empty, held): (Vec<_>, Vec<_>) = values.iter().partition(|(_, v)| is_empty(v));
        if !empty.is_empty() {
            let ids: Vec<&str> = empty.iter().map(|(r, _)| r.as_str()).collect();
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE room_id = ANY($1)"),
                    &[&ids],
                )
                .await?;
        }
        if !held.is_empty() {
            let ids: Vec<&str> = held.iter().map(|(r, _)| r.as_str()).collect();
            let values: Vec<Json<&T>> = held.iter().map(|(_, v)| Json(*v)).collect();
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {table} (room_id, {column})
                         SELECT * FROM UNNEST($1::text[], $2::jsonb[])
                         ON CONFLICT (room_id) DO UPDATE SET {column} = EXCLUDED.{column}"
                    ),
                    &[&ids, &values],
                )
                .await?;
        }
        Ok(())
    }

    fn parse<T: DeserializeOwned>(&self, row: &tokio_postgres::Row) -> Result<T, StoreError> {
        serde_json::from_value(column(row, self.table, 1)?)
            .map_err(|e| StoreError::corrupt(self.table, (self.corrupt)(e)))
    }

    /// Every room's value (rooms without a row are absent).
    async fn all<T: DeserializeOwned>(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, T)>, StoreError> {
        let RoomJsonTable { table, column, .. } = self;
        client
            .query(&format!("SELECT room_id, {column} FROM {table}"), &[])
            .await?
            .iter()
            .map(|row| Ok((room_id(row, table, 0)?, self.parse(row)?)))
            .collect()
    }

    /// The values of `ids`, each handed to `place`.
    async fn of_rooms<T: DeserializeOwned>(
        &self,
        client: &deadpool_postgres::Object,
        ids: &[&str],
        mut place: impl FnMut(RoomId, T),
    ) -> Result<(), StoreError> {
        let RoomJsonTable { table, column, .. } = self;
        let query = format!("SELECT room_id, {column} FROM {table} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            place(room_id(row, table, 0)?, self.parse(row)?);
        }
        Ok(())
    }
}

/// Writes the final current state of each room of a group.
pub(super) async fn write_current_states(
    transaction: &deadpool_postgres::Transaction<'_>,
    states: &BTreeMap<RoomId, CurrentStateIds>,
) -> Result<(), StoreError> {
    CURRENT_STATE
        .write(transaction, states, CurrentStateIds::is_empty)
        .await
}

/// Writes the final latest events of each room of a group.
pub(super) async fn write_latest_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    windows: &BTreeMap<RoomId, LatestEvents>,
) -> Result<(), StoreError> {
    LATEST_EVENTS
        .write(transaction, windows, LatestEvents::is_empty)
        .await
}

/// Records which types the rooms' state is computed for.
pub(super) async fn write_held_types(
    transaction: &deadpool_postgres::Transaction<'_>,
    types: &HeldStateTypes,
) -> Result<(), StoreError> {
    transaction
        .execute(
            &format!(
                "INSERT INTO {TYPES_TABLE} (singleton, held) VALUES (TRUE, $1)
                 ON CONFLICT (singleton) DO UPDATE SET held = EXCLUDED.held"
            ),
            &[&Json(types)],
        )
        .await?;
    Ok(())
}

impl Store {
    /// Every room's current state (rooms holding none are absent).
    pub(super) async fn current_states(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, CurrentStateIds)>, StoreError> {
        CURRENT_STATE.all(client).await
    }

    /// Every room's latest events (rooms holding none are absent; a window
    /// stored under a larger setting keeps its events until its room's
    /// next one).
    pub(super) async fn latest_events(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, LatestEvents)>, StoreError> {
        LATEST_EVENTS.all(client).await
    }

    /// Adds the stored current state and latest events of `rooms` to their
    /// loaded states.
    pub(super) async fn load_room_data_into(
        &self,
        client: &deadpool_postgres::Object,
        ids: &[&str],
        states: &mut HashMap<RoomId, RoomState>,
    ) -> Result<(), StoreError> {
        CURRENT_STATE
            .of_rooms(client, ids, |room, value| {
                if let Some(state) = states.get_mut(&room) {
                    state.current_state = value;
                }
            })
            .await?;
        LATEST_EVENTS
            .of_rooms(client, ids, |room, value| {
                if let Some(state) = states.get_mut(&room) {
                    state.latest_events = value;
                }
            })
            .await
    }

    /// The types the stored rooms' state was computed for, if recorded.
    pub(crate) async fn held_state_types(&self) -> Result<Option<HeldStateTypes>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(&format!("SELECT held FROM {TYPES_TABLE}"), &[])
            .await?;
        row.map(|row| {
            serde_json::from_value(column(&row, TYPES_TABLE, 0)?)
                .map_err(|e| StoreError::corrupt(TYPES_TABLE, CorruptRow::CurrentState(e)))
        })
        .transpose()
    }
}
