//! The room-list benchmark's dataset, generated deterministically: rooms
//! with their joined rows, the snapshots of one big user and of many other
//! users whose room counts range from 1 to 10,000 (a heavy-tailed mix, as on
//! a real homeserver), and the big user's account data and spaces; written
//! to Postgres with `COPY` into a schema named after the sizes, which later
//! runs reuse (generation is done once per size).

use std::fmt::Write as _;

use bytes::Bytes;
use futures_util::SinkExt;
use roomcache::model::{
    AccountData, EventId, JoinedRoomRow, Membership, MembershipSnapshot, RoomId, RoomMetadata,
    RowChange, UserId,
};
use roomcache::store::Store;
use serde_json::json;

pub(crate) const SERVER: &str = "bench.example";
pub(crate) const BIG_USER: &str = "@big:bench.example";
/// Bumped whenever the generator changes, so an old stored dataset is not reused.
const GENERATOR_VERSION: u32 = 4;

/// Sizes of the generated dataset.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) rooms: usize,
    pub(crate) snapshots: usize,
    pub(crate) user_rooms: usize,
}

impl Sizes {
    /// The schema holding this dataset in the benchmark's Postgres.
    pub(crate) fn schema(&self) -> String {
        format!(
            "bench_v{GENERATOR_VERSION}_{}_{}_{}",
            self.rooms, self.snapshots, self.user_rooms
        )
    }

    /// A prime above the room count: the modulus of the joined rows' stream
    /// orderings (a permutation, so they are unique like the real column).
    fn ordering_modulus(&self) -> usize {
        prime_above(self.rooms + 1)
    }

    /// The same for the snapshots' stream orderings (unique too).
    fn snapshot_modulus(&self) -> usize {
        prime_above(self.snapshots + 1)
    }

    /// The stream position every generated row is at or below.
    pub(crate) fn position(&self) -> i64 {
        ((self.ordering_modulus() as i64 + 1) * 10).max(self.snapshot_modulus() as i64 + 1)
    }
}

fn prime_above(start: usize) -> usize {
    let is_prime = |n: usize| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    (start + 1..)
        .find(|n| is_prime(*n) && *n != 7_919)
        .unwrap_or(start + 1)
}

/// splitmix64: deterministic pseudo-random numbers.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn room_id(i: usize) -> RoomId {
    RoomId::parse(&format!("!room{i:07}:{SERVER}")).unwrap()
}

const WORDS: [&str; 8] = [
    "tea", "coffee", "garden", "rust", "matrix", "music", "chess", "books",
];

fn room_metadata(i: usize) -> RoomMetadata {
    let r = mix(i as u64);
    RoomMetadata {
        room_type: r.is_multiple_of(20).then(|| "m.space".to_owned()),
        room_name: (!r.is_multiple_of(10))
            .then(|| format!("Room {i} {}", WORDS[(r >> 8) as usize % 8])),
        is_encrypted: (r >> 16) % 10 < 4,
        tombstone_successor_room_id: (r >> 24)
            .is_multiple_of(100)
            .then(|| format!("!next{i}:{SERVER}")),
    }
}

pub(crate) fn joined_rows(sizes: Sizes) -> Vec<JoinedRoomRow> {
    let modulus = sizes.ordering_modulus() as i64;
    (0..sizes.rooms)
        .filter(|i| mix(*i as u64 ^ 0xA5) % 100 < 97)
        .map(|i| {
            let ordering = 1 + ((i as i64 + 1) * 48_271 % modulus) * 10;
            JoinedRoomRow {
                room_id: room_id(i),
                event_stream_ordering: ordering,
                bump_stamp: Some(ordering - 3),
                metadata: room_metadata(i),
            }
        })
        .collect()
}

