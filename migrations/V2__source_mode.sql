-- Source mode (beside a real Synapse): the progress of the import from
-- Synapse's tables, so an interrupted import continues where it stopped.
-- One row at most; the stream position the import reads up to is fixed when
-- it starts, so every batch of rooms is computed at the same position.
CREATE TABLE source_import_progress (
    singleton BOOLEAN NOT NULL DEFAULT TRUE PRIMARY KEY CHECK (singleton),
    target_position BIGINT NOT NULL,
    last_room_id TEXT NOT NULL,
    rooms_done BIGINT NOT NULL,
    rows_written BIGINT NOT NULL,
    finished BOOLEAN NOT NULL
);
