//! The per-call store state and the host side of every plugin import.
//!
//! Each call gets a fresh `PluginState`: WASI with nothing granted beyond the
//! plugin's capabilities, captured stdout/stderr, the limiter, and — for
//! agents — the handle back into the pipeline with the caller's context.

use super::bindings::latest::interfaces as ifaces;
use super::bindings::wit;
use super::http::{HttpPolicy, HttpRequest, HttpUsage};
use super::limits::Limiter;
use super::tools::{ToolsPolicy, ToolsUsage};
use crate::domain::{CallContext, Completion, CompletionRequest, Failure, Task, TaskResult};
use crate::store::{KvQuota, KvStore, KvUsage, StoreError};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::{KvLabels, KvRefusalLabels};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What agents reach through `llm` and `agents`: implemented by the pipeline.
///
/// Futures are `'static` so the runtime never holds a borrow of the pipeline
/// across a guest suspension.
pub trait AgentHost: Send + Sync + 'static {
    /// Run a completion for the agent whose context is `ctx`.
    fn complete(
        &self,
        ctx: CallContext,
        req: CompletionRequest,
    ) -> BoxFuture<'static, Result<Completion, Failure>>;

    /// Run agent `agent` for the agent whose context is `ctx` (the host
    /// enters `agent` there: depth, cycle and deadline guards).
    fn call_agent(
        &self,
        ctx: CallContext,
        agent: String,
        task: Task,
    ) -> BoxFuture<'static, Result<TaskResult, Failure>>;

    /// Run several agents for the agent whose context is `ctx`
    /// (`agents.call-all`), within the host's bounds on tasks per call and
    /// concurrency; one result per call, in order.
    fn call_all(
        &self,
        ctx: CallContext,
        calls: Vec<(String, Task)>,
    ) -> BoxFuture<'static, Vec<Result<TaskResult, Failure>>>;
}

/// Where a plugin's kv use is counted.
pub(crate) struct KvMetrics {
    pub metrics: Arc<Metrics>,
    pub plugin: KvLabels,
}

/// Identity and configuration shared by every call of one plugin.
#[derive(Debug)]
pub(crate) struct PluginInfo {
    pub name: String,
    pub version: String,
    pub settings: BTreeMap<String, String>,
    /// The `http` grant; `None` denies every request.
    pub http: Option<HttpPolicy>,
    /// The `tools` grant; `None` lists nothing and denies every call.
    pub tools: Option<ToolsPolicy>,
}

/// The agent-only part of a call: the way back into the pipeline.
pub(crate) struct AgentCall {
    pub host: Arc<dyn AgentHost>,
    pub ctx: CallContext,
}

/// Bounds on `log` use per call, so a chatty plugin cannot flood the logs.
const MAX_LOG_EVENTS_PER_CALL: u32 = 256;
const MAX_LOG_MESSAGE_BYTES: usize = 8 * 1024;

/// Store data of one plugin call.
pub(crate) struct PluginState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub info: Arc<PluginInfo>,
    pub kv: Arc<dyn KvStore>,
    pub kv_quota: KvQuota,
    pub kv_metrics: Option<Arc<KvMetrics>>,
    pub agent: Option<AgentCall>,
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
    pub log_events: u32,
    /// Whether a refused kv write was logged in this call.
    pub kv_refusal_logged: bool,
    /// What this call used of its `http` grant.
    pub http_usage: HttpUsage,
    /// What this call used of its `tools` grant.
    pub tools_usage: ToolsUsage,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl PluginState {
    fn agent(&self) -> Result<&AgentCall, Failure> {
        self.agent.as_ref().ok_or_else(|| {
            Failure::Denied(format!("plugin `{}` has no agent context", self.info.name))
        })
    }

    /// Emits captured stdout/stderr as log events tagged with the plugin.
    pub fn flush_output(&self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            for line in String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                tracing::info!(plugin = %self.info.name, version = %self.info.version, stream, "{line}");
            }
        }
    }

    /// Whether the instance of this store may serve another call
    /// (`isolation = "reuse"`): it wrote nothing to stdio (whose capture
    /// must start empty for the next call's messages) and holds no host
    /// resource. If so, the per-call counters start over.
    pub fn ready_for_another_call(&mut self) -> bool {
        let clean = self.agent.is_none()
            && self.table.is_empty()
            && self.stdout.contents().is_empty()
            && self.stderr.contents().is_empty();
        if clean {
            self.log_events = 0;
            self.kv_refusal_logged = false;
            self.http_usage = HttpUsage::default();
            self.tools_usage = ToolsUsage::default();
        }
        clean
    }

    /// The end of the guest's stderr: a Rust guest's panic message, without
    /// the standard "run with RUST_BACKTRACE" hint.
    pub fn stderr_tail(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(2)..];
        (!tail.is_empty()).then(|| tail.join(" "))
    }
}

