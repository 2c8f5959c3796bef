//! `POST /v1/embeddings`: HTTP in, an [`EmbeddingRequest`] to the request
//! layer, its answer out as OpenAI's embeddings list (floats or base64).
//!
//! [`EmbeddingRequest`]: crate::domain::EmbeddingRequest

use super::chat::{parse, with_headers};
use super::guard::read_body;
use super::{ApiError, AppState};
use crate::auth::Identity;
use crate::openai::ErrorBody;
use crate::openai::embedding::{self, EmbeddingsRequest};
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `POST /v1/embeddings`.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let wire: EmbeddingsRequest = parse(&bytes)?;
    let (req, format) = match wire.to_domain() {
        Ok(parsed) => parsed,
        Err(e) => {
            let body = ErrorBody::new(e.message, "invalid_request_error", "invalid_request")
                .with_param(e.param);
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    };
    let answer = state.gateway.embed(&identity, req).await?;
    let body = embedding::render(&answer.embeddings, format);
    Ok(with_headers(
        Json(body).into_response(),
        &answer.id,
        Some(answer.cost_usd),
        Some(answer.cache),
    ))
}
