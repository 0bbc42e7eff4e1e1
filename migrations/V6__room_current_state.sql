-- (IF NOT EXISTS: a test re-applies the migrations after V3 to a schema.)
-- The rooms' data: each room's current state event IDs of the held types
-- (settings room_state_types, room_state_wildcard_types), written by the
-- rules with the room's rows. A room without a row holds no such state.
-- `state` is {"keys": [[type, state_key, event_id], ...]} or, for a room
-- that went over max_room_state_keys, {"overflowed": true}.
CREATE TABLE IF NOT EXISTS room_current_state (
    room_id TEXT NOT NULL PRIMARY KEY,
    state JSONB NOT NULL
);

-- Which types the rows of room_current_state were computed for (one row).
-- No row while rooms exist (a schema from before this table), or other
-- types than configured: the rooms' state is unknown until recomputed.
CREATE TABLE IF NOT EXISTS room_state_types (
    singleton BOOLEAN NOT NULL DEFAULT TRUE PRIMARY KEY CHECK (singleton),
    held JSONB NOT NULL
);
