-- The rooms' data, second part: each room's latest events for the initial
-- timeline (not outliers, newest first by topological then stream
-- ordering, at most the setting room_timeline_events), written by the
-- rules with the room's rows, so a restart answers at once (feed mode
-- could not recompute them: it has no source to read).
-- `events` is {"events": [[event_id, topological_ordering,
-- stream_ordering, instance_name, rejected], ...]} with "incomplete": true
-- once an event fell below the window and "unordered": true once an event
-- came without its topological ordering. A room with none has no row.
CREATE TABLE IF NOT EXISTS room_latest_events (
    room_id TEXT NOT NULL PRIMARY KEY,
    events JSONB NOT NULL
);
