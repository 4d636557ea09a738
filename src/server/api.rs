//! The router: the page at `/`, the API under `/api` (token-checked when the server has one).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;

use super::catalog::{self, Catalog};
use super::error::ApiError;
use super::jobs::{Jobs, SubmitError};
use super::upload::{self, Submission};
use super::{openapi, ServeConfig};
use crate::engine::{
    self, ArbitraryStyle, FeatureTransform, GatysConfig, Job, Method, NetworkStyle, StyleImage,
};
use crate::recipe::{Recipe, RecipeStyle};

/// Feather of an uploaded mask's edge when the form gives none, in result pixels (the CLI's).
const DEFAULT_FEATHER: f32 = 16.0;

const PAGE: &str = include_str!("page.html");

pub struct ServerState {
    pub config: ServeConfig,
    pub catalog: Catalog,
    pub jobs: Arc<Jobs>,
    vgg: PathBuf,
}

impl ServerState {
    pub fn start(
        config: ServeConfig,
        catalog: Catalog,
        vgg: PathBuf,
        engine: engine::Engine,
        results: tempfile::TempDir,
    ) -> Arc<Self> {
        let jobs = Jobs::start(engine, results, config.queue, config.keep);
        Arc::new(Self {
            config,
            catalog,
            jobs,
            vgg,
        })
    }
}

type Shared = State<Arc<ServerState>>;

pub fn router(state: Arc<ServerState>) -> Router {
    let api = Router::new()
        .route("/jobs", axum::routing::post(create_job))
        .route("/jobs/{id}", get(job_status).delete(cancel_job))
        .route("/jobs/{id}/result", get(job_result))
        .route("/jobs/{id}/preview", get(job_preview))
        .route("/jobs/{id}/events", get(job_events))
        .route("/styles", get(list_styles))
        .route("/styles/{id}/thumbnail", get(style_thumbnail))
        .route("/health", get(health))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        // The description is public: it says how to authenticate.
        .route("/openapi.json", get(openapi_document))
        .fallback(|| async { ApiError::not_found("no such API endpoint (see /api/openapi.json)") });
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .nest("/api", api)
        .layer(DefaultBodyLimit::max(state.config.max_upload_bytes))
        .with_state(state)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Equal in time whatever the first differing byte, so the token cannot be guessed byte by byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(state): Shared,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let given = bearer.or(query.token.as_deref());
    match given {
        Some(token) if same_secret(token.as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "wrong token").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "token_required",
            "this server needs a token: `Authorization: Bearer TOKEN` or `?token=TOKEN`",
        )
        .into_response(),
    }
}

async fn openapi_document() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn health(State(state): Shared) -> Json<serde_json::Value> {
    Json(json!({
        "live_jobs": state.jobs.live(),
        "queue": state.jobs.capacity(),
        "styles": state.catalog.styles.len(),
    }))
}

async fn list_styles(State(state): Shared) -> Json<serde_json::Value> {
    Json(json!({
        "styles": state.catalog.styles,
        "methods": ["network", "arbitrary", "optimize"],
        "limits": {
            "max_upload_bytes": state.config.max_upload_bytes,
            "max_pixels": state.config.max_pixels,
            "max_side": state.config.max_side,
            "max_steps": state.config.max_steps,
        },
    }))
}

async fn style_thumbnail(State(state): Shared, Path(id): Path<String>) -> Response {
    let Some(style) = state.catalog.get(&id) else {
        return ApiError::not_found(format!("no style `{id}` (see /api/styles)")).into_response();
    };
    let Some((path, mime)) = catalog::thumbnail(style) else {
        return ApiError::not_found(format!("style `{id}` has no thumbnail")).into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "max-age=3600"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot read the thumbnail: {e}")).into_response(),
    }
}

