//! The walks that find a list's rooms: over a candidate set (spaces, tags),
//! over the ordered listing by attributes (counted from the per-user
//! attribute counts), by name (over the user's copy of listed names when it
//! has one), or over everything; each keeps the count and the first rows
//! with their ties, and sets apart the rooms sorting after `at`.
//!
//! Owns: [`Found`] and the walks, functions over a request's
//! [`ListQuery`]. May not touch: locks (the caller holds the read lock),
//! the database, actors; it never changes the data. Which walk a list
//! takes, and what is done with what it found, is `lists.rs`'s.

use std::cmp::Reverse;

use super::filter::CompiledFilter;
use super::names::ListedNames;
use super::query::ListQuery;
use super::slots::RoomSlot;
use crate::model::Membership;
use crate::room_list::{ListOptions, NameNeedle};

/// A listed room of a list: its recency and slot.
pub(super) type Listed = (i64, RoomSlot);

/// Keeps `item` in `top` when it is among the first `need` rows or tied
/// with the last row kept; false when it is neither (nor is any later row
/// of a walk newest first).
fn push_top(top: &mut Vec<Listed>, need: usize, item: Listed) -> bool {
    if top.len() < need || top.last().is_some_and(|last| last.0 == item.0) {
        top.push(item);
        true
    } else {
        false
    }
}

/// What a list's walk found: the count, the first rows (with ties) and,
/// with `at`, the rooms sorting after it.
#[derive(Default)]
pub(super) struct Found {
    pub(super) count: usize,
    pub(super) top: Vec<Listed>,
    pub(super) unsettled: Vec<Listed>,
}

/// Puts a matching room among the top rows or the unsettled ones; false
/// when no later row of a walk newest first can be among the top.
pub(super) fn place(
    found: &mut Found,
    need: usize,
    item: Listed,
    options: &ListOptions<'_>,
) -> bool {
    if options.is_unsettled(item.0) {
        found.unsettled.push(item);
        true
    } else {
        push_top(&mut found.top, need, item)
    }
}

/// When spaces or tags narrow the list: every listed candidate that
/// matches (count and rows, unsorted).
pub(super) fn match_candidates(
    query: &ListQuery<'_, '_>,
    filter: &CompiledFilter,
    candidates: Vec<RoomSlot>,
) -> Found {
    let mut found = Found::default();
    for room in candidates {
        let Some((snapshot, room_record)) = query.records(room) else {
            continue;
        };
        if !snapshot.listed {
            continue;
        }
        let (key, attributes) = query.listing(room, snapshot, room_record);
        if filter.matches_attributes(&attributes)
            && filter.matches_rest(room, query, attributes.membership)
        {
            found.count += 1;
            place(&mut found, usize::MAX, (key, room), &query.options);
        }
    }
    found
}

/// When only attributes are filtered on: the count from the per-user
/// attribute counts (less the excluded rooms that match), and the first
/// `need` matches (with ties) of the ordered listing.
pub(super) fn match_by_attributes(
    query: &ListQuery<'_, '_>,
    filter: &CompiledFilter,
    need: usize,
) -> Found {
    let counted: usize = query
        .user
        .attribute_counts
        .iter()
        .filter(|(a, _)| filter.matches_attributes(a))
        .map(|(_, n)| *n as usize)
        .sum();
    let excluded = filter.excluded.iter().flatten().filter(|room| {
        let Some((snapshot, room_record)) = query.records(**room) else {
            return false;
        };
        let (_, attributes) = query.listing(**room, snapshot, room_record);
        snapshot.listed && filter.matches_attributes(&attributes)
    });
    let mut found = Found {
        count: counted.saturating_sub(excluded.count()),
        ..Found::default()
    };
    if need == 0 {
        return found;
    }
    for ((Reverse(key), room), attributes) in &query.user.order {
        if !filter.matches_attributes(attributes) || filter.is_excluded(*room) {
            continue;
        }
        if !place(&mut found, need, (*key, *room), &query.options) {
            break;
        }
    }
    found
}

/// `room_name_like` over the user's copy of their listed names
/// (`names.rs`): the needle is searched for in the whole buffer once; each
/// live room holding it that also matches the other filters is counted,
/// and the first `need` of them by recency (with ties) are kept.
pub(super) fn match_listed_names(
    query: &ListQuery<'_, '_>,
    names: &ListedNames,
    filter: &CompiledFilter,
    needle: &NameNeedle,
    need: usize,
) -> Found {
    let mut found = Found::default();
    names.each_holding(needle.lowercase().as_bytes(), |key, room, attributes| {
        if filter.matches_attributes(attributes) && filter.matches_sets(room) {
            found.count += 1;
            // Every match is kept here; the top ones are picked below.
            place(&mut found, usize::MAX, (key, room), &query.options);
        }
    });
    keep_top(&mut found.top, need);
    found
}

/// Keeps in `top` the rows a walk newest first would keep: the first
/// `need` by recency and those tied with the last of them (a partial sort
/// of the matches).
fn keep_top(top: &mut Vec<Listed>, need: usize) {
    if top.len() <= need {
        return;
    }
    let Some(last) = need.checked_sub(1) else {
        top.clear();
        return;
    };
    let (_, (least, _), _) = top.select_nth_unstable_by_key(last, |(key, _)| Reverse(*key));
    let least = *least;
    top.retain(|(key, _)| *key >= least);
}

/// `room_name_like` without a candidate set, for users without a copy
/// of their listed names (`names.rs`): the whole ordered listing
/// in three passes (the attribute and set filters, then each remaining
/// room's name, then the match) so that the loads of different rooms'
/// records and names are independent and the processor overlaps their
/// cache misses (one pass waits for each in turn). Counts every match
/// and keeps the first `need` (with ties).
pub(super) fn match_names(
    query: &ListQuery<'_, '_>,
    filter: &CompiledFilter,
    needle: &NameNeedle,
    need: usize,
) -> Found {
    let candidates: Vec<(i64, RoomSlot, Membership)> = query
        .user
        .order
        .iter()
        .filter(|((_, room), attributes)| {
            filter.matches_attributes(attributes) && filter.matches_sets(*room)
        })
        .map(|((Reverse(key), room), attributes)| (*key, *room, attributes.membership))
        .collect();
    // Reading each name's first byte here brings its text into the cache
    // while the loads of other rooms are still in flight.
    let mut first_bytes = 0u8;
    let names: Vec<Option<&str>> = candidates
        .iter()
        .map(|(_, room, membership)| {
            let name = query.name_of(*room, *membership);
            first_bytes ^= name
                .and_then(|n| n.as_bytes().first().copied())
                .unwrap_or(0);
            name
        })
        .collect();
    std::hint::black_box(first_bytes);
    let mut found = Found::default();
    for ((key, room, _), name) in candidates.iter().zip(names) {
        if name.is_some_and(|n| needle.matches(n)) {
            found.count += 1;
            place(&mut found, need, (*key, *room), &query.options);
        }
    }
    found
}

/// Otherwise (`not_tags`, no candidate set): a walk of the whole
/// ordered listing, counting every match and keeping the first `need`
/// (with ties).
pub(super) fn match_in_order(
    query: &ListQuery<'_, '_>,
    filter: &CompiledFilter,
    need: usize,
) -> Found {
    let mut found = Found::default();
    for ((Reverse(key), room), attributes) in &query.user.order {
        if filter.matches_attributes(attributes)
            && filter.matches_rest(*room, query, attributes.membership)
        {
            found.count += 1;
            place(&mut found, need, (*key, *room), &query.options);
        }
    }
    found
}
