//! What a `.wasm` file is: a component of which world, importing and
//! exporting what. Used by `agentrouter plugin inspect` and by
//! [`Runtime::load`](super::Runtime::load), which refuses a component whose
//! imports exceed its world in the same words `plugin inspect` uses.

use super::World;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The facts `plugin inspect` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The world it implements, or why it implements none.
    pub world: Result<World, WorldError>,
    /// Import names (interfaces and functions).
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
    /// sha256, hex.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
    /// The `agentrouter:plugin` version its imports name (the latest when
    /// it imports none of the contract's interfaces).
    pub contract: &'static str,
    /// The contract interfaces it imports, `types` aside: what it can ask
    /// the host for (`llm`, `kv`, `http`, `tools`, ...).
    pub capabilities: Vec<String>,
}

/// Interfaces that reach outside the host and need a grant in the slot's
/// config before the component may be loaded into it: interface and the
/// config key that grants it.
pub const GRANTED_IMPORTS: [(&str, &str); 2] = [
    ("http", "capabilities.http"),
    ("tools", "capabilities.tools"),
];

impl ComponentInfo {
    /// The imported interfaces that need a grant ([`GRANTED_IMPORTS`]).
    pub fn needs_grants(&self) -> Vec<(&'static str, &'static str)> {
        GRANTED_IMPORTS
            .into_iter()
            .filter(|(iface, _)| self.capabilities.iter().any(|c| c == iface))
            .collect()
    }
}

/// The `agentrouter:plugin` interfaces among `imports`, `types` aside.
pub fn capabilities(imports: &[String]) -> Vec<String> {
    let mut caps: Vec<String> = imports
        .iter()
        .filter_map(|i| i.strip_prefix("agentrouter:plugin/"))
        .map(|i| i.split('@').next().unwrap_or(i).to_string())
        .filter(|i| i != "types")
        .collect();
    caps.sort();
    caps.dedup();
    caps
}

/// Why some bytes are not a WebAssembly component.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// No `\0asm` magic number: not WebAssembly at all.
    #[error("not a WebAssembly file (missing the \\0asm magic number)")]
    NotWasm,
    /// A core module, which has no WIT interface to check.
    #[error(
        "this is a core WebAssembly module, not a component; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// A layer this host does not know.
    #[error("unknown WebAssembly layer {0:?}")]
    UnknownLayer([u8; 2]),
}

/// Why a component implements no world, or not within its capabilities.
///
/// The messages are what `plugin inspect` prints and what a refused load
/// says; tests and operators match on them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// It exports none of the four world functions.
    #[error(
        "exports {} but none of `handle`, `validate`, `route`, `recover`: not an AgentRouter plugin",
        list(.0)
    )]
    NoWorldExport(Vec<String>),
    /// It exports the functions of more than one world.
    #[error("exports the functions of several worlds ({0:?}); a plugin implements one")]
    SeveralWorlds(Vec<World>),
    /// It imports an interface of another package.
    #[error("imports `{0}`, which no AgentRouter world provides")]
    ForeignImport(String),
    /// It imports a host interface its world does not grant: a capability
    /// it must not have (a validator with `kv` could keep a user's message).
    #[error(
        "exports `{}` like a {world} but imports `{import}`, which the {world} world does not provide",
        world.export()
    )]
    BeyondWorld {
        /// The world its export makes it.
        world: World,
        /// The import that world does not provide.
        import: String,
    },
}

impl WorldError {
    /// Whether this is about what the component imports (a capability
    /// question), as opposed to what it exports.
    pub fn is_import(&self) -> bool {
        matches!(
            self,
            WorldError::ForeignImport(_) | WorldError::BeyondWorld { .. }
        )
    }
}

/// Why `plugin inspect` could not describe a file.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Not a component.
    #[error("{0}")]
    Header(#[from] HeaderError),
    /// The component is malformed.
    #[error("invalid component: {0:#}")]
    Invalid(wasmtime::Error),
}

/// Checks the binary header: WebAssembly magic and the component layer.
pub fn check_header(bytes: &[u8]) -> Result<(), HeaderError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(HeaderError::NotWasm);
    }
    // Bytes 4..8: version and layer. Core modules are layer 0, components 1.
    match [bytes[6], bytes[7]] {
        [1, 0] => Ok(()),
        [0, 0] => Err(HeaderError::CoreModule),
        other => Err(HeaderError::UnknownLayer(other)),
    }
}

/// Which world the imports and exports fit, or why none: the world is the
/// one whose function it exports, and every import must be one that world
/// provides (WASI aside, which every world links).
pub fn detect_world(imports: &[String], exports: &[String]) -> Result<World, WorldError> {
    let worlds: Vec<World> = World::ALL
        .into_iter()
        .filter(|w| exports.iter().any(|e| e == w.export()))
        .collect();
    let world = match worlds.as_slice() {
        [w] => *w,
        [] => return Err(WorldError::NoWorldExport(exports.to_vec())),
        _ => return Err(WorldError::SeveralWorlds(worlds)),
    };
    for import in imports {
        if import.starts_with("wasi:") {
            continue;
        }
        let Some(iface) = import.strip_prefix("agentrouter:plugin/") else {
            return Err(WorldError::ForeignImport(import.clone()));
        };
        let (iface, version) = iface.split_once('@').unwrap_or((iface, ""));
        // 0.1.0 had no `http` or `tools`; a component claiming them under
        // 0.1.0 was not built from the contract.
        let added_in_0_2 = matches!(iface, "http" | "tools") && version.starts_with("0.1.");
        if !world.imports().contains(&iface) || added_in_0_2 {
            return Err(WorldError::BeyondWorld {
                world,
                import: import.clone(),
            });
        }
    }
    Ok(world)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        return "nothing".into();
    }
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Import and export names of a compiled component.
pub(super) fn names(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    (imports, exports)
}