/// How many bytes past the limit an oversized upload is still read (and thrown away) so that its
/// 413 reaches the client: closing a socket with unread bytes resets it, and a client still
/// writing sees "broken pipe" instead of the answer (seen in CI with a 3 MiB upload over 1 MiB).
/// Past this much the connection is dropped; the upload timeout bounds the time as well.
const OVERSIZE_DRAIN_BYTES: usize = 256 << 20;

/// Reads a request body of at most `limit` bytes. A larger one is drained (up to
/// [`OVERSIZE_DRAIN_BYTES`] more) and refused with 413.
async fn read_whole_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_multipart",
                format!("the upload was cut off: {e}"),
            )
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            kept.extend_from_slice(&chunk);
        } else {
            kept = Vec::new();
            if seen > limit.saturating_add(OVERSIZE_DRAIN_BYTES) {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(format!(
            "the upload is larger than this server takes ({} MB)",
            limit >> 20
        )));
    }
    Ok(kept.into())
}

async fn create_job(State(state): Shared, request: Request) -> Result<Response, ApiError> {
    let timeout = state.config.upload_timeout;
    let limit = state.config.max_upload_bytes;
    let (parts, body) = request.into_parts();
    // The whole body first, within the time and size limits: a form parser stops at the closing
    // boundary, and a connection closed with bytes still unread is reset, which can take the
    // response with it before the client reads it.
    let bytes = tokio::time::timeout(timeout, read_whole_body(body, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_timeout",
                format!(
                    "the upload did not arrive within {} s",
                    timeout.as_secs_f64()
                ),
            )
        })??;
    let request = Request::from_parts(parts, Body::from(bytes));
    let multipart =
        Multipart::from_request(request, &())
            .await
            .map_err(|rejection: MultipartRejection| {
                ApiError::new(
                    rejection.status(),
                    "bad_multipart",
                    format!(
                        "POST /api/jobs takes a multipart/form-data body: {}",
                        rejection.body_text()
                    ),
                )
            })?;
    let form = upload::read(multipart).await?;
    let building = state.clone();
    let (job, recipe) = tokio::task::spawn_blocking(move || build_job(&building, form))
        .await
        .map_err(|e| ApiError::internal(format!("the upload could not be read: {e}")))??;
    let view = state.jobs.submit(job, recipe).map_err(|e| match e {
        SubmitError::QueueFull {
            live,
            retry_after_s,
        } => ApiError {
            retry_after_s: Some(retry_after_s),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!("{live} jobs are waiting or running, the most this server queues; try again in {retry_after_s} s"),
            )
        },
        SubmitError::EngineStopped(message) => ApiError::internal(message),
    })?;
    let location = format!("/api/jobs/{}", view.id);
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

fn bad_setting(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad_setting", message)
}

