//! `room_name_like` over a user's listed names: a per-user copy of the
//! listing (recency, slot, attributes) with every room's name lowercased
//! into one contiguous buffer, built on the first name filter and kept in
//! step with the listing in place, and searched in one pass.
//!
//! Why: the walk over the listing reads each room's record and its name
//! string, scattered over the heap; for a user in 10,000 rooms those cache
//! misses are the whole cost. The copy is read sequentially and only the
//! rooms whose name holds the needle are looked at. It is not in listing
//! order, so that a change to one room (a message re-keys it) rewrites one
//! entry instead of invalidating the copy.
//!
//! Owns: the copy ([`ListedNames`]), its updates and the search of its
//! buffer. Invariant: a copy's live entries are exactly the user's listing
//! (key, room, attributes) with the names the list shows, lowercase: every
//! change to a listed room's key, attributes or name goes through the
//! index's `unlist` (which calls [`unlisted`]) and `list` (which calls
//! [`listed`]); a joined room's rename relists its joined members. May not
//! touch: the rest of the index (it knows only slots and attributes: the
//! caller hands it the names), locks (a read builds the copy under the read
//! lock, once, through a `OnceLock`; the writer updates it under the write
//! lock), the database, actors.

use std::cmp::Reverse;
use std::sync::OnceLock;

use memchr::memmem;
use rustc_hash::FxHashMap;

use super::slots::{Attributes, Listing, RoomSlot};

/// Users with fewer listed rooms than this walk their listing instead (it
/// is fast enough, and their copies would cost memory for little).
pub(super) const NAME_COPY_MIN_ROOMS: usize = 256;

/// Ends every name in the buffer: 0xFF is never part of UTF-8, so no match
/// of a needle (a string) spans two names.
const SEPARATOR: u8 = 0xFF;

/// A room's entry in the copy: 32 bytes (with its slot in the
/// room-to-entry map, its name and separator: ~47 bytes and the name's
/// length per listed room).
#[derive(Debug, Clone, Copy)]
struct NamedRoom {
    key: i64,
    room: RoomSlot,
    /// The lowercase name is `names[start..end]` (empty without a name).
    start: u32,
    end: u32,
    named: bool,
    /// Listed under `key` with `attributes`; false once the room is
    /// unlisted or its name changed (a newer entry holds the new name).
    live: bool,
    attributes: Attributes,
}

const _: () = assert!(std::mem::size_of::<NamedRoom>() == 32);

/// A user's listed rooms with the names their entries show, lowercase, in
/// the order their names were copied (not listing order).
#[derive(Debug)]
pub(super) struct ListedNames {
    /// By their names' position in `names` (starts ascending).
    rooms: Vec<NamedRoom>,
    names: Vec<u8>,
    /// Each room's latest entry (live, or dead after the room was unlisted,
    /// ready to be revived when it is listed again with the same name).
    entries: FxHashMap<RoomSlot, u32>,
    /// How many entries are live.
    live: usize,
}

fn push_lowercase(names: &mut Vec<u8>, name: &str) {
    if name.is_ascii() {
        names.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
    } else {
        names.extend_from_slice(name.to_lowercase().as_bytes());
    }
}

/// Makes room for `more` items, growing a full vector by an eighth (not
/// doubling it: a big user's copy stays within ~12 % of its size).
fn make_room<T>(vector: &mut Vec<T>, more: usize) {
    if vector.capacity() - vector.len() < more {
        vector.reserve_exact(more + vector.len() / 8);
    }
}

/// Whether `lowercase` is `name` lowercased.
fn same_lowercase(lowercase: &[u8], name: &str) -> bool {
    if name.is_ascii() {
        lowercase.len() == name.len()
            && lowercase
                .iter()
                .zip(name.bytes())
                .all(|(l, b)| *l == b.to_ascii_lowercase())
    } else {
        lowercase == name.to_lowercase().as_bytes()
    }
}