/// How many rooms the `k`-th other user is in: 1 to 10,000, heavy-tailed
/// (60 % in 1–3 rooms, 25 % in 4–20, 12 % in 21–100, 2.9 % in 101–1,000,
/// 0.1 % in 1,001–10,000; about 33 on average).
fn room_count(k: usize) -> usize {
    let r = mix(k as u64 ^ 0xC0FF_EE00);
    let (low, high) = match r % 1000 {
        0..=599 => (1, 3),
        600..=849 => (4, 20),
        850..=969 => (21, 100),
        970..=998 => (101, 1_000),
        _ => (1_001, 10_000),
    };
    low + (r >> 10) as usize % (high - low + 1)
}

/// Every snapshot, in order: the big user's first (evenly spread over the
/// rooms), then each other user's rooms (distinct: a stride coprime with
/// the room count), until `sizes.snapshots`.
pub(crate) fn snapshots(sizes: Sizes) -> impl Iterator<Item = MembershipSnapshot> {
    let big = (0..sizes.user_rooms.min(sizes.snapshots)).map(move |n| {
        (
            BIG_USER.to_owned(),
            (n * (sizes.rooms / sizes.user_rooms)) % sizes.rooms,
        )
    });
    let stride = [10_007, 10_009, 10_037]
        .into_iter()
        .find(|p| !sizes.rooms.is_multiple_of(*p))
        .unwrap_or(1);
    let others = (0..)
        .flat_map(move |k: usize| {
            let base = mix(k as u64 ^ 0x0B5E) as usize % sizes.rooms;
            let user = format!("@user{k}:{SERVER}");
            (0..room_count(k).min(sizes.rooms))
                .map(move |j| (user.clone(), (base + j * stride) % sizes.rooms))
        })
        .take(sizes.snapshots.saturating_sub(sizes.user_rooms));
    let modulus = sizes.snapshot_modulus();
    big.chain(others)
        .enumerate()
        .map(move |(n, (user, room))| snapshot(n, &user, room, modulus))
}

/// Real event IDs (room versions 4 and later) are '$' and the unpadded
/// URL-safe base64 of a 32-byte hash.
fn event_id(n: usize) -> EventId {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 33];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let word = mix((n as u64) << 2 | i as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    bytes[32] = 0;
    let mut text = String::from("$");
    for group in bytes.chunks(3) {
        let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
        for shift in [18, 12, 6, 0] {
            text.push(ALPHABET[(bits >> shift) as usize & 63] as char);
        }
    }
    // 33 bytes give 44 characters; the last (all zero bits) is not part of a 32-byte hash.
    text.truncate(44);
    EventId::parse(&text).unwrap()
}

fn snapshot(n: usize, user: &str, room: usize, modulus: usize) -> MembershipSnapshot {
    let r = mix(n as u64 ^ 0x5A5A);
    let (membership, self_sent) = match r % 100 {
        0..=89 => (Membership::Join, true),
        90..=93 => (Membership::Invite, false),
        94..=96 => (Membership::Leave, false),
        97 => (Membership::Ban, false),
        98 => (Membership::Leave, true),
        _ => (Membership::Knock, true),
    };
    let user_id = UserId::parse(user).unwrap();
    let known = membership != Membership::Invite || !(r >> 8).is_multiple_of(5);
    MembershipSnapshot {
        room_id: room_id(room),
        sender: if self_sent {
            user_id.clone()
        } else {
            UserId::parse("@admin:remote.example").unwrap()
        },
        user_id,
        membership_event_id: event_id(n),
        membership,
        forgotten: membership == Membership::Leave && (r >> 16).is_multiple_of(3),
        // A permutation of 1..modulus: unique, like the real column.
        event_stream_ordering: ((n as i64 + 1) * 7_919) % modulus as i64,
        event_instance_name: "master".into(),
        has_known_state: known,
        metadata: if known {
            room_metadata(room)
        } else {
            RoomMetadata::default()
        },
    }
}

