//! The one place errors become HTTP: OpenAI-style bodies with the right status.

use crate::auth::{AuthError, BudgetExceeded};
use crate::domain::{Failure, UpstreamError};
use crate::gateway::GatewayError;
use crate::openai::ErrorBody;
use crate::pipeline::PipelineError;
use crate::ratelimit::Limited;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after_s: Option<u64>,
    /// The request field at fault, when one is.
    param: Option<String>,
    /// An upstream's refusal of the request, answered as it was: its error
    /// body, and the upstream named in `x-agentrouter-upstream`.
    upstream: Option<Box<UpstreamError>>,
}

impl ApiError {
    /// An error with explicit status, type and code.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after_s: None,
            param: None,
            upstream: None,
        }
    }

    /// The same, naming the request field at fault (`error.param`).
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The upstream's own answer to a request it refused (its 4xx status
    /// and error body): the client's mistake, so never a 5xx.
    pub fn upstream_refusal(refusal: &UpstreamError) -> Self {
        let status = StatusCode::from_u16(refusal.status)
            .ok()
            .filter(StatusCode::is_client_error)
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut e = Self::new(
            status,
            "invalid_request_error",
            "upstream_refused",
            refusal.message(),
        );
        e.upstream = Some(Box::new(refusal.clone()));
        e
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }

    /// 404: no such route, model or agent.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("request body is larger than the {limit}-byte limit"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Adds a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_s = Some(secs.max(1));
        self
    }

    /// 400: one field of the request is over a server limit.
    pub fn over_limit(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// 403: the key may not use this model or agent.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "model_not_allowed",
            message,
        )
    }

    /// 408: the client did not send its body in time.
    pub fn body_timeout(limit_ms: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!(
                "the request body did not arrive within {limit_ms} ms (server.body_read_timeout_ms)"
            ),
        )
    }

    /// 429: a gateway rate limit refused the request; 503 when the limit
    /// could not be checked (shared state lost, `fail-closed`).
    pub fn rate_limited(limited: &Limited) -> Self {
        if limited.unavailable {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "limit_unavailable",
                limited.message.clone(),
            )
            .with_retry_after(limited.retry_after_s());
        }
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            limited.message.clone(),
        )
        .with_retry_after(limited.retry_after_s())
    }

    /// 429: the key's daily budget is spent, or held by its requests in
    /// flight; 503 when it could not be checked (`fail-closed`).
    pub fn budget_exceeded(key: &str, b: &BudgetExceeded) -> Self {
        if let Some(why) = &b.unavailable {
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "limit_unavailable",
                format!("API key `{key}`: {why}; retry shortly"),
            )
            .with_retry_after(b.resets_in_s);
        }
        let message = if b.spent_usd >= b.budget_usd {
            format!(
                "daily budget exhausted for API key `{key}`: spent ${:.6} of ${:.6}; it resets at 00:00 UTC",
                b.spent_usd, b.budget_usd
            )
        } else {
            format!(
                "daily budget of API key `{key}` is held by its requests in flight: spent ${:.6} and reserved ${:.6} of ${:.6}; retry when they finish",
                b.spent_usd, b.reserved_usd, b.budget_usd
            )
        };
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "budget_exceeded",
            "budget_exceeded",
            message,
        )
        .with_retry_after(b.resets_in_s)
    }

    fn from_failure(failure: &Failure, message: String) -> Self {
        let mut e = match failure {
            Failure::Timeout => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "timeout",
                message,
            ),
            Failure::RateLimited(ms) => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limited",
                    message,
                );
                e.retry_after_s = Some(
                    ms.map(|ms| u64::from(ms).div_ceil(1000))
                        .unwrap_or(1)
                        .max(1),
                );
                e
            }
            Failure::TokenLimitExceeded => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
                message,
            ),
            Failure::Rejected(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "content_rejected",
                message,
            ),
            Failure::BudgetExceeded => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient_quota",
                "budget_exceeded",
                message,
            ),
            Failure::Denied(_) => {
                Self::new(StatusCode::FORBIDDEN, "permission_error", "denied", message)
            }
            Failure::Internal(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "agent_error",
                message,
            ),
            Failure::ClientError(refusal) => Self::upstream_refusal(refusal),
            Failure::UpstreamStatus(_) | Failure::InvalidResponse(_) | Failure::CircuitOpen(_) => {
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_error",
                    "upstream_failed",
                    message,
                )
            }
        };
        e.message = e.message.trim().to_string();
        e
    }
}