/// A user's copy, as the user record holds it: not built, built as `None`
/// (too few rooms), or built.
pub(super) type NameCopy = OnceLock<Option<Box<ListedNames>>>;

/// Keeps a user's copy in step with `room` being unlisted.
pub(super) fn unlisted(copy: &mut NameCopy, room: RoomSlot) {
    if let Some(Some(names)) = copy.get_mut() {
        names.unlist(room);
    }
}

/// Keeps a user's copy in step with `room` being listed under `key`.
pub(super) fn listed(
    copy: &mut NameCopy,
    key: i64,
    room: RoomSlot,
    attributes: Attributes,
    name: Option<&str>,
) {
    let kept = match copy.get_mut() {
        None => return,
        Some(Some(names)) => names.list(key, room, attributes, name).is_some(),
        // Too few rooms when last asked: asked again on the next read.
        Some(None) => false,
    };
    if !kept {
        copy.take();
    }
}

impl ListedNames {
    /// The copy of a user's listing, whose rooms show the names `shown`
    /// (in listing order); `None` when the names exceed the offsets' range
    /// (4 GiB: then the walk answers).
    pub(super) fn build(order: &Listing, shown: Vec<Option<&str>>) -> Option<Self> {
        let mut names = ListedNames {
            rooms: Vec::with_capacity(shown.len()),
            names: Vec::with_capacity(shown.iter().flatten().map(|n| n.len() + 1).sum()),
            entries: FxHashMap::default(),
            live: 0,
        };
        names.entries.reserve(shown.len());
        for (((Reverse(key), room), attributes), name) in order.iter().zip(shown) {
            names.push(*key, *room, *attributes, name)?;
        }
        Some(names)
    }

    /// Appends a live entry for `room` (its latest); `None` past 4 GiB.
    fn push(
        &mut self,
        key: i64,
        room: RoomSlot,
        attributes: Attributes,
        name: Option<&str>,
    ) -> Option<()> {
        make_room(&mut self.rooms, 1);
        make_room(&mut self.names, name.map_or(0, |n| n.len() + 1));
        let start = u32::try_from(self.names.len()).ok()?;
        if let Some(name) = name {
            push_lowercase(&mut self.names, name);
        }
        let end = u32::try_from(self.names.len()).ok()?;
        if name.is_some() {
            self.names.push(SEPARATOR);
        }
        let entry = u32::try_from(self.rooms.len()).ok()?;
        self.rooms.push(NamedRoom {
            key,
            room,
            start,
            end,
            named: name.is_some(),
            live: true,
            attributes,
        });
        self.entries.insert(room, entry);
        self.live += 1;
        Some(())
    }

    fn entry_mut(&mut self, room: RoomSlot) -> Option<&mut NamedRoom> {
        let entry = *self.entries.get(&room)?;
        self.rooms.get_mut(entry as usize)
    }

    fn unlist(&mut self, room: RoomSlot) {
        if let Some(entry) = self.entry_mut(room) {
            if std::mem::take(&mut entry.live) {
                self.live -= 1;
                self.compact_when_mostly_dead();
            }
        }
    }

    /// Lists `room`: its entry rewritten when its name is unchanged (a
    /// re-key, new attributes), a new entry appended otherwise (the old
    /// one dead). `None` past 4 GiB.
    fn list(
        &mut self,
        key: i64,
        room: RoomSlot,
        attributes: Attributes,
        name: Option<&str>,
    ) -> Option<()> {
        if let Some(index) = self.entries.get(&room).map(|e| *e as usize) {
            let entry = self.rooms.get(index)?;
            let span = self.names.get(entry.start as usize..entry.end as usize);
            let same = match (name, span) {
                (None, _) => !entry.named,
                (Some(name), Some(span)) => entry.named && same_lowercase(span, name),
                (Some(_), None) => false,
            };
            let entry = self.rooms.get_mut(index)?;
            let was_live = std::mem::replace(&mut entry.live, same);
            if same {
                entry.key = key;
                entry.attributes = attributes;
                self.live += usize::from(!was_live);
                return Some(());
            }
            self.live -= usize::from(was_live);
        }
        self.push(key, room, attributes, name)?;
        self.compact_when_mostly_dead();
        Some(())
    }

