-- Beside each stream position, the position roomcache last read that
-- stream up to: every commit of roomcache writes both columns together.
-- NULL for rows written before this column existed. A stream_id moved any
-- other way (an older roomcache, a hand edit) leaves read_up_to behind,
-- which is where source mode's repair lowers a position found ahead of
-- what Synapse has allocated (docs/synapse.md, "Positions Synapse never
-- allocated").
ALTER TABLE stream_positions ADD COLUMN IF NOT EXISTS read_up_to BIGINT;
