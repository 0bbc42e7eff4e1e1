//! The integration tests, in one binary (one link instead of one per file).
//! They run real `roomcache` processes against the Postgres that
//! `scripts/test` starts (`support::server`), fed by a homeserver simulator
//! (`support::homeserver`) or reading a real Synapse database
//! (`support::synapse`, fixtures in `tests/fixtures/`).

mod support;

mod answer_limits;
mod bad_input;
mod cli;
mod connections;
mod crash;
mod fallback;
mod hostile_feed;
mod hostile_properties;
mod hung_postgres;
mod positions;
mod properties;
mod room_data;
mod room_list;
mod room_timeline;
mod scenarios;
mod skeleton;
mod socket;
mod source_health;
mod source_positions;
mod source_redis;
mod source_wake;
mod synapse_catalogue;
mod synapse_oracle;
mod synapse_spaces;
mod synapse_workers_oracle;
