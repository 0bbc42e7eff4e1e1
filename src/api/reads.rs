//! The read endpoints: a room, a user's snapshot in a room, all of a
//! user's rooms, room lists, positions.
//!
//! Owns: their paths, query parameters and answers. Every answer carries
//! the token it is consistent with, `timed_out`, and `fallback: true` when
//! rows of it were computed by the reads' fallback (absent otherwise). May
//! not touch: anything but [`Reads`].

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use roomcache_core::StreamToken;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use crate::model::{RoomId, UserId};
use crate::reads::{Answer, PageRequest, Wait};
use crate::room_list::RoomListRequest;

/// Query parameters every read accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReadParams {
    /// Answer only once the cache's token covers this token (or at the timeout).
    wait_for: Option<StreamToken>,
    /// How long to wait for `wait_for`, in milliseconds.
    timeout_ms: Option<u64>,
}

impl ReadParams {
    fn wait(&self) -> Wait {
        wait(self.wait_for.clone(), self.timeout_ms)
    }
}

fn wait(target: Option<StreamToken>, timeout_ms: Option<u64>) -> Wait {
    Wait {
        target,
        timeout: timeout_ms.map(Duration::from_millis),
    }
}

/// The JSON of every read answer: the value under its name, then the
/// token, `timed_out` and the fallback flag.
#[derive(Debug, Serialize)]
struct ReadAnswer<T: Serialize> {
    #[serde(flatten)]
    value: T,
    token: StreamToken,
    timed_out: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    fallback: bool,
}

fn respond<T, V: Serialize>(answer: Answer<T>, name: impl FnOnce(T) -> V) -> HttpResponse {
    super::json_answer(
        StatusCode::OK,
        &ReadAnswer {
            value: name(answer.value),
            token: answer.token,
            timed_out: answer.timed_out,
            fallback: answer.fallback,
        },
    )
}

#[derive(Serialize)]
struct RoomField<T> {
    room: T,
}

#[derive(Serialize)]
struct SnapshotField<T> {
    snapshot: T,
}

fn parse_room(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| ApiError::bad_request("M_INVALID_PARAM", e.to_string()))
}

fn parse_user(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::bad_request("M_INVALID_PARAM", e.to_string()))
}

#[tracing::instrument(name = "get_room", skip_all, fields(room_id = %path.as_str()))]
pub(super) async fn get_room(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    params: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let room_id = parse_room(&path)?;
    let answer = state.reads.room(&room_id, &params.wait()).await?;
    if answer.value.is_none() {
        return Err(ApiError::not_found(format!(
            "no joined-room row for {room_id}"
        )));
    }
    Ok(respond(answer, |room| RoomField { room }))
}

#[tracing::instrument(name = "get_user_room", skip_all, fields(path = ?path.as_ref()))]
pub(super) async fn get_user_room(
    state: web::Data<ApiState>,
    path: web::Path<(String, String)>,
    params: web::Query<ReadParams>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path.0)?;
    let room_id = parse_room(&path.1)?;
    let answer = state
        .reads
        .snapshot(&user_id, &room_id, &params.wait())
        .await?;
    if answer.value.is_none() {
        return Err(ApiError::not_found(format!(
            "no snapshot for {user_id} in {room_id}"
        )));
    }
    Ok(respond(answer, |snapshot| SnapshotField { snapshot }))
}

/// Query parameters of `GET /v1/users/{user_id}/rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserRoomsParams {
    wait_for: Option<StreamToken>,
    timeout_ms: Option<u64>,
    /// Rooms after this room ID (the previous page's `next_from`).
    from: Option<String>,
    /// Most rooms in the page (at most `max_user_rooms_page`, the default).
    limit: Option<usize>,
}

#[derive(Serialize)]
struct RoomsPageField {
    rooms: Vec<crate::model::MembershipSnapshot>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_from: Option<RoomId>,
}

#[tracing::instrument(name = "get_user_rooms", skip_all, fields(user_id = %path.as_str()))]
pub(super) async fn get_user_rooms(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    params: web::Query<UserRoomsParams>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path)?;
    let params = params.into_inner();
    let page = PageRequest {
        from: params.from.as_deref().map(parse_room).transpose()?,
        limit: params.limit,
    };
    let wait = wait(params.wait_for, params.timeout_ms);
    let answer = state.reads.user_rooms(&user_id, &page, &wait).await?;
    if answer.value.rooms.len() > crate::memory::LARGE_ANSWER_ROOMS {
        crate::memory::ask_for_release();
    }
    Ok(respond(answer, |page| RoomsPageField {
        rooms: page.rooms,
        next_from: page.next_from,
    }))
}

/// `POST /v1/users/{user_id}/room_list`: the user's room lists (spec §6).
#[tracing::instrument(name = "room_list", skip_all, fields(user_id = %path.as_str()))]
pub(super) async fn post_room_list(
    state: web::Data<ApiState>,
    path: web::Path<String>,
    request: web::Json<RoomListRequest>,
) -> Result<HttpResponse, ApiError> {
    let user_id = parse_user(&path)?;
    let request = request.into_inner();
    request.validate()?;
    let wait = wait(request.wait_for.clone(), request.timeout_ms);
    let answer = state.reads.room_lists(&user_id, &request, &wait).await?;
    let rooms: usize = answer
        .value
        .lists
        .values()
        .map(|list| {
            list.ranges.iter().map(|r| r.rooms.len()).sum::<usize>()
                + list.settled.as_ref().map_or(0, Vec::len)
                + list.unsettled.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if rooms > crate::memory::LARGE_ANSWER_ROOMS {
        crate::memory::ask_for_release();
    }
    Ok(respond(answer, |lists| lists))
}

/// Each configured writer's durable position: every row of the writer at
/// or below it is applied and committed, and rows at or below it are
/// ignored when sent again. A writer resumes by replaying from there.
pub(super) async fn get_positions(state: web::Data<ApiState>) -> HttpResponse {
    let (positions, token) = state.reads.positions();
    super::json_answer(
        StatusCode::OK,
        &serde_json::json!({
            "positions": positions,
            "token": token,
        }),
    )
}