impl ifaces::types::Host for PluginState {}

impl ifaces::llm::Host for PluginState {
    async fn complete(
        &mut self,
        req: wit::CompletionRequest,
    ) -> wasmtime::Result<Result<wit::Completion, wit::Failure>> {
        let call = match self.agent() {
            Ok(call) => call.host.complete(call.ctx.clone(), req.into()),
            Err(f) => return Ok(Err(f.into())),
        };
        Ok(call.await.map(Into::into).map_err(Into::into))
    }
}

impl ifaces::agents::Host for PluginState {
    async fn call(
        &mut self,
        agent: String,
        task: wit::Task,
    ) -> wasmtime::Result<Result<wit::TaskResult, wit::Failure>> {
        let call = match self.agent() {
            Ok(call) => call.host.call_agent(call.ctx.clone(), agent, task.into()),
            Err(f) => return Ok(Err(f.into())),
        };
        Ok(call.await.map(Into::into).map_err(Into::into))
    }

    async fn call_all(
        &mut self,
        calls: Vec<(String, wit::Task)>,
    ) -> wasmtime::Result<Vec<Result<wit::TaskResult, wit::Failure>>> {
        let call = match self.agent() {
            Ok(call) => call.host.call_all(
                call.ctx.clone(),
                calls.into_iter().map(|(a, t)| (a, t.into())).collect(),
            ),
            Err(f) => return Ok(calls.iter().map(|_| Err(f.clone().into())).collect()),
        };
        Ok(call
            .await
            .into_iter()
            .map(|r| r.map(Into::into).map_err(Into::into))
            .collect())
    }
}

impl PluginState {
    /// Publishes a namespace's usage after a write.
    fn kv_observe(&self, usage: KvUsage) {
        if let Some(m) = &self.kv_metrics {
            m.metrics
                .kv_keys
                .get_or_create(&m.plugin)
                .set(usage.keys as i64);
            m.metrics
                .kv_bytes
                .get_or_create(&m.plugin)
                .set(usage.bytes as i64);
        }
    }

    fn kv_refused(&self, e: &StoreError) {
        let reason = match e {
            StoreError::Quota(_) => "quota",
            StoreError::TooLarge(_) => "too_large",
            _ => "store_error",
        };
        if let Some(m) = &self.kv_metrics {
            m.metrics
                .kv_writes_refused
                .get_or_create(&KvRefusalLabels {
                    plugin: m.plugin.plugin.clone(),
                    reason: reason.to_string(),
                })
                .inc();
        }
    }
}

