-- The sliding-sync tables, with Synapse's names, types, keys and indexes
-- (foreign keys to Synapse's rooms/events tables are left out: roomcache
-- keeps no copy of those tables).

CREATE TABLE sliding_sync_joined_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    event_stream_ordering BIGINT NOT NULL,
    bump_stamp BIGINT,
    room_type TEXT,
    room_name TEXT,
    is_encrypted BOOLEAN DEFAULT FALSE NOT NULL,
    tombstone_successor_room_id TEXT
);
CREATE UNIQUE INDEX sliding_sync_joined_rooms_event_stream_ordering
    ON sliding_sync_joined_rooms (event_stream_ordering);

CREATE TABLE sliding_sync_membership_snapshots (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    membership_event_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    forgotten INTEGER DEFAULT 0 NOT NULL,
    event_stream_ordering BIGINT NOT NULL,
    event_instance_name TEXT NOT NULL,
    has_known_state BOOLEAN DEFAULT FALSE NOT NULL,
    room_type TEXT,
    room_name TEXT,
    is_encrypted BOOLEAN DEFAULT FALSE NOT NULL,
    tombstone_successor_room_id TEXT,
    PRIMARY KEY (room_id, user_id)
);
CREATE UNIQUE INDEX sliding_sync_membership_snapshots_event_stream_ordering
    ON sliding_sync_membership_snapshots (event_stream_ordering);
CREATE INDEX sliding_sync_membership_snapshots_user_id_stream_ordering
    ON sliding_sync_membership_snapshots (user_id, event_stream_ordering);
CREATE INDEX sliding_sync_membership_snapshots_membership_event_id_idx
    ON sliding_sync_membership_snapshots (membership_event_id);

CREATE TABLE sliding_sync_joined_rooms_to_recalculate (
    room_id TEXT NOT NULL PRIMARY KEY
);

CREATE TABLE stream_positions (
    stream_name TEXT NOT NULL,
    instance_name TEXT NOT NULL,
    stream_id BIGINT NOT NULL
);
CREATE UNIQUE INDEX stream_positions_idx ON stream_positions (stream_name, instance_name);

-- roomcache's own: what the update rules remember of each room beyond its
-- rows (current relevant state, latest bump, highest stream ordering), so a
-- room can be recomputed after a restart without the homeserver.
CREATE TABLE room_rules_memory (
    room_id TEXT NOT NULL PRIMARY KEY,
    memory JSONB NOT NULL
);