/// The engine job a form describes, and its recipe.
fn build_job(state: &ServerState, form: Submission) -> Result<(Job, Recipe), ApiError> {
    let config = &state.config;
    let photo = form
        .photo
        .ok_or_else(|| bad_setting("the form needs a `photo` file"))?;
    upload::check_header(&photo, "photo", config.max_pixels)?;
    if let Some(mask) = &form.mask {
        upload::check_header(mask, "mask", config.max_pixels)?;
    }
    if let Some(painting) = &form.painting {
        upload::check_header(painting, "painting", config.max_pixels)?;
    }
    let style = match &form.style {
        Some(id) => Some(state.catalog.get(id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_style",
                format!("no style `{id}`; GET /api/styles lists them"),
            )
        })?),
        None => None,
    };
    if style.is_some() && form.painting.is_some() {
        return Err(bad_setting(
            "give either `style` (a gallery style) or a `painting`, not both",
        ));
    }
    let method = match form.method.as_deref() {
        Some(m @ ("network" | "arbitrary" | "optimize")) => m,
        Some(other) => {
            return Err(bad_setting(format!(
                "unknown method `{other}`: network, arbitrary or optimize"
            )))
        }
        None if form.painting.is_some() => "arbitrary",
        None => match style {
            Some(s) => s.methods.first().copied().unwrap_or("network"),
            None => "network",
        },
    };
    let strength = form.strength.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&strength) {
        return Err(bad_setting(format!(
            "strength must be between 0 and 1, got {strength}"
        )));
    }
    if let Some(size) = form.size {
        if !(16..=config.max_side).contains(&size) {
            return Err(bad_setting(format!(
                "size must be between 16 and {} pixels, got {size}",
                config.max_side
            )));
        }
    }
    let content = upload::decode(&photo, "photo")?;
    // The result's longer side: as asked, else the photo's, never over the server's limit.
    let side = form
        .size
        .unwrap_or_else(|| content.width().max(content.height()).min(config.max_side));
    let mut recipe = Recipe {
        method: method.into(),
        strength,
        preserve_color: form.preserve_color,
        size: side,
        photo: Some(PathBuf::from(&photo.name)),
        ..Recipe::default()
    };
    let painting = |what: &str| -> Result<Arc<image::RgbImage>, ApiError> {
        if let Some(upload) = &form.painting {
            return Ok(Arc::new(upload::decode(upload, "painting")?));
        }
        match style.and_then(|s| s.entry.image.as_ref()) {
            Some(path) => crate::imaging::load_rgb(path)
                .map(Arc::new)
                .map_err(|e| ApiError::internal(e.to_string())),
            None => Err(bad_setting(match style {
                Some(s) => format!(
                    "style `{}` is a trained network: use method `network`, or upload a \
                     `painting` for the {what} method",
                    s.id
                ),
                None => format!("the {what} method needs a `painting` file or a painting style"),
            })),
        }
    };
    let method = match method {
        "network" => {
            let style = style.ok_or_else(|| {
                bad_setting("the network method needs a `style` from GET /api/styles")
            })?;
            let model = style.entry.model.clone().ok_or_else(|| {
                bad_setting(format!(
                    "style `{}` is a painting, not a trained network: use method `arbitrary` \
                     or `optimize`",
                    style.id
                ))
            })?;
            let mix = style.entry.condition.as_ref().map(|c| c.mix.clone());
            recipe.model = Some(PathBuf::from(&style.id));
            recipe.mix = mix.clone();
            Method::Network {
                styles: vec![NetworkStyle::new(model, mix)],
                size: Some(side),
                preserve_color: form.preserve_color,
                stroke: form.stroke.unwrap_or(1.0),
            }
        }
        "arbitrary" => {
            let image = painting("arbitrary")?;
            recipe.styles = vec![recipe_style(&form.painting, style)];
            let transform = match form.transform.as_deref() {
                None | Some("adain") => FeatureTransform::Adain,
                Some("wct") => FeatureTransform::Wct,
                Some(other) => {
                    return Err(bad_setting(format!(
                        "unknown transform `{other}`: adain or wct"
                    )))
                }
            };
            Method::Arbitrary {
                vgg: PathBuf::from(engine::BUNDLED_VGG),
                decoders: None,
                styles: vec![ArbitraryStyle {
                    works: vec![image],
                    weight: 1.0,
                }],
                transform,
                size: Some(side),
                style_side: engine::DEFAULT_STYLE_SIDE,
                preserve_color: form.preserve_color,
            }
        }
        _ => {
            let image = painting("optimize")?;
            recipe.styles = vec![recipe_style(&form.painting, style)];
            let steps = form.steps.unwrap_or(100);
            if !(1..=config.max_steps).contains(&steps) {
                return Err(bad_setting(format!(
                    "steps must be between 1 and {}, got {steps}",
                    config.max_steps
                )));
            }
            let side = form.size.unwrap_or_else(|| side.min(512));
            let defaults = GatysConfig::default();
            let gatys = GatysConfig {
                size: side.min(engine::MAX_OPTIMIZE_SIDE),
                steps,
                preserve_color: form.preserve_color,
                seed: form.seed.unwrap_or(0),
                // A picture every few steps streams to the page.
                preview_every: 5,
                ..defaults
            };
            gatys.validate().map_err(|e| bad_setting(e.to_string()))?;
            recipe.size = gatys.size;
            recipe.steps = steps;
            recipe.seed = gatys.seed;
            recipe.style_layers = gatys.style_layers.clone();
            recipe.content_weight = gatys.content_weight;
            recipe.style_weight = gatys.style_weight;
            recipe.tv_weight = gatys.tv_weight;
            Method::Optimize {
                vgg: state.vgg.clone(),
                styles: vec![StyleImage { image, weight: 1.0 }],
                config: gatys,
            }
        }
    };
    let feather = form.feather.unwrap_or(DEFAULT_FEATHER);
    if !(0.0..=engine::MAX_FEATHER).contains(&feather) {
        return Err(bad_setting(format!(
            "feather must be between 0 and {} pixels, got {feather}",
            engine::MAX_FEATHER
        )));
    }
    let regions = match &form.mask {
        Some(upload) => {
            let mut regions =
                engine::Regions::single(Arc::new(upload::decode_mask(upload)?), feather);
            regions.labels = vec![upload.name.clone()];
            Some(regions)
        }
        None => None,
    };
    Ok((
        Job {
            content: Arc::new(content),
            method,
            strength,
            regions,
        },
        recipe,
    ))
}

