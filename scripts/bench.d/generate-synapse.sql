-- Generates a larger Synapse database from the fixture loaded in the current
-- database: :copies - 1 more copies of every room, in Synapse's own table
-- layout (rooms, events, event_json, state groups, current state, deltas,
-- memberships, redactions), with fresh room and event IDs and stream
-- orderings above the original ones. The 20 users stay the same, so each
-- ends up in :copies times as many rooms.
--   psql -v copies=50 -f generate-synapse.sql DB
SET session_replication_role = replica;  -- skip Synapse's consistency triggers
-- The fixture's rows, copied once (each copy reads these, not the growing tables).
CREATE TEMP TABLE original_rooms AS SELECT * FROM rooms WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_events AS SELECT * FROM events WHERE event_id NOT LIKE '$~%';
CREATE TEMP TABLE original_event_json AS SELECT * FROM event_json WHERE event_id NOT LIKE '$~%';
CREATE TEMP TABLE original_redactions AS SELECT * FROM redactions WHERE event_id NOT LIKE '$~%';
CREATE TEMP TABLE original_rejections AS SELECT * FROM rejections WHERE event_id NOT LIKE '$~%';
CREATE TEMP TABLE original_current_state_delta_stream AS SELECT * FROM current_state_delta_stream WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_current_state_events AS SELECT * FROM current_state_events WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_room_memberships AS SELECT * FROM room_memberships WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_local_current_membership AS SELECT * FROM local_current_membership WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_state_groups AS SELECT * FROM state_groups WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_state_groups_state AS SELECT * FROM state_groups_state WHERE room_id NOT LIKE '!~%';
CREATE TEMP TABLE original_event_to_state_groups AS SELECT * FROM event_to_state_groups WHERE event_id NOT LIKE '$~%';
CREATE TEMP TABLE original_state_group_edges AS SELECT g.* FROM state_group_edges g JOIN state_groups s ON s.id = g.state_group WHERE s.room_id NOT LIKE '!~%';
DO $$
DECLARE
    copies INTEGER := current_setting('bench.copies')::INTEGER;
    step BIGINT := current_setting('bench.step')::BIGINT;
    k INTEGER;
    r TEXT;
    e TEXT;
    so BIGINT;
    sg BIGINT;
BEGIN
    SELECT MAX(id) + 1 INTO sg FROM state_groups;
    FOR k IN 1 .. copies - 1 LOOP
        r := '!~g' || k || '~';
        e := '$~g' || k || '~';
        so := k * step;
        INSERT INTO rooms (room_id, is_public, creator, room_version, has_auth_chain_index)
        SELECT r || substr(room_id, 2), is_public, creator, room_version, has_auth_chain_index FROM original_rooms;
        INSERT INTO events (topological_ordering, event_id, type, room_id, content, unrecognized_keys,
            processed, outlier, depth, origin_server_ts, received_ts, sender, contains_url,
            instance_name, stream_ordering, state_key, rejection_reason)
        SELECT topological_ordering, e || substr(event_id, 2), type, r || substr(room_id, 2), content,
            unrecognized_keys, processed, outlier, depth, origin_server_ts, received_ts, sender,
            contains_url, instance_name, stream_ordering + so, state_key, rejection_reason
        FROM original_events;
        INSERT INTO event_json (event_id, room_id, internal_metadata, json, format_version)
        SELECT e || substr(event_id, 2), r || substr(room_id, 2), internal_metadata,
            replace(replace(json, '"!', '"' || r), '"$', '"' || e), format_version
        FROM original_event_json;
        INSERT INTO redactions (event_id, redacts, have_censored, received_ts, recheck)
        SELECT e || substr(event_id, 2), e || substr(redacts, 2), have_censored, received_ts, recheck
        FROM original_redactions;
        INSERT INTO rejections (event_id, reason, last_check)
        SELECT e || substr(event_id, 2), reason, last_check FROM original_rejections;
        INSERT INTO current_state_delta_stream (stream_id, room_id, type, state_key, event_id, prev_event_id, instance_name)
        SELECT stream_id + so, r || substr(room_id, 2), type, state_key, e || substr(event_id, 2),
            e || substr(prev_event_id, 2), instance_name
        FROM original_current_state_delta_stream;
        INSERT INTO current_state_events (room_id, type, state_key, event_id, membership, event_stream_ordering)
        SELECT r || substr(room_id, 2), type, state_key, e || substr(event_id, 2), membership, event_stream_ordering + so
        FROM original_current_state_events;
        INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership, forgotten,
            display_name, avatar_url, event_stream_ordering, participant)
        SELECT e || substr(event_id, 2), user_id, sender, r || substr(room_id, 2), membership, forgotten,
            display_name, avatar_url, event_stream_ordering + so, participant
        FROM original_room_memberships;
        INSERT INTO local_current_membership (room_id, user_id, event_id, membership, event_stream_ordering)
        SELECT r || substr(room_id, 2), user_id, e || substr(event_id, 2), membership, event_stream_ordering + so
        FROM original_local_current_membership;
        INSERT INTO state_groups (id, room_id, event_id)
        SELECT id + sg * k, r || substr(room_id, 2), e || substr(event_id, 2) FROM original_state_groups;
        INSERT INTO state_groups_state (state_group, room_id, type, state_key, event_id)
        SELECT state_group + sg * k, r || substr(room_id, 2), type, state_key, e || substr(event_id, 2)
        FROM original_state_groups_state;
        INSERT INTO state_group_edges (state_group, prev_state_group)
        SELECT g.state_group + sg * k, g.prev_state_group + sg * k
        FROM original_state_group_edges g;
        INSERT INTO event_to_state_groups (event_id, state_group)
        SELECT e || substr(event_id, 2), state_group + sg * k FROM original_event_to_state_groups;
    END LOOP;
    UPDATE stream_positions SET stream_id = (SELECT MAX(stream_ordering) FROM events)
    WHERE stream_name = 'events';
    -- Allocated, as Synapse allocates every position it persists: roomcache
    -- refuses positions beyond the sequence (docs/synapse.md section 9).
    PERFORM setval('events_stream_seq', (SELECT MAX(stream_ordering) FROM events));
END
$$;
ANALYZE;