    /// Copies the live entries and their names afresh when most entries
    /// are dead (sequential reads of the copy only).
    fn compact_when_mostly_dead(&mut self) {
        if self.rooms.len() <= 2 * self.live {
            return;
        }
        let live = self.rooms.iter().filter(|e| e.live);
        let bytes = live.map(|e| (e.end - e.start) as usize + usize::from(e.named));
        let mut names = Vec::with_capacity(bytes.sum());
        let mut rooms = Vec::with_capacity(self.live);
        self.entries.clear();
        for entry in self.rooms.iter().filter(|e| e.live) {
            let span = self.names.get(entry.start as usize..entry.end as usize);
            // Spans fit: the new buffer is no longer than the old one.
            let start = names.len() as u32;
            names.extend_from_slice(span.unwrap_or_default());
            let end = names.len() as u32;
            if entry.named {
                names.push(SEPARATOR);
            }
            self.entries.insert(entry.room, rooms.len() as u32);
            rooms.push(NamedRoom {
                start,
                end,
                ..*entry
            });
        }
        self.rooms = rooms;
        self.names = names;
    }

    /// Calls `visit` with the key, room and attributes of every live entry
    /// whose name holds `lowercase` (a lowercase needle), each once: the
    /// needle is searched for in the whole buffer at once (every named
    /// entry for the empty needle).
    pub(super) fn each_holding(
        &self,
        lowercase: &[u8],
        mut visit: impl FnMut(i64, RoomSlot, &Attributes),
    ) {
        let mut consider = |entry: &NamedRoom| {
            if entry.live {
                visit(entry.key, entry.room, &entry.attributes);
            }
        };
        if lowercase.is_empty() {
            // Every name holds the empty string.
            self.rooms.iter().filter(|e| e.named).for_each(consider);
            return;
        }
        // Entries before `next` have been considered.
        let mut next = 0;
        for hit in memmem::find_iter(&self.names, lowercase) {
            let rest = self.rooms.get(next..).unwrap_or_default();
            // The entry holding the hit: the last whose name starts at or before it.
            let after = next + rest.partition_point(|e| e.start as usize <= hit);
            if after == next {
                continue; // a further hit in an entry already considered
            }
            next = after;
            if let Some(entry) = self.rooms.get(after - 1) {
                debug_assert!(entry.named && hit + lowercase.len() <= entry.end as usize);
                consider(entry);
            }
        }
    }
}

/// A live entry of a copy, for tests: its listing key, attributes and
/// lowercase name.
#[cfg(test)]
pub(super) type LiveEntry = ((Reverse<i64>, RoomSlot), Attributes, Option<String>);

#[cfg(test)]
impl ListedNames {
    /// Checks the copy's own invariants and returns its live entries, in
    /// listing order.
    pub(super) fn live_entries(&self) -> Result<Vec<LiveEntry>, String> {
        let mut held = Vec::new();
        for (index, entry) in self.rooms.iter().enumerate() {
            let span = self.names.get(entry.start as usize..entry.end as usize);
            let span = span.ok_or("a name span past the buffer")?;
            if entry.live && self.entries.get(&entry.room) != Some(&(index as u32)) {
                return Err(format!("live entry {index} is not its room's latest"));
            }
            if entry.live {
                let name = entry
                    .named
                    .then(|| String::from_utf8_lossy(span).into_owned());
                held.push(((Reverse(entry.key), entry.room), entry.attributes, name));
            }
        }
        held.sort_by_key(|(key, _, _)| *key);
        if self.live != held.len() {
            return Err(format!(
                "{} live entries counted, {} held",
                self.live,
                held.len()
            ));
        }
        if !self.rooms.windows(2).all(|w| w[0].start <= w[1].start) {
            return Err("entries out of buffer order".into());
        }
        Ok(held)
    }
}