impl ifaces::kv::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        match self.kv.get(&self.info.name, &key) {
            Ok(value) => Ok(value),
            Err(e) => {
                tracing::warn!(plugin = %self.info.name, error = %e, "kv get failed");
                Ok(None)
            }
        }
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        match self
            .kv
            .set(&self.info.name, &key, &value, ttl_seconds, &self.kv_quota)
        {
            Ok(usage) => {
                self.kv_observe(usage);
                Ok(Ok(()))
            }
            Err(e) => {
                self.kv_refused(&e);
                // Once per call: a plugin retrying a refused write in a
                // loop must not flood the log.
                if !self.kv_refusal_logged {
                    self.kv_refusal_logged = true;
                    tracing::warn!(plugin = %self.info.name, version = %self.info.version, error = %e, "kv write refused");
                }
                Ok(Err(e.to_string()))
            }
        }
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        match self.kv.delete(&self.info.name, &key) {
            Ok(usage) => self.kv_observe(usage),
            Err(e) => tracing::warn!(plugin = %self.info.name, error = %e, "kv delete failed"),
        }
        Ok(())
    }
}

impl ifaces::log::Host for PluginState {
    fn log(
        &mut self,
        level: ifaces::log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.log_events += 1;
        if self.log_events > MAX_LOG_EVENTS_PER_CALL {
            if self.log_events == MAX_LOG_EVENTS_PER_CALL + 1 {
                tracing::warn!(plugin = %self.info.name, version = %self.info.version,
                    "plugin exceeded {MAX_LOG_EVENTS_PER_CALL} log events in one call; dropping the rest");
            }
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LOG_MESSAGE_BYTES {
            let mut end = MAX_LOG_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (name, version) = (&self.info.name, &self.info.version);
        use ifaces::log::Level;
        match level {
            Level::Trace => {
                tracing::trace!(plugin = %name, version = %version, fields, "{message}")
            }
            Level::Debug => {
                tracing::debug!(plugin = %name, version = %version, fields, "{message}")
            }
            Level::Info => tracing::info!(plugin = %name, version = %version, fields, "{message}"),
            Level::Warn => tracing::warn!(plugin = %name, version = %version, fields, "{message}"),
            Level::Error => {
                tracing::error!(plugin = %name, version = %version, fields, "{message}")
            }
        }
        Ok(())
    }
}

impl ifaces::settings::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.info.settings.get(&key).cloned())
    }
}

impl ifaces::http::Host for PluginState {
    async fn fetch(
        &mut self,
        req: ifaces::http::Request,
    ) -> wasmtime::Result<Result<ifaces::http::Response, wit::Failure>> {
        let info = self.info.clone();
        let Some(policy) = &info.http else {
            return Ok(Err(Failure::Denied(format!(
                "plugins.{}.capabilities.http: no outbound HTTP is granted",
                info.name
            ))
            .into()));
        };
        let req = HttpRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
            timeout_ms: req.timeout_ms,
        };
        Ok(policy
            .fetch(&mut self.http_usage, req)
            .await
            .map(|r| ifaces::http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            })
            .map_err(Into::into))
    }
}

impl ifaces::tools::Host for PluginState {
    async fn list(&mut self) -> wasmtime::Result<Result<Vec<wit::Tool>, wit::Failure>> {
        let info = self.info.clone();
        let Some(policy) = &info.tools else {
            return Ok(Ok(Vec::new()));
        };
        Ok(policy
            .list()
            .await
            .map(|tools| {
                tools
                    .into_iter()
                    .map(|t| wit::Tool {
                        name: t.name,
                        description: t.description,
                        parameters: t.parameters,
                    })
                    .collect()
            })
            .map_err(Into::into))
    }

    async fn call(
        &mut self,
        name: String,
        arguments: String,
    ) -> wasmtime::Result<Result<ifaces::tools::ToolOutput, wit::Failure>> {
        let info = self.info.clone();
        let Some(policy) = &info.tools else {
            return Ok(Err(Failure::Denied(format!(
                "plugins.{}.capabilities.tools: no tools are granted (tool `{name}`)",
                info.name
            ))
            .into()));
        };
        Ok(policy
            .call(&mut self.tools_usage, &name, &arguments)
            .await
            .map(|o| ifaces::tools::ToolOutput {
                text: o.text,
                is_error: o.is_error,
            })
            .map_err(Into::into))
    }
}
