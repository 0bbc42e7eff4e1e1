-- What room lists read beyond the sliding-sync tables.

-- A local user's account data that room lists filter on: `m.direct`
-- (global, room_id '') and `m.tag` (per room). Content as sent.
CREATE TABLE user_account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL DEFAULT '',
    account_data_type TEXT NOT NULL,
    content JSONB NOT NULL,
    PRIMARY KEY (user_id, room_id, account_data_type)
);

-- Each space's children through its current `m.space.child` state (state
-- keys whose event has a non-empty `via` array).
CREATE TABLE space_children (
    space_room_id TEXT NOT NULL,
    child_room_id TEXT NOT NULL,
    PRIMARY KEY (space_room_id, child_room_id)
);