impl ApiError {
    /// 503 with `Retry-After: 1`: a bulkhead is full. Shedding load fast
    /// beats queueing it; the client should come back in a moment.
    pub fn overloaded(message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            message,
        );
        e.retry_after_s = Some(1);
        e
    }
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        let message = e.to_string();
        match &e {
            PipelineError::UnknownModel(_) => Self::not_found("model_not_found", message),
            PipelineError::UnknownAgent(_) => Self::not_found("agent_not_found", message),
            PipelineError::InvalidRequest(_) => Self::bad_request(message),
            PipelineError::Rejected { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                "content_rejected",
                message,
            ),
            // No instance could be admitted: load, not a plugin fault.
            PipelineError::Plugin(p) if p.is_admission() => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "plugin_capacity",
                    message,
                );
                e.retry_after_s = Some(1);
                e
            }
            PipelineError::Rewrite { .. } | PipelineError::Decision { .. } => {
                tracing::error!(error = %e, "a plugin decision failed the request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "plugin_error",
                    message,
                )
            }
            PipelineError::Plugin(p) => {
                tracing::error!(error = %p, "plugin failure failed the request");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "plugin_error",
                    message,
                )
            }
            PipelineError::Overloaded { .. } => Self::overloaded(message),
            PipelineError::Upstream { failure, .. }
            | PipelineError::Agent { failure, .. }
            | PipelineError::GaveUp { failure, .. } => Self::from_failure(failure, message),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Rules(v) => Self::over_limit(v.limit.code(), v.message),
            GatewayError::NotAllowed(n) => Self::forbidden(n.to_string()),
            GatewayError::BudgetExceeded { key, budget } => Self::budget_exceeded(&key, &budget),
            GatewayError::RateLimited(limited) => Self::rate_limited(&limited),
            GatewayError::Pipeline(p) => p.into(),
            GatewayError::BadRequest { message, param } => {
                Self::bad_request(message).with_param(param)
            }
            GatewayError::ResponseNotFound { previous: true, .. } => {
                Self::not_found("previous_response_not_found", e.to_string())
                    .with_param("previous_response_id")
            }
            GatewayError::ResponseNotFound { .. } => {
                Self::not_found("response_not_found", e.to_string())
            }
            GatewayError::Store(s) => {
                tracing::error!(error = %s, "response store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "store_error",
                    "the response store failed",
                )
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::Missing => "missing_api_key",
            AuthError::Malformed => "invalid_authorization_header",
            AuthError::Revoked(_) => "revoked_api_key",
            AuthError::GraceEnded(_) => "expired_api_key",
            AuthError::Unknown => "invalid_api_key",
            _ => {
                tracing::error!(error = %e, "key registry failure");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "auth_error",
                    "the key registry failed",
                );
            }
        };
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            code,
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = match &self.upstream {
            Some(refusal) => {
                let mut response = (self.status, Json(refusal.body.clone())).into_response();
                if let Ok(name) = HeaderValue::from_str(&refusal.upstream) {
                    response
                        .headers_mut()
                        .insert("x-agentrouter-upstream", name);
                }
                response
            }
            None => {
                let mut body = ErrorBody::new(self.message, self.kind, self.code);
                body.error.param = self.param;
                (self.status, Json(body)).into_response()
            }
        };
        if let Some(secs) = self.retry_after_s
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
