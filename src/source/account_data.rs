//! Source mode: the account data room lists read, followed from Synapse's
//! tables: each local user's global `m.direct` (table `account_data`) and
//! room tags (`room_tags`, changed at the positions of
//! `room_tags_revisions`), all on Synapse's account-data stream.
//!
//! The stream is followed up to its safe position (the minimum over its
//! writers' `stream_positions` rows), which is how far Synapse's own
//! tokens go (`account_data_key`): a reader that waits until roomcache has
//! applied that position sees every change Synapse's answer could see.
//! Each step reads the changes of (applied, safe], or every current value
//! the first time, and hands them to the supervisor with the position.
//!
//! A `stream_positions` row above what Synapse has allocated on the stream
//! (`account_data_sequence`) cannot be true: it is refused (counted,
//! logged), and while no row can be believed the stream waits. An applied
//! position above it (found ahead) is logged as an error and every current
//! value read again, as the first time.
//!
//! Owns: the SQL on those tables and the follower's step. May not touch:
//! Synapse's tables (read-only), roomcache's tables except through the
//! supervisor, the room-list semantics of the content (the read index's).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;
use serde_json::{Map, Value};
use tracing::{debug, error, warn};

use super::database::{SourceRow, WriterRows};
use super::redis::ACCOUNT_DATA;
use super::{queries, SourceDatabase, SourceError};
use crate::model::{AccountData, RoomId, RowChange, UserId, DIRECT_ACCOUNT_DATA, TAG_ACCOUNT_DATA};
use crate::supervisor::{AccountDataPosition, ApplyAccountData, Supervisor};

/// Follows Synapse's account-data stream into the supervisor.
pub(crate) struct AccountDataFollower {
    pub(crate) source: Arc<SourceDatabase>,
    pub(crate) supervisor: Addr<Supervisor>,
    /// Where the supervisor has applied the stream; `None` before the
    /// first step when nothing is stored.
    pub(crate) position: Arc<AccountDataPosition>,
    /// Most stream positions read per step.
    pub(crate) batch_size: i64,
}

impl AccountDataFollower {
    /// One step: reads what changed since the applied position (everything
    /// the first time, or when the applied position is ahead of what
    /// Synapse has allocated) and applies it. Returns true when caught up.
    pub(crate) async fn step(&self) -> Result<bool, SourceError> {
        let (target, allocated) = safe_position(&self.source).await?;
        let Some(target) = target else {
            return Ok(true);
        };
        let applied = self.position.get().filter(|applied| {
            let ahead = *applied > allocated;
            if ahead {
                error!(
                    position = applied,
                    allocated,
                    "the account-data position is ahead of what Synapse has allocated; \
                     reading every current value again"
                );
                metrics::counter!("roomcache_source_positions_repaired_total", "stream" => ACCOUNT_DATA)
                    .increment(1);
            }
            !ahead
        });
        let (changes, to) = match applied {
            Some(from) if from >= target => return Ok(true),
            Some(from) => {
                let to = target.min(from.saturating_add(self.batch_size.max(1)));
                (read_changes(&self.source, from, to).await?, to)
            }
            None => (read_all(&self.source).await?, target),
        };
        let rows = changes.len();
        self.supervisor
            .send(ApplyAccountData {
                changes,
                position: to,
            })
            .await?
            .map_err(SourceError::Store)?;
        self.position.set(to);
        debug!(rows, position = to, "source account data applied");
        Ok(to >= target)
    }
}

/// The account-data stream's safe position and what Synapse has allocated
/// on it: the minimum over its writers' `stream_positions` rows at or
/// below the allocated maximum (rows above it are refused), or, without
/// rows, the highest id in use and at least 1, as Synapse counts it (its
/// first id is 1 and taken as persisted). `None` when there are rows but
/// every one is refused.
async fn safe_position(source: &SourceDatabase) -> Result<(Option<i64>, i64), SourceError> {
    let rows = source
        .rows(&queries::ACCOUNT_DATA_WRITER_POSITIONS, &[])
        .await?;
    let WriterRows {
        allocated,
        believed,
        refused,
    } = WriterRows::of(&rows)?;
    let writers = believed.keys().chain(refused.keys()).map(String::as_str);
    source.report_refused_rows(ACCOUNT_DATA, writers, &refused);
    if !believed.is_empty() || !refused.is_empty() {
        return Ok((believed.values().copied().min(), allocated));
    }
    let row = source
        .one_row(&queries::ACCOUNT_DATA_HIGHEST_ID, &[])
        .await?;
    let highest = row.column::<Option<i64>>(0)?.unwrap_or(1).max(1);
    Ok((Some(highest.min(allocated.max(1))), allocated))
}