/// Account data and spaces of the big user: 200 DMs, 500 tagged rooms,
/// 50 spaces of 100 children each.
pub(crate) fn extras(sizes: Sizes) -> Vec<RowChange> {
    let step = sizes.rooms / sizes.user_rooms;
    let user_room = |i: usize| room_id((i * step) % sizes.rooms);
    let user = UserId::parse(BIG_USER).unwrap();
    let dms: Vec<String> = (0..200).map(|i| user_room(i * 37).to_string()).collect();
    let mut changes = vec![RowChange::AccountData(AccountData {
        user_id: user.clone(),
        room_id: None,
        data_type: "m.direct".into(),
        content: json!({ "@friend:bench.example": dms }),
    })];
    for i in 0..500 {
        let tag = if i < 100 { "m.favourite" } else { "u.work" };
        changes.push(RowChange::AccountData(AccountData {
            user_id: user.clone(),
            room_id: Some(user_room(i * 19 + 5)),
            data_type: "m.tag".into(),
            content: json!({"tags": { tag: {"order": 0.5} }}),
        }));
    }
    for (s, space) in spaces(sizes).into_iter().enumerate() {
        changes.push(RowChange::SpaceChildren {
            space_room_id: space,
            children: (0..100).map(|c| user_room(s * 100 + c)).collect(),
        });
    }
    changes
}

/// The big user's 50 spaces: the last of its rooms it is joined to (a
/// `spaces` filter counts only spaces the user is joined to).
pub(crate) fn spaces(sizes: Sizes) -> Vec<RoomId> {
    let step = sizes.rooms / sizes.user_rooms;
    let modulus = sizes.snapshot_modulus();
    (0..sizes.user_rooms.min(sizes.snapshots))
        .rev()
        .map(|n| (n, (n * step) % sizes.rooms))
        .filter(|(n, room)| snapshot(*n, BIG_USER, *room, modulus).membership == Membership::Join)
        .map(|(_, room)| room_id(room))
        .take(50)
        .collect()
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("\\N")
}