/// One clause saying what [`detect_world`] found, for errors.
pub fn describe(detected: &Result<World, WorldError>) -> String {
    match detected {
        Ok(world) => format!("the component implements the `{world}` world"),
        Err(why) => format!("the component {why}"),
    }
}

/// Reads and validates `bytes` and reports what they are, without
/// compiling them: a component's names are in its binary, and compiling a
/// Python or JavaScript component costs seconds of Cranelift that
/// `plugin inspect` does not need (loading it compiles, through the AOT
/// cache). Says what [`inspect`] says of every valid component.
pub fn read(bytes: &[u8]) -> Result<ComponentInfo, InspectError> {
    use wasmparser::{ComponentExternalKind, ComponentTypeRef, Parser, Payload, Validator};
    check_header(bytes)?;
    let invalid = |e: wasmparser::BinaryReaderError| InspectError::Invalid(e.into());
    Validator::new().validate_all(bytes).map_err(invalid)?;
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    // Nested modules and components have imports and exports of their
    // own; only the outermost component's are its interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            // A type the world `use`s is imported by name (`stage`); it is
            // part of an interface's signature, not something the host
            // provides, and compiling resolves it away: not listed.
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import.map_err(invalid)?;
                    if !matches!(import.ty, ComponentTypeRef::Type(_)) {
                        imports.push(import.name.name.to_string());
                    }
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(invalid)?;
                    if export.kind != ComponentExternalKind::Type {
                        exports.push(export.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(described(imports, exports, bytes))
}

/// Compiles `bytes` and reports what they are.
pub fn inspect(engine: &Engine, bytes: &[u8]) -> Result<ComponentInfo, InspectError> {
    check_header(bytes)?;
    let component = Component::new(engine, bytes).map_err(InspectError::Invalid)?;
    Ok(info(engine, &component, bytes))
}

/// What an already compiled `component` (of `bytes`) is: for callers that
/// compiled it through the AOT cache, since compiling a Python or
/// JavaScript component takes seconds.
pub fn info(engine: &Engine, component: &Component, bytes: &[u8]) -> ComponentInfo {
    let (imports, exports) = names(engine, component);
    described(imports, exports, bytes)
}

fn described(imports: Vec<String>, exports: Vec<String>, bytes: &[u8]) -> ComponentInfo {
    ComponentInfo {
        world: detect_world(&imports, &exports),
        contract: super::bindings::contract_version(imports.iter().map(String::as_str)),
        capabilities: capabilities(&imports),
        imports,
        exports,
        digest: super::sha256_hex(bytes),
        size: bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn detects_worlds_and_explains_foreign_components() {
        let imports = s(&[
            "agentrouter:plugin/types@0.1.0",
            "agentrouter:plugin/log@0.1.0",
            "wasi:cli/stderr@0.2.6",
        ]);
        assert_eq!(
            detect_world(&imports, &s(&["validate"])),
            Ok(World::Validator)
        );
        let err = detect_world(&s(&[]), &s(&["wasi:cli/run@0.2.6"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("wasi:cli/run") && err.contains("not an AgentRouter plugin"),
            "{err}"
        );
        let err = detect_world(&s(&["acme:vault/secrets"]), &s(&["validate"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("acme:vault/secrets"), "{err}");
        let err = detect_world(&s(&["agentrouter:plugin/llm@0.1.0"]), &s(&["route"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("router world does not provide"), "{err}");
    }

    #[test]
    fn a_validator_importing_kv_is_refused_in_the_words_operators_see() {
        let err =
            detect_world(&s(&["agentrouter:plugin/kv@0.1.0"]), &s(&["validate"])).unwrap_err();
        assert!(err.is_import());
        assert_eq!(
            err.to_string(),
            "exports `validate` like a validator but imports `agentrouter:plugin/kv@0.1.0`, \
             which the validator world does not provide"
        );
        let agent = detect_world(
            &s(&[
                "agentrouter:plugin/kv@0.1.0",
                "agentrouter:plugin/llm@0.1.0",
            ]),
            &s(&["handle"]),
        );
        assert_eq!(agent, Ok(World::Agent));
        assert!(!WorldError::NoWorldExport(vec![]).is_import());
    }

    #[test]
    fn header_check_names_core_modules_and_garbage() {
        assert_eq!(check_header(b"hello world"), Err(HeaderError::NotWasm));
        assert!(
            HeaderError::NotWasm
                .to_string()
                .contains("not a WebAssembly file")
        );
        assert_eq!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(HeaderError::CoreModule)
        );
        assert!(
            HeaderError::CoreModule
                .to_string()
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
