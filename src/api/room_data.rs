//! `POST /v1/rooms/data`: the rooms' data (each room's held current state,
//! and its initial timeline when asked) for a homeserver's per-room
//! answers, at a token.
//!
//! Owns: the request's JSON and the answer's. May not touch: anything but
//! [`Reads`](crate::reads::Reads).

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use roomcache_core::StreamToken;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{ApiError, ApiState};
use crate::model::RoomId;
use crate::reads::{RoomData, TimelineData, TimelineRequest, Wait};

/// The most events a timeline may ask (Synapse's own clients ask up to a
/// few hundred; the cache holds far fewer).
const MAX_TIMELINE_LIMIT: usize = 1000;

/// The request: the rooms, the token to wait for, the timeline asked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomDataRequest {
    rooms: Vec<String>,
    wait_for: Option<StreamToken>,
    timeout_ms: Option<u64>,
    timeline: Option<TimelineAsked>,
}

/// `timeline`: `limit` events (1 to 1000) at `at` (default `wait_for`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimelineAsked {
    limit: usize,
    at: Option<StreamToken>,
}

/// The types held, as answered.
#[derive(Serialize)]
struct Held<'a> {
    types: &'a BTreeSet<String>,
    wildcard_types: &'a BTreeSet<String>,
}

#[derive(Serialize)]
struct RoomDataAnswer<'a> {
    rooms: Map<String, Value>,
    held: Held<'a>,
    token: StreamToken,
    timed_out: bool,
}

fn room_json(data: RoomData, timeline: Option<TimelineData>) -> Value {
    let mut room = match data {
        RoomData::State(keys) => {
            let keys: Vec<[&str; 3]> = keys
                .iter()
                .map(|(t, k, e)| [t.as_str(), k.as_str(), e.as_str()])
                .collect();
            serde_json::json!({ "state": keys })
        }
        RoomData::Unknown(reason) => serde_json::json!({ "unknown": reason }),
    };
    if let Some(timeline) = timeline {
        room["timeline"] = timeline_json(timeline);
    }
    room
}

/// A timeline as answered: its events newest first as [event ID,
/// topological ordering, stream ordering, instance name, rejected], and
/// `limited`; or `{"unknown": reason}`.
fn timeline_json(timeline: TimelineData) -> Value {
    match timeline {
        TimelineData::Timeline(timeline) => {
            let events: Vec<Value> = timeline
                .events
                .iter()
                .map(|e| {
                    serde_json::json!([
                        e.event_id.as_str(),
                        e.topological_ordering,
                        e.stream_ordering,
                        &*e.instance_name,
                        e.rejected
                    ])
                })
                .collect();
            serde_json::json!({ "events": events, "limited": timeline.limited })
        }
        TimelineData::Unknown(reason) => serde_json::json!({ "unknown": reason }),
    }
}

#[tracing::instrument(name = "room_data", skip_all, fields(rooms = request.rooms.len()))]
pub(super) async fn post_room_data(
    state: web::Data<ApiState>,
    request: web::Json<RoomDataRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let rooms = request
        .rooms
        .iter()
        .map(|room| {
            RoomId::parse(room).map_err(|e| {
                ApiError::bad_request("M_INVALID_PARAM", format!("rooms: {room:?}: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let wait = Wait {
        target: request.wait_for,
        timeout: request.timeout_ms.map(Duration::from_millis),
    };
    let timeline = request
        .timeline
        .map(|asked| {
            if asked.limit == 0 || asked.limit > MAX_TIMELINE_LIMIT {
                return Err(ApiError::bad_request(
                    "M_INVALID_PARAM",
                    format!("timeline.limit: 1 to {MAX_TIMELINE_LIMIT}"),
                ));
            }
            Ok(TimelineRequest {
                limit: asked.limit,
                at: asked.at,
            })
        })
        .transpose()?;
    let answer = state
        .reads
        .room_data(&rooms, &wait, timeline.as_ref())
        .await?;
    let held = state.reads.held_state_types();
    let body = RoomDataAnswer {
        rooms: rooms
            .iter()
            .zip(answer.value)
            .map(|(room, (data, timeline))| (room.as_str().to_owned(), room_json(data, timeline)))
            .collect(),
        held: Held {
            types: &held.types,
            wildcard_types: &held.wildcard_types,
        },
        token: answer.token,
        timed_out: answer.timed_out,
    };
    Ok(super::json_answer(StatusCode::OK, &body))
}