/// Whether the dataset of these sizes is already stored in full.
pub(crate) async fn is_stored(store: &Store) -> BenchResult<bool> {
    let client = store.client().await?;
    let row = client
        .query_one("SELECT to_regclass('bench_generated') IS NOT NULL", &[])
        .await?;
    Ok(row.try_get(0)?)
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Writes the dataset to the (empty, migrated) schema with COPY (text
/// format), then marks it complete.
pub(crate) async fn load_postgres(store: &Store, sizes: Sizes) -> BenchResult<()> {
    let client = store.client().await?;
    // Building the indexes after the rows is several times faster than
    // maintaining them row by row (random inserts into indexes larger than
    // Postgres's buffers).
    let indexes = table_indexes(&client).await?;
    for (drop, _) in &indexes {
        client.batch_execute(drop).await?;
    }
    copy_text(
        &client,
        "COPY sliding_sync_joined_rooms (room_id, event_stream_ordering, bump_stamp, room_type, room_name, is_encrypted, tombstone_successor_room_id) FROM STDIN",
        joined_rows(sizes),
        |buffer, row| {
            let m = &row.metadata;
            writeln!(
                buffer,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                row.room_id,
                row.event_stream_ordering,
                row.bump_stamp.map_or("\\N".into(), |b| b.to_string()),
                text(&m.room_type),
                text(&m.room_name),
                m.is_encrypted,
                text(&m.tombstone_successor_room_id)
            )
        },
    )
    .await?;
    copy_text(
        &client,
        "COPY sliding_sync_membership_snapshots (room_id, user_id, sender, membership_event_id, membership, forgotten, event_stream_ordering, event_instance_name, has_known_state, room_type, room_name, is_encrypted, tombstone_successor_room_id) FROM STDIN",
        snapshots(sizes),
        |buffer, s| {
            let m = &s.metadata;
            writeln!(
                buffer,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                s.room_id,
                s.user_id,
                s.sender,
                s.membership_event_id,
                s.membership.as_str(),
                i32::from(s.forgotten),
                s.event_stream_ordering,
                s.event_instance_name,
                s.has_known_state,
                text(&m.room_type),
                text(&m.room_name),
                m.is_encrypted,
                text(&m.tombstone_successor_room_id)
            )
        },
    )
    .await?;
    insert_extras(&client, sizes).await?;
    client
        .batch_execute("SET maintenance_work_mem = '1GB'")
        .await?;
    for (_, create) in &indexes {
        client.batch_execute(create).await?;
    }
    client
        .execute(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id) VALUES ('events', 'master', $1)",
            &[&sizes.position()],
        )
        .await?;
    client
        .batch_execute(
            "ANALYZE sliding_sync_joined_rooms; ANALYZE sliding_sync_membership_snapshots;
             CREATE TABLE bench_generated (generated_at timestamptz DEFAULT now());
             INSERT INTO bench_generated DEFAULT VALUES;",
        )
        .await?;
    Ok(())
}

/// The indexes (and primary keys) of the two tables: for each, the
/// statement that drops it and the one that builds it again.
async fn table_indexes(client: &tokio_postgres::Client) -> BenchResult<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT i.indexname, i.indexdef, c.conname IS NOT NULL
             FROM pg_indexes i LEFT JOIN pg_constraint c
               ON c.conname = i.indexname AND c.connamespace = current_schema()::regnamespace
             WHERE i.schemaname = current_schema()
               AND i.tablename IN ('sliding_sync_joined_rooms', 'sliding_sync_membership_snapshots')",
            &[],
        )
        .await?;
    let mut indexes = Vec::new();
    for row in &rows {
        let (name, definition, constraint): (String, String, bool) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let table = if definition.contains("sliding_sync_joined_rooms ") {
            "sliding_sync_joined_rooms"
        } else {
            "sliding_sync_membership_snapshots"
        };
        let (drop, attach) = if constraint {
            (
                format!("ALTER TABLE {table} DROP CONSTRAINT {name}"),
                format!("ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"),
            )
        } else {
            (format!("DROP INDEX {name}"), String::new())
        };
        indexes.push((format!("{drop}; "), format!("{definition}; {attach}")));
    }
    Ok(indexes)
}

/// Streams `rows` into `statement` (a `COPY … FROM STDIN` in text format),
/// one line each as `line` writes it, in chunks of about 1 MiB.
async fn copy_text<T>(
    client: &tokio_postgres::Client,
    statement: &str,
    rows: impl IntoIterator<Item = T>,
    mut line: impl FnMut(&mut String, &T) -> std::fmt::Result,
) -> BenchResult<()> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    let mut buffer = String::new();
    for row in rows {
        line(&mut buffer, &row)?;
        if buffer.len() > 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut buffer))).await?;
        }
    }
    sink.send(Bytes::from(buffer)).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// The account data and space children of the dataset.
async fn insert_extras(client: &tokio_postgres::Client, sizes: Sizes) -> BenchResult<()> {
    for change in extras(sizes) {
        match change {
            RowChange::AccountData(data) => {
                let room = data.room_id.map(|r| r.to_string()).unwrap_or_default();
                client
                    .execute(
                        "INSERT INTO user_account_data (user_id, room_id, account_data_type, content) VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, account_data_type) DO UPDATE SET content = EXCLUDED.content",
                        &[&data.user_id.as_str(), &room, &data.data_type, &data.content],
                    )
                    .await?;
            }
            RowChange::SpaceChildren {
                space_room_id,
                children,
            } => {
                let children: Vec<&str> = children.iter().map(RoomId::as_str).collect();
                client
                    .execute(
                        "INSERT INTO space_children (space_room_id, child_room_id) SELECT $1, UNNEST($2::text[])",
                        &[&space_room_id.as_str(), &children],
                    )
                    .await?;
            }
            _ => {}
        }
    }
    Ok(())
}
