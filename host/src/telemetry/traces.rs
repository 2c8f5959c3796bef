//! Log and trace setup: one `tracing` subscriber with a JSON (or pretty)
//! log layer and, when configured, an OpenTelemetry layer exporting spans
//! over OTLP/HTTP; W3C `traceparent` in and out.
//!
//! Without `telemetry.otlp_endpoint` no OpenTelemetry layer is installed at
//! all, so spans cost what plain `tracing` spans cost. With it, a
//! parent-based ratio sampler decides once per trace; unsampled spans stay
//! unbuilt builders in `tracing-opentelemetry` and are never exported.
//!
//! The exporter posts through the gateway's own `reqwest` client on the
//! gateway's tokio runtime (see [`TokioHttpClient`]): the batch processor
//! runs on its own thread, and borrowing the runtime avoids a second HTTP
//! stack and a second TLS configuration.

use super::config::TelemetryConfig;
use super::log_buffer::{LogBuffer, LogBufferGuard};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::fmt;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How long one OTLP export may take before it is abandoned.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default: what log pipelines ingest).
    #[default]
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// Why trace export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused its configuration.
    #[error("telemetry.otlp_endpoint: cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The sampler for `sample_rate`: a caller's `traceparent` decides for its
/// trace; new traces are kept with probability `sample_rate`.
pub fn sampler(sample_rate: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(sample_rate)))
}

/// The OTLP traces URL for a configured collector endpoint.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The tracer provider exporting to `config.otlp_endpoint` in batches, or
/// `None` when no endpoint is configured. Must be called inside the tokio
/// runtime that will carry the exports.
pub fn tracer_provider(
    config: &TelemetryConfig,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = &config.otlp_endpoint else {
        return Ok(None);
    };
    let client = TokioHttpClient {
        client: crate::net::http_client(),
        runtime: tokio::runtime::Handle::current(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(config.sample_rate))
            .with_resource(resource)
            .build(),
    ))
}

/// The subscriber every command logs through: `filter`, then log lines in
/// `format` written to `writer`, then spans to `provider` if there is one.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    provider: Option<&SdkTracerProvider>,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = tracing_subscriber::fmt::layer().with_writer(writer);
    let logs = match format {
        // Spans keep only their trace id for log lines (see span_fields).
        LogFormat::Json => logs
            .json()
            .fmt_fields(super::span_fields::TraceIdOnly)
            .boxed(),
        LogFormat::Pretty => logs.boxed(),
    };
    let spans = provider.map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("agentrouter"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
    });
    Box::new(Registry::default().with(filter).with(logs).with(spans))
}

/// Keeps trace export (and the log writer thread, for `serve`) running;
/// dropping it flushes the spans still queued, then the log lines.
#[derive(Default)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// Dropped after the provider's shutdown, so its warnings are written.
    logs: Option<LogBufferGuard>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("provider", &self.provider)
            .field("buffered_logs", &self.logs.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// A guard for `provider`.
    pub fn new(provider: Option<SdkTracerProvider>) -> Self {
        Self {
            provider,
            logs: None,
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// Installs the process-wide subscriber (logs written straight to stderr,
/// spans to the configured collector), for commands whose log lines
/// interleave with what they print. Call inside the tokio runtime, once.
pub fn init(format: LogFormat, config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    Ok(TelemetryGuard::new(install(
        format,
        config,
        std::io::stderr,
    )?))
}

/// As [`init`], for `serve`: log lines go to stderr through a
/// [`LogBuffer`], written by a thread of their own every
/// [`WRITE_INTERVAL`](super::log_buffer::WRITE_INTERVAL) instead of one
/// syscall per line on the request's thread.
pub fn init_serving(
    format: LogFormat,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let (writer, logs) = LogBuffer::stderr();
    Ok(TelemetryGuard {
        provider: install(format, config, writer)?,
        logs: Some(logs),
    })
}

/// Sets the global subscriber, with lines written to `writer`; returns the
/// trace provider, if one is configured, for the guard to shut down.
fn install<W>(
    format: LogFormat,
    config: &TelemetryConfig,
    writer: W,
) -> Result<Option<SdkTracerProvider>, TelemetryError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = tracer_provider(config)?;
    let _ = tracing::subscriber::set_global_default(subscriber(
        format,
        filter,
        writer,
        provider.as_ref(),
    ));
    Ok(provider)
}

struct HeaderRead<'a>(&'a HeaderMap);

impl Extractor for HeaderRead<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderWrite<'a>(&'a mut HeaderMap);

