//! `serve --watch`: reload a file plugin when its `.wasm` changes on disk.
//!
//! The directories holding the slots' `.wasm` sources are watched (not the
//! files: editors and `cargo build` replace files by rename, which a watch on
//! the old inode would miss). Events are debounced — a build writes a file
//! in several steps — then every slot whose source changed is reloaded
//! through [`Rollouts::reload_file`], under the control-plane guard:
//! compile, type-check, smoke-call, swap, logging the old and new digest. A failure logs why and leaves the old
//! version serving. Sources are the ones configured when watching began.

use super::{HotPlugin, Rollouts};
use crate::domain::Candidate;
use crate::runtime::PluginSource;
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Quiet time after the last change before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The slots currently served, with the upstream candidates their smoke
/// calls may use (routers need real ones).
pub type SlotLookup = Arc<dyn Fn() -> (Vec<Arc<HotPlugin>>, Vec<Candidate>) + Send + Sync>;

/// A running watch; dropping it stops watching.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
    /// The files being watched.
    pub files: Vec<PathBuf>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn canonical(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

fn source_path(hot: &HotPlugin) -> Option<PathBuf> {
    match &hot.template().source {
        PluginSource::File(path) => Some(canonical(path)),
        PluginSource::Bytes { .. } => None,
    }
}

/// Starts watching the `.wasm` sources of the slots `lookup` returns.
pub fn watch(rollouts: Weak<Rollouts>, lookup: SlotLookup) -> Result<Watch, notify::Error> {
    let (slots, _) = lookup();
    let files: Vec<PathBuf> = slots.iter().filter_map(|h| source_path(h)).collect();
    let dirs: BTreeSet<PathBuf> = files
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    // Only the plugin files themselves: the directory may also hold logs or
    // the store, whose constant writes would otherwise keep the debounce
    // below from ever settling.
    let relevant: BTreeSet<PathBuf> = files.iter().cloned().collect();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if !matches!(event.kind, EventKind::Access(_)) => {
                for path in event.paths {
                    let path = canonical(&path);
                    if relevant.contains(&path) {
                        let _ = tx.send(path);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "plugin file watch error"),
        })?;
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tracing::info!(files = ?files, "watching plugin files for changes");
    let watched = files.clone();
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut changed = BTreeSet::from([canonical(&first)]);
            // Debounce: keep collecting until the files are quiet.
            while let Ok(Some(path)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                changed.insert(canonical(&path));
            }
            let Some(rollouts) = rollouts.upgrade() else {
                return;
            };
            // The slots are looked up under the guard: a config reload cannot
            // replace one between the lookup and its reload.
            let guard = rollouts.lock().await;
            let (slots, candidates) = lookup();
            for hot in slots {
                let Some(path) = source_path(&hot).filter(|p| changed.contains(p)) else {
                    continue;
                };
                if !watched.contains(&path) || !path.is_file() {
                    continue;
                }
                let old = hot.identity();
                match rollouts.reload_file(&guard, &hot, &path, &candidates).await {
                    Ok(new) if new.identity().digest == old.digest => {}
                    Ok(new) => tracing::info!(
                        plugin = %hot.name(),
                        old_digest = %old.digest,
                        new_digest = %new.identity().digest,
                        path = %path.display(),
                        "plugin file changed: new version serving"
                    ),
                    Err(e) => tracing::warn!(
                        plugin = %hot.name(),
                        path = %path.display(),
                        error = %e,
                        "plugin file changed but the new version was refused; the old one keeps serving"
                    ),
                }
            }
        }
    });
    Ok(Watch {
        _watcher: watcher,
        task,
        files,
    })
}
