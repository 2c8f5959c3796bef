//! The chaos matrix of issue 20: {5xx, 429, hang, malformed} × {1, 2, 3
//! upstreams} × {default, tuned}, each cell a gateway over real HTTP in
//! front of simulator servers that all fail the same way. The chaos test
//! (`tests/resilience.rs`) asserts bounds on each cell's counts; the bench
//! (`bench/resilience.rs`) prints the same matrix as a table.

use super::load::{Load, drive};
use super::{Gateway, SimServer};
use agentrouter::upstream::sim::SimSettings;

/// What every upstream of a cell does wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 30 % answered 500.
    ServerErrors,
    /// 20 % answered 429 with `Retry-After` 200 ms.
    RateLimits,
    /// 10 % never answered.
    Hangs,
    /// 20 % answered 200 with a body that is not a completion.
    Malformed,
}

impl Fault {
    /// Every fault.
    pub const ALL: [Fault; 4] = [
        Fault::ServerErrors,
        Fault::RateLimits,
        Fault::Hangs,
        Fault::Malformed,
    ];

    /// Its column name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerErrors => "30 % 5xx",
            Fault::RateLimits => "20 % 429",
            Fault::Hangs => "10 % hang",
            Fault::Malformed => "20 % malformed",
        }
    }

    /// `base` with this fault added.
    pub fn apply(self, base: SimSettings) -> SimSettings {
        match self {
            Fault::ServerErrors => SimSettings {
                fail_rate: 0.3,
                ..base
            },
            Fault::RateLimits => SimSettings {
                rate_limit_rate: 0.2,
                retry_after_ms: 200,
                ..base
            },
            Fault::Hangs => SimSettings {
                hang_rate: 0.1,
                ..base
            },
            Fault::Malformed => SimSettings {
                malformed_rate: 0.2,
                ..base
            },
        }
    }
}

/// How the gateway of a cell is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// `standard-recovery` and every `[resilience]` and breaker key at its
    /// default.
    Default,
    /// Short backoffs, a retry budget of 1 retry per request, a fixed
    /// 50 ms hedge delay, and breakers that ride out chance streaks but
    /// count calls slower than 500 ms.
    Tuned,
}

impl Tuning {
    /// Both.
    pub const ALL: [Tuning; 2] = [Tuning::Default, Tuning::Tuned];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Tuning::Default => "default",
            Tuning::Tuned => "tuned",
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    /// What goes wrong.
    pub fault: Fault,
    /// How many upstreams serve the model, each with the fault.
    pub upstreams: usize,
    /// How the gateway is configured.
    pub tuning: Tuning,
}

/// What a cell's run gave.
#[derive(Debug)]
pub struct Outcome {
    /// What clients got.
    pub load: Load,
    /// Calls the simulators received, all upstreams together.
    pub calls: u64,
}

/// Every cell, by tuning, then fault, then upstream count.
pub fn cells(tuning: Tuning) -> Vec<Cell> {
    let mut cells = Vec::new();
    for fault in Fault::ALL {
        for upstreams in 1..=3 {
            cells.push(Cell {
                fault,
                upstreams,
                tuning,
            });
        }
    }
    cells
}

impl Cell {
    /// `30 % 5xx × 2 × tuned`.
    pub fn name(&self) -> String {
        format!(
            "{} × {} × {}",
            self.fault.name(),
            self.upstreams,
            self.tuning.name()
        )
    }

    /// The gateway config for these servers; `timeout_ms`, when given, is
    /// every upstream's call bound (tests shorten the 30 s default so a
    /// hang on a lone upstream costs a second, not half a minute).
    pub fn config(&self, servers: &[SimServer], timeout_ms: Option<u64>) -> String {
        let mut toml =
            String::from("[server]\nlisten = \"127.0.0.1:0\"\n\n[store]\npath = \"data\"\n\n");
        for (i, server) in servers.iter().enumerate() {
            let name = format!("u{i}");
            let mut extra = String::new();
            if let Some(ms) = timeout_ms {
                extra.push_str(&format!("timeout_ms = {ms}\n"));
            }
            if self.tuning == Tuning::Tuned {
                extra.push_str(&format!(
                    "[upstreams.{name}.breaker]\nfailure_threshold = 20\nslow_call_ms = 500\n"
                ));
            }
            toml.push_str(&server.upstream(&name, "usf-mini", &extra));
        }
        toml.push_str(
            "\n[plugins.cost-router]\nsource = \"builtin:cost-router\"\n\n\
             [plugins.standard-recovery]\nsource = \"builtin:standard-recovery\"\n",
        );
        if self.tuning == Tuning::Tuned {
            toml.push_str(
                "[plugins.standard-recovery.settings]\nbase_delay_ms = 20\nmax_delay_ms = 200\n",
            );
        }
        toml.push_str("\n[pipeline]\nrouter = \"cost-router\"\nrecovery = \"standard-recovery\"\n");
        if self.tuning == Tuning::Tuned {
            toml.push_str(
                "\n[resilience.retry_budget]\nratio = 1.0\n\n[resilience.hedge]\ndelay_ms = 50\n",
            );
        }
        toml
    }

    /// Starts the cell's simulators (from `base`, seeded per upstream) and
    /// gateway, drives `requests` completions at `concurrency`, and counts.
    pub async fn run(
        &self,
        base: SimSettings,
        requests: usize,
        concurrency: usize,
        timeout_ms: Option<u64>,
    ) -> Outcome {
        let mut servers = Vec::new();
        for i in 0..self.upstreams {
            let settings = SimSettings {
                seed: Some(100 + i as u64),
                ..self.fault.apply(base.clone())
            };
            servers.push(SimServer::start(settings, &["usf-mini"]).await);
        }
        let gw = Gateway::start(&self.config(&servers, timeout_ms)).await;
        let load = drive(&gw, "usf-mini", requests, concurrency).await;
        gw.stop().await;
        let calls = servers.iter().map(SimServer::requests).sum();
        Outcome { load, calls }
    }
}

/// The matrix's table header.
pub const HEADER: &str = "| cell | client results | success | upstream calls | p50 ms | p99 ms |\n|---|---|---|---|---|---|";

/// One table row.
pub fn row(cell: &Cell, outcome: &Outcome) -> String {
    let ms = |d: std::time::Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    format!(
        "| {} | {} | {:.1} % | {} | {} | {} |",
        cell.name(),
        outcome.load.summary(),
        outcome.load.success() * 100.0,
        outcome.calls,
        ms(outcome.load.quantile(0.5)),
        ms(outcome.load.quantile(0.99)),
    )
}
