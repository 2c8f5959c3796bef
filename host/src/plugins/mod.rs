//! The first-party plugins, compiled to wasm32-wasip2 by `build.rs` and
//! embedded in the binary, addressable in config as `builtin:<name>`.

use crate::runtime::{PluginSource, PluginSpec, World};
use std::borrow::Cow;
use std::path::Path;

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The `builtin:` prefix of plugin references in config.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// An embedded first-party plugin.
#[derive(Clone, Copy, Debug)]
pub struct Builtin {
    /// Its name, e.g. `input-guard`.
    pub name: &'static str,
    /// The world it implements.
    pub world: World,
    /// The component.
    pub wasm: &'static [u8],
}

fn world(name: &str) -> World {
    match name {
        "agent" => World::Agent,
        "validator" => World::Validator,
        "router" => World::Router,
        _ => World::Recovery,
    }
}

/// Every embedded plugin.
pub fn all() -> impl Iterator<Item = Builtin> {
    EMBEDDED.iter().map(|(name, w, wasm)| Builtin {
        name,
        world: world(w),
        wasm,
    })
}

/// The embedded plugin called `name`.
pub fn get(name: &str) -> Option<Builtin> {
    all().find(|b| b.name == name)
}

impl Builtin {
    /// Its source, for [`PluginSpec`].
    pub fn source(&self) -> PluginSource {
        PluginSource::Bytes {
            origin: format!("{BUILTIN_PREFIX}{}", self.name),
            bytes: Cow::Borrowed(self.wasm),
        }
    }

    /// A spec loading it into slot `slot`, versioned like the host (they are
    /// built from the same tree).
    pub fn spec(&self, slot: &str) -> PluginSpec {
        let mut spec = PluginSpec::new(slot, self.world, self.source());
        spec.version = Some(env!("CARGO_PKG_VERSION").to_string());
        spec
    }
}

/// Where the compiled test fixtures are (misbehaving plugins used by tests).
#[doc(hidden)]
pub fn fixture_dir() -> &'static Path {
    Path::new(FIXTURE_DIR)
}