impl Injector for HeaderWrite<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Makes `span` a child of the W3C `traceparent` in `headers`, if any. A
/// no-op without the OpenTelemetry layer.
pub fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&HeaderRead(headers));
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's W3C `traceparent` (and `tracestate`) into
/// `headers`; nothing when no trace is being recorded.
pub fn inject_current(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderWrite(headers));
    }
}

/// The trace id of `span` as 32 hex digits, when the OpenTelemetry layer
/// records it.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id of a W3C `traceparent` header (`00-<trace>-<span>-<flags>`).
pub fn remote_trace_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32
        && trace.bytes().all(|b| b.is_ascii_hexdigit())
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

/// An OTLP HTTP client that runs each export on the gateway's tokio
/// runtime with the gateway's pooled `reqwest` client.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttpClient {
    async fn send_bytes(
        &self,
        request: axum::http::Request<Bytes>,
    ) -> Result<axum::http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let export = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut out = axum::http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        });
        Ok(export.await??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_once() {
        assert_eq!(
            traces_url("http://c:4318"),
            "http://c:4318/v1/traces".to_string()
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn remote_trace_id_reads_a_valid_traceparent_only() {
        let mut h = HeaderMap::new();
        assert_eq!(remote_trace_id(&h), None);
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            remote_trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        );
        assert_eq!(remote_trace_id(&h), None);
    }

    #[test]
    fn new_traces_follow_the_ratio_and_remote_parents_keep_their_decision() {
        use opentelemetry::trace::{
            Span as _, SpanContext, SpanId, TraceFlags, TraceId, TraceState, Tracer as _,
        };
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler(0.0))
            .build();
        let tracer = provider.tracer("test");
        let root = tracer.start("root");
        assert!(!root.span_context().is_sampled());
        let remote = |flags| {
            opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                true,
                TraceState::default(),
            ))
        };
        let child = tracer.start_with_context("child", &remote(TraceFlags::SAMPLED));
        assert!(child.span_context().is_sampled());
        assert_eq!(child.span_context().trace_id(), TraceId::from(7u128));
        let child = tracer.start_with_context("child", &remote(TraceFlags::default()));
        assert!(!child.span_context().is_sampled());
    }

    /// A loopback OTLP receiver: the exporter's HTTP client really posts
    /// protobuf to `/v1/traces` on the runtime it was built on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_spans_to_an_otlp_http_collector() {
        use opentelemetry::trace::{Span as _, Tracer as _};
        use std::sync::{Arc, Mutex};
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        let collector = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let record = record.clone();
                async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    record.lock().unwrap().push((kind, body.len()));
                    ""
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, collector).await });
        let config = TelemetryConfig {
            otlp_endpoint: Some(format!("http://{addr}")),
            ..Default::default()
        };
        let provider = tracer_provider(&config).unwrap().unwrap();
        let mut span = provider.tracer("test").start("exported");
        span.end();
        // Flushing blocks until the batch is posted, so off the runtime.
        let flushed = tokio::task::spawn_blocking(move || {
            let result = provider.force_flush();
            let _ = provider.shutdown();
            result
        })
        .await
        .unwrap();
        flushed.unwrap();
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert_eq!(received[0].0, "application/x-protobuf");
        assert!(received[0].1 > 0);
    }

    #[tokio::test]
    async fn builds_an_otlp_pipeline_without_touching_the_network() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            ..Default::default()
        };
        let provider = tracer_provider(&config).unwrap().unwrap();
        // Nothing was recorded, so shutting down exports nothing.
        provider.shutdown().unwrap();
        assert!(
            tracer_provider(&TelemetryConfig::default())
                .unwrap()
                .is_none()
        );
    }
}