/// Uploaded paintings are named by their file name, gallery ones by their id.
fn recipe_style(
    painting: &Option<upload::Upload>,
    style: Option<&catalog::CatalogStyle>,
) -> RecipeStyle {
    let path = match (painting, style) {
        (Some(upload), _) => PathBuf::from(&upload.name),
        (None, Some(style)) => PathBuf::from(&style.id),
        (None, None) => PathBuf::new(),
    };
    RecipeStyle { path, weight: 1.0 }
}

fn unknown_job(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no job `{id}`: it never existed, or its result expired and was deleted"
    ))
}

async fn job_status(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = state.jobs.view(&id).ok_or_else(|| unknown_job(&id))?;
    Ok(Json(view).into_response())
}

async fn cancel_job(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = state
        .jobs
        .cancel_or_delete(&id)
        .ok_or_else(|| unknown_job(&id))?;
    Ok(Json(view).into_response())
}

async fn job_result(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let path = match state.jobs.result_path(&id) {
        None => return Err(unknown_job(&id)),
        Some(Err(job_state)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_finished",
                format!(
                    "job `{id}` is {}: it has no result{}",
                    job_state.name(),
                    if job_state.is_terminal() { "" } else { " yet" }
                ),
            ))
        }
        Some(Ok(path)) => path,
    };
    let bytes = tokio::fs::read(&path).await.map_err(|_| unknown_job(&id))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"atelier-{id}.png\""),
            ),
        ],
        Body::from(bytes),
    )
        .into_response())
}

async fn job_preview(State(state): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.jobs.preview(&id) {
        None => Err(unknown_job(&id)),
        Some(None) => Err(ApiError::not_found(format!(
            "job `{id}` has no intermediate picture (only the optimisation makes them)"
        ))),
        Some(Some(bytes)) => Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response()),
    }
}

/// Server-sent events: one `job` event with the job's view at each change, the last when it
/// ends.
async fn job_events(
    State(state): Shared,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let receiver = state.jobs.subscribe(&id).ok_or_else(|| unknown_job(&id))?;
    // State: the receiver, whether the current value was sent, whether the end was sent.
    let events = stream::unfold(
        (receiver, false, false),
        |(mut rx, sent, done)| async move {
            if done {
                return None;
            }
            if sent && rx.changed().await.is_err() {
                // The job was deleted (expired or DELETE): the stream ends.
                return None;
            }
            let view = rx.borrow_and_update().clone();
            let terminal = view.state.is_terminal();
            let event = SseEvent::default()
                .event("job")
                .json_data(&view)
                .unwrap_or_else(|_| SseEvent::default().event("job").data("{}"));
            Some((Ok(event), (rx, true, terminal)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
