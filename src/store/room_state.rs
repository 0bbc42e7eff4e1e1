//! The rooms' data in Postgres: each room's current state event IDs of the
//! held types (table `room_current_state`) and the types they were
//! computed for (table `room_state_types`).
//!
//! Owns: those tables' statements. May not touch: the rules that compute
//! the state, the read index.

use std::collections::{BTreeMap, HashMap};

use tokio_postgres::types::Json;

use super::rows::{column, room_id};
use super::{CorruptRow, Store, StoreError};
use crate::model::RoomId;
use crate::rules::{CurrentStateIds, HeldStateTypes, RoomState};

const TABLE: &str = "room_current_state";
const TYPES_TABLE: &str = "room_state_types";

/// Writes the final current state of each room of a group (an empty one
/// deletes the room's row).
pub(super) async fn write_current_states(
    transaction: &deadpool_postgres::Transaction<'_>,
    states: &BTreeMap<RoomId, CurrentStateIds>,
) -> Result<(), StoreError> {
    let (empty, held): (Vec<_>, Vec<_>) = states.iter().partition(|(_, s)| s.is_empty());
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
        let values: Vec<Json<&CurrentStateIds>> = held.iter().map(|(_, s)| Json(*s)).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO {TABLE} (room_id, state)
                     SELECT * FROM UNNEST($1::text[], $2::jsonb[])
                     ON CONFLICT (room_id) DO UPDATE SET state = EXCLUDED.state"
                ),
                &[&ids, &values],
            )
            .await?;
    }
    Ok(())
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

fn parse_state(row: &tokio_postgres::Row, index: usize) -> Result<CurrentStateIds, StoreError> {
    serde_json::from_value(column(row, TABLE, index)?)
        .map_err(|e| StoreError::corrupt(TABLE, CorruptRow::CurrentState(e)))
}

impl Store {
    /// Every room's current state (rooms holding none are absent).
    pub(super) async fn current_states(
        &self,
        client: &deadpool_postgres::Object,
    ) -> Result<Vec<(RoomId, CurrentStateIds)>, StoreError> {
        let query = format!("SELECT room_id, state FROM {TABLE}");
        client
            .query(&query, &[])
            .await?
            .iter()
            .map(|row| Ok((room_id(row, TABLE, 0)?, parse_state(row, 1)?)))
            .collect()
    }

    /// Adds the stored current state of `rooms` to their loaded states.
    pub(super) async fn load_current_states_into(
        &self,
        client: &deadpool_postgres::Object,
        ids: &[&str],
        states: &mut HashMap<RoomId, RoomState>,
    ) -> Result<(), StoreError> {
        let query = format!("SELECT room_id, state FROM {TABLE} WHERE room_id = ANY($1)");
        for row in &client.query(&query, &[&ids]).await? {
            let room = room_id(row, TABLE, 0)?;
            if let Some(state) = states.get_mut(&room) {
                state.current_state = parse_state(row, 1)?;
            }
        }
        Ok(())
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
