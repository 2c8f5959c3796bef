//! On-disk cache of compiled plugins (ahead-of-time artifacts).
//!
//! Compiling a component costs milliseconds for a small Rust plugin and
//! seconds for a Python or JavaScript one; the cache makes restarts and
//! reloads pay that once. An entry is keyed by the component's sha256 and by
//! the engine's compatibility hash (wasmtime version, target, and every
//! setting that affects code generation), so a changed engine never loads a
//! stale artifact.
//!
//! Loading an artifact maps native code into the process, so the cache
//! directory must be as trusted as the binary itself: keep it private to the
//! user running the gateway.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a compiled component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled (and stored when a cache is configured).
    Compiled,
}

/// Hit/miss counters of the cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Artifacts loaded from disk.
    pub hits: AtomicU64,
    /// Components compiled.
    pub misses: AtomicU64,
}

/// A directory of `<sha256>-<engine hash>.cwasm` files.
#[derive(Debug)]
pub struct AotCache {
    dir: PathBuf,
    engine_hash: String,
    /// Counters, for tests and metrics.
    pub stats: CacheStats,
}

impl AotCache {
    /// Opens (creating when needed) a cache directory for this engine.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // SipHash with fixed keys: stable across runs of the same binary,
        // which is all the key needs (a new toolchain just misses once).
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_hash: format!("{:016x}", hasher.finish()),
            stats: CacheStats::default(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.cwasm", self.engine_hash))
    }

    /// Loads the artifact for `digest`, or compiles `bytes` and stores it.
    /// A corrupt or incompatible entry is replaced, never trusted.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        let path = self.entry(digest);
        // Read the artifact into memory rather than mapping the file: a
        // mapping would turn a later truncation of the file (an operator
        // clearing the cache, a full disk) into SIGBUS inside the gateway.
        if let Ok(artifact) = std::fs::read(&path) {
            // SAFETY: entries are written only by `store` below, from bytes
            // whose sha256 is in the name, into a directory the operator keeps
            // private (see the module docs); wasmtime checks the artifact's
            // header and engine compatibility before using it.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, CacheOutcome::Hit));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable compiled-plugin cache entry");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.store(&path, &component) {
            // A read-only or full disk costs restart time, not correctness.
            tracing::warn!(path = %path.display(), error = %e, "could not write compiled-plugin cache entry");
        }
        Ok((component, CacheOutcome::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<(), wasmtime::Error> {
        let artifact = component.serialize()?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, artifact)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
