//! The read index's dense ids (room and user slots, interned room types)
//! and what a user's listing keys and filters its rooms by.
//!
//! Owns: those few types and constants, which every part of the index
//! reads. May not touch: anything else; it depends on nothing in the index.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::model::Membership;

/// A room's slot in the index.
pub(super) type RoomSlot = u32;
/// A local user's slot in the index.
pub(super) type UserSlot = u32;
/// An interned room type: 0 is "no type", `n > 0` the interner's `n - 1`.
pub(super) type TypeId = u32;
pub(super) const NO_TYPE: TypeId = 0;
/// A type id no room has (a filter value never interned).
pub(super) const UNSEEN_TYPE: TypeId = u32::MAX;

/// The sender id of a snapshot whose sender is its own user (most are:
/// joins, knocks, self-leaves), which then needs no interning.
pub(super) const SELF_SENT: u32 = u32::MAX;

/// What attribute filters read of a listed room (also the key of the
/// per-user counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Attributes {
    pub(super) room_type: TypeId,
    pub(super) membership: Membership,
    pub(super) has_known_state: bool,
    pub(super) is_encrypted: bool,
    pub(super) is_dm: bool,
}

/// A user's listed rooms (R1), newest first: keyed by (recency
/// descending, room slot), with their attributes.
pub(super) type Listing = BTreeMap<(Reverse<i64>, RoomSlot), Attributes>;