/// Every user's current `m.direct` and room tags.
async fn read_all(source: &SourceDatabase) -> Result<Vec<RowChange>, SourceError> {
    let direct = source
        .rows(&queries::GLOBAL_ACCOUNT_DATA, &[&DIRECT_ACCOUNT_DATA])
        .await?;
    let tags = source.rows(&queries::ROOM_TAGS, &[]).await?;
    let mut changes = direct_changes(&direct)?;
    changes.extend(tag_changes(&[], &tags)?);
    Ok(changes)
}

/// The `m.direct` and room tags changed in (from, to], with their
/// current values.
async fn read_changes(
    source: &SourceDatabase,
    from: i64,
    to: i64,
) -> Result<Vec<RowChange>, SourceError> {
    let direct = source
        .rows(
            &queries::GLOBAL_ACCOUNT_DATA_CHANGED,
            &[&DIRECT_ACCOUNT_DATA, &from, &to],
        )
        .await?;
    let revised = source
        .rows(&queries::ROOM_TAGS_REVISED, &[&from, &to])
        .await?;
    let revised: Vec<(String, String)> = revised
        .iter()
        .map(|row| Ok((row.column(0)?, row.column(1)?)))
        .collect::<Result<_, SourceError>>()?;
    let users: Vec<&str> = revised.iter().map(|(u, _)| u.as_str()).collect();
    let rooms: Vec<&str> = revised.iter().map(|(_, r)| r.as_str()).collect();
    let tags = source
        .rows(&queries::ROOM_TAGS_OF_PAIRS, &[&users, &rooms])
        .await?;
    let mut changes = direct_changes(&direct)?;
    changes.extend(tag_changes(&revised, &tags)?);
    Ok(changes)
}

/// Account-data content as stored (JSON text); content that is not a JSON
/// object reads as empty (Synapse would not serve it either).
fn content(text: &str, what: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => value,
        _ => {
            warn!(
                what,
                "account data that is not a JSON object; reading it as empty"
            );
            Value::Object(Map::new())
        }
    }
}

/// A user ID as stored, or a warning and nothing (a row no room list can
/// use must not stop the follower).
fn parsed_user(raw: &str) -> Option<UserId> {
    UserId::parse(raw)
        .inspect_err(|error| warn!(%error, "skipping account data of an invalid user ID"))
        .ok()
}

fn direct_changes(rows: &[SourceRow]) -> Result<Vec<RowChange>, SourceError> {
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let user: &str = row.column(0)?;
        let text: &str = row.column(1)?;
        let Some(user_id) = parsed_user(user) else {
            continue;
        };
        changes.push(RowChange::AccountData(AccountData {
            user_id,
            room_id: None,
            data_type: DIRECT_ACCOUNT_DATA.to_owned(),
            content: content(text, DIRECT_ACCOUNT_DATA),
        }));
    }
    Ok(changes)
}

/// The `m.tag` content of each (user, room): the given pairs (empty when
/// no tag is left) and every pair of `tags`.
fn tag_changes(
    pairs: &[(String, String)],
    tags: &[SourceRow],
) -> Result<Vec<RowChange>, SourceError> {
    let mut by_room: BTreeMap<(String, String), Map<String, Value>> = pairs
        .iter()
        .map(|pair| (pair.clone(), Map::new()))
        .collect();
    for row in tags {
        let user: String = row.column(0)?;
        let room: String = row.column(1)?;
        let tag: String = row.column(2)?;
        let text: &str = row.column(3)?;
        by_room
            .entry((user, room))
            .or_default()
            .insert(tag, content(text, TAG_ACCOUNT_DATA));
    }
    let mut changes = Vec::with_capacity(by_room.len());
    for ((user, room), tags) in by_room {
        let Some(user_id) = parsed_user(&user) else {
            continue;
        };
        let Ok(room_id) = RoomId::parse(&room)
            .inspect_err(|error| warn!(%error, "skipping tags of an invalid room ID"))
        else {
            continue;
        };
        changes.push(RowChange::AccountData(AccountData {
            user_id,
            room_id: Some(room_id),
            data_type: TAG_ACCOUNT_DATA.to_owned(),
            content: serde_json::json!({ "tags": tags }),
        }));
    }
    Ok(changes)
}
