//! The back-office: a JSON API under `/api`, its OpenAPI document (`/api/openapi.json`) and the
//! web page (`/`), served on their own listener (`TIDEGATE_ADMIN_ADDR`) only when
//! `TIDEGATE_ADMIN_TOKEN` is set. Every API request needs `Authorization: Bearer <token>`,
//! compared in constant time; there are no cookies, so no CSRF surface. Inputs are validated
//! into 4xx answers with a message; answers never carry connection strings or secrets. The
//! page and the document hold no data, so they are served to anyone who can reach the port.
//! Every change made through it is logged at info, as an audit trail.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use subtle::ConstantTimeEq;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::queue::Queue;
use crate::runs::Runs;
use crate::schedule::{Planner, Schedule};

mod error;
mod queues;
mod runs;
mod schedule;

pub use error::ApiError;
use error::{ErrorBody, bad_request};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub token: String,
    /// The name of the database's write budget the queue shares.
    pub budget: String,
    pub queue: Queue,
    pub runs: Runs,
    /// The enabled daily application's planner; runs cannot be started without one.
    pub planner: Option<Planner>,
    /// `TIDEGATE_SCHEDULE` (`None`: off), its timezone and catch-up window.
    pub schedule: Option<Schedule>,
    pub timezone: chrono_tz::Tz,
    pub catch_up: Duration,
    /// The database's circuit, as this process finds it.
    pub database: crate::circuit::Circuit,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidegate back-office",
        description = "Queues, jobs, runs and load control of a tidegate deployment. Every route needs `Authorization: Bearer <TIDEGATE_ADMIN_TOKEN>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}

/// The API's routes, each with its part of the document: one list for both.
fn api() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(queues::queues))
        .routes(routes!(queues::pause))
        .routes(routes!(queues::resume))
        .routes(routes!(queues::control))
        .routes(routes!(queues::jobs))
        .routes(routes!(queues::job, queues::remove))
        .routes(routes!(queues::retry))
        .routes(routes!(queues::promote))
        .routes(routes!(queues::retry_failed))
        .routes(routes!(runs::runs, runs::start_run))
        .routes(routes!(runs::run))
        .routes(routes!(schedule::schedule))
}

/// The OpenAPI document `/api/openapi.json` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

pub fn router(state: AdminState) -> Router {
    let (api, doc) = api().split_for_parts();
    let doc = doc.to_pretty_json().unwrap_or_default();
    Router::new()
        .merge(api.layer(middleware::from_fn_with_state(state.clone(), authorize)))
        .route(
            "/api/openapi.json",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) }),
        )
        .route("/", get(page))
        .with_state(state)
        // Outermost, so that an oversized body gets its 413 whatever the route or the token.
        .layer(middleware::from_fn(limit_body))
}

/// The largest request body the API takes. Its only body (`POST /api/runs`) is a few dozen
/// bytes.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// How much of an oversized body is read and dropped before the 413 is sent, and for how long.
/// Before, axum's own limit (2 MB) was hit inside the `Json` extractor, whose rejection this
/// API answered as a 400, and the server then closed the connection with the rest of the body
/// unread. A TCP close with unread data sends RST: a client still sending (a chunked upload;
/// curl once `100 Continue` had asked for the body) got a reset instead of the answer. Past
/// these bounds the connection is closed anyway, so that draining cannot become a way to keep
/// the server busy.
const DRAIN_MAX: u64 = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the body up to [`MAX_BODY`] before the route runs; a longer one is `413` with the
/// API's JSON error, declared (`Content-Length`) or found while reading (chunked).
async fn limit_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    if declared.is_none_or(|n| n <= MAX_BODY as u64) {
        let mut kept = Vec::new();
        loop {
            match stream.next().await {
                None => {
                    let request = Request::from_parts(parts, Body::from(kept));
                    return next.run(request).await;
                }
                Some(Ok(chunk)) => {
                    read += chunk.len() as u64;
                    if read > MAX_BODY as u64 {
                        break;
                    }
                    kept.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return bad_request(format!("body: {e}")).into_response(),
            }
        }
    }
    // A client waiting for `100 Continue` has sent nothing yet: it reads the 413 and sends
    // nothing, and reading would be what asks it to send.
    let waits = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !waits && declared.is_none_or(|n| n <= DRAIN_MAX) {
        let drained = async {
            while read <= DRAIN_MAX {
                match stream.next().await {
                    Some(Ok(chunk)) => read += chunk.len() as u64,
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }
    ApiError(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request body is larger than the API takes ({} KiB)",
            MAX_BODY / 1024
        ),
    )
    .into_response()
}

/// The page is one file with its script and style inline: nothing to build or fetch. The
/// policy lets it talk to this origin only and not be framed.
async fn page() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(include_str!("admin.html")),
    )
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(state.token.as_bytes())) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(ErrorBody {
                error: "missing or wrong bearer token".into(),
            }),
        )
            .into_response()
    }
}
