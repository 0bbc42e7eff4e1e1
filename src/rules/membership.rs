//! Membership rules (spec §2.4, §2.5, §2.10): local members' snapshots,
//! written from membership events of the state delta or from out-of-band
//! invites, knocks and their leaves, and marked forgotten.
//!
//! Owns: `MembershipEvent` and the snapshot writes to a `RoomUpdate`. May not
//! touch: the joined-room row or the relevant state (the delta decides those
//! and hands this module the column values), actors, the database.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::feed::{Event, EventRow};
use crate::model::{EventId, Membership, MembershipSnapshot, RoomMetadata, UserId};

use super::metadata::{metadata_from_state, metadata_from_stripped_state, MetadataUpdate};
use super::state::{RelevantEvent, RelevantKey};
use super::{RoomUpdate, RuleError};

/// The type of membership events.
pub(super) const MEMBER: &str = "m.room.member";

/// A membership event as the snapshot needs it.
#[derive(Debug, Clone)]
pub(super) struct MembershipEvent {
    pub(super) event_id: EventId,
    pub(super) user_id: UserId,
    pub(super) sender: UserId,
    pub(super) membership: Membership,
    pub(super) stream_ordering: i64,
    pub(super) instance_name: String,
}

pub(super) fn membership_of(event: &Event) -> Result<Membership, RuleError> {
    event
        .content
        .get("membership")
        .and_then(Value::as_str)
        .and_then(Membership::parse)
        .ok_or_else(|| RuleError::InvalidMembership {
            event_id: event.event_id.clone(),
        })
}

fn member_user(event: &Event) -> Result<UserId, RuleError> {
    event
        .state_key
        .as_deref()
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| RuleError::InvalidMemberStateKey {
            event_id: event.event_id.clone(),
        })
}

/// §2.10: sets `forgotten` on an existing snapshot; never creates one.
pub(super) fn forget(room: &mut RoomUpdate<'_>, user_id: &UserId) {
    if let Some(snapshot) = room.state.snapshots.get_mut(user_id) {
        if !snapshot.forgotten {
            snapshot.forgotten = true;
            room.dirty_users.insert(user_id.clone());
        }
    }
}

/// §2.5: remote invites, knocks and the leaves that end them.
pub(super) fn apply_out_of_band_membership(
    room: &mut RoomUpdate<'_>,
    row: &EventRow,
) -> Result<(), RuleError> {
    let event = &row.event;
    let applies = event.event_type == MEMBER
        && row.outlier
        && row.out_of_band_membership
        && !row.rejected
        && row.is_new_live_event()
        && row.event_stream_ordering() > 0;
    if !applies {
        return Ok(());
    }
    let user_id = member_user(event)?;
    if !room.context.is_local(user_id.as_str()) {
        return Ok(());
    }
    let membership = membership_of(event)?;
    let update = match membership {
        Membership::Leave => MetadataUpdate::default(),
        Membership::Invite => metadata_from_stripped_state(
            event
                .unsigned
                .as_ref()
                .and_then(|u| u.get("invite_room_state")),
        ),
        Membership::Knock => metadata_from_stripped_state(
            event
                .unsigned
                .as_ref()
                .and_then(|u| u.get("knock_room_state")),
        ),
        other => {
            return Err(RuleError::InvalidOutOfBandMembership {
                event_id: event.event_id.clone(),
                membership: other.as_str().to_owned(),
            })
        }
    };
    let membership_event = MembershipEvent {
        event_id: event.event_id.clone(),
        user_id,
        sender: event.sender.clone(),
        membership,
        stream_ordering: row.event_stream_ordering(),
        instance_name: room.context.writer.clone(),
    };
    write_snapshot(room, &membership_event, &update);
    Ok(())
}

/// §2.4: local members' snapshots after a delta. Removed members' go;
/// inserted members' are written with the state columns of the
/// relevant state after the delta (none when it is empty).
pub(super) fn apply_member_delta(
    room: &mut RoomUpdate<'_>,
    removed: &BTreeSet<UserId>,
    inserted: &BTreeMap<UserId, MembershipEvent>,
    state_after: &BTreeMap<RelevantKey, RelevantEvent>,
) {
    for user in removed {
        if room.state.snapshots.remove(user).is_some() {
            room.dirty_users.insert(user.clone());
        }
    }
    let shared = if state_after.is_empty() {
        MetadataUpdate::default()
    } else {
        let mut update = metadata_from_state(state_after.iter().map(|(k, e)| (*k, e)));
        update.has_known_state = Some(true);
        update
    };
    for member in inserted.values() {
        write_snapshot(room, member, &shared);
    }
}

/// Writes a snapshot: the per-user columns always, the state columns
/// only where `update` computed them (the rest are inherited).
pub(super) fn write_snapshot(
    room: &mut RoomUpdate<'_>,
    event: &MembershipEvent,
    update: &MetadataUpdate,
) {
    let mut snapshot = room
        .state
        .snapshots
        .get(&event.user_id)
        .cloned()
        .unwrap_or_else(|| MembershipSnapshot {
            room_id: room.room_id.clone(),
            user_id: event.user_id.clone(),
            sender: event.sender.clone(),
            membership_event_id: event.event_id.clone(),
            membership: event.membership,
            forgotten: false,
            event_stream_ordering: event.stream_ordering,
            event_instance_name: event.instance_name.clone(),
            has_known_state: false,
            metadata: RoomMetadata::default(),
        });
    snapshot.sender = event.sender.clone();
    snapshot.membership_event_id = event.event_id.clone();
    snapshot.membership = event.membership;
    snapshot.forgotten = false;
    snapshot.event_stream_ordering = event.stream_ordering;
    // [DECISION] §8.3: the writer is updated together with the position.
    snapshot.event_instance_name = event.instance_name.clone();
    update.apply_to_snapshot(&mut snapshot);
    room.state.snapshots.insert(event.user_id.clone(), snapshot);
    room.dirty_users.insert(event.user_id.clone());
}

/// The user's current membership event, if `event_id` is it.
pub(super) fn current_membership_event(
    room: &RoomUpdate<'_>,
    user_id: &UserId,
    event_id: &EventId,
) -> Option<MembershipEvent> {
    let snapshot = room.state.snapshots.get(user_id)?;
    (&snapshot.membership_event_id == event_id).then(|| MembershipEvent {
        event_id: event_id.clone(),
        user_id: user_id.clone(),
        sender: snapshot.sender.clone(),
        membership: snapshot.membership,
        stream_ordering: snapshot.event_stream_ordering,
        instance_name: snapshot.event_instance_name.clone(),
    })
}
