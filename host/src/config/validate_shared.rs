//! Semantic checks of `[cluster]` and of the budget settings of `[auth]`
//! (the settings of shared state), next to [`super::validate`]'s.

use super::Config;
use super::error::Errors;
use super::secret::{self, EnvLookup};

/// Checks and resolves `[cluster]`.
pub(super) fn cluster(config: &mut Config, errors: &mut Errors<'_>, env: EnvLookup<'_>) {
    let base_dir = config.base_dir.clone();
    let c = &mut config.startup.cluster;
    if let Some(url) = &mut c.redis_url {
        match secret::resolve(url.expose(), &base_dir, env) {
            Ok(Some(resolved)) => *url = resolved,
            Ok(None) => {}
            Err(reason) => return errors.push("cluster.redis_url", reason.to_string()),
        }
        let text = url.expose().trim();
        if text.starts_with("rediss://") {
            errors.push(
                "cluster.redis_url",
                "TLS (rediss://) is not built into this gateway: reach Redis over a private network with redis://, or through a TLS sidecar",
            );
        } else if !text.starts_with("redis://") {
            errors.push(
                "cluster.redis_url",
                "must be a redis:// URL, e.g. \"redis://redis:6379/0\" (put a password in ${env:...})",
            );
        } else if let Err(e) = redis::Client::open(text) {
            errors.push(
                "cluster.redis_url",
                format!("is not a valid Redis URL: {e}"),
            );
        }
    }
    if c.key_prefix.is_empty()
        || !c
            .key_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        errors.push(
            "cluster.key_prefix",
            "must be letters, digits, `-`, `_`, `.` or `:` (it starts every Redis key)",
        );
    }
    for (field, value) in [
        ("op_timeout_ms", c.op_timeout_ms),
        ("probe_interval_ms", c.probe_interval_ms),
        ("rollout_sync_ms", c.rollout_sync_ms),
        ("key_sync_ms", c.key_sync_ms),
    ] {
        if value == 0 {
            errors.push(format!("cluster.{field}"), "must be positive");
        }
    }
}

/// `[cache] redis_url` was reserved before `[cluster]` existed.
pub(super) fn moved_cache_url(config: &Config, errors: &mut Errors<'_>) {
    if config.startup.cache.redis_url.is_some() {
        errors.push(
            "cache.redis_url",
            "has moved: set `redis_url` in [cluster] (it serves the L3 cache, limits, budgets, keys and rollouts); `cache.l3 = false` keeps the cache out of Redis",
        );
    }
}

/// Checks the budget settings of `[auth]`.
pub(super) fn budgets(config: &Config, errors: &mut Errors<'_>) {
    let a = &config.startup.auth;
    if !(a.budget_reservation_usd.is_finite() && a.budget_reservation_usd >= 0.0) {
        errors.push(
            "auth.budget_reservation_usd",
            format!("must be an amount >= 0, got {}", a.budget_reservation_usd),
        );
    }
    for (i, t) in a.budget_alert_thresholds.iter().enumerate() {
        if !(t.is_finite() && *t > 0.0 && *t <= 10.0) {
            errors.push(
                format!("auth.budget_alert_thresholds[{i}]"),
                format!("must be a fraction of the budget above 0 (0.8 is 80 %), got {t}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const UPSTREAM: &str = "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n";

    fn error_of(extra: &str) -> String {
        Config::parse(&format!("{UPSTREAM}{extra}"), "c.toml", Path::new("."))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn cluster_settings_are_checked_naming_file_line_and_key() {
        let e = error_of("[cluster]\nredis_url = \"rediss://r:6380\"\n");
        assert!(
            e.contains("c.toml:5: cluster.redis_url") && e.contains("TLS"),
            "{e}"
        );
        let e = error_of("[cluster]\nredis_url = \"http://r\"\n");
        assert!(
            e.contains("cluster.redis_url: must be a redis:// URL"),
            "{e}"
        );
        let e = error_of("[cluster]\nkey_prefix = \"has space\"\n");
        assert!(e.contains("c.toml:5: cluster.key_prefix"), "{e}");
        let e = error_of("[cluster]\nop_timeout_ms = 0\n");
        assert!(e.contains("cluster.op_timeout_ms: must be positive"), "{e}");
        let e = error_of("[cluster.on_redis_loss]\nbudgets = \"maybe\"\n");
        assert!(e.contains("fail-open") && e.contains("fail-closed"), "{e}");
        let ok = Config::parse(
            &format!("{UPSTREAM}[cluster]\nredis_url = \"redis://:pw@r:6379/1\"\n[cluster.on_redis_loss]\nbudgets = \"fail-closed\"\n"),
            "c.toml",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(
            ok.startup.cluster.on_redis_loss.budgets,
            crate::cluster::LossPolicy::FailClosed
        );
    }

    #[test]
    fn budget_settings_are_checked() {
        let e = error_of("[auth]\nbudget_alert_thresholds = [0.8, 0]\n");
        assert!(e.contains("auth.budget_alert_thresholds[1]"), "{e}");
        let e = error_of("[auth]\nbudget_reservation_usd = -1.0\n");
        assert!(e.contains("auth.budget_reservation_usd"), "{e}");
    }
}
