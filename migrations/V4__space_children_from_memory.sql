-- `space_children` rebuilt from the rules' memory, which records each
-- room's children in the same transaction as its rows. Imports and
-- start-up recalculations before this version did not write the table
-- (it then held only children changed while following, and kept those of
-- invalidated rooms).
DELETE FROM space_children;
INSERT INTO space_children (space_room_id, child_room_id)
SELECT room_id, jsonb_object_keys(memory -> 'space_children')
FROM room_rules_memory
WHERE jsonb_typeof(memory -> 'space_children') = 'object';
