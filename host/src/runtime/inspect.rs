//! What a `.wasm` file is: a component of which world, importing and
//! exporting what. Used by `agentrouter plugin inspect` and to explain
//! world mismatches at load time.

use super::World;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The facts `plugin inspect` prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    /// The world it implements, or why it implements none.
    pub world: Result<World, String>,
    /// Import names (interfaces and functions).
    pub imports: Vec<String>,
    /// Export names.
    pub exports: Vec<String>,
    /// sha256, hex.
    pub digest: String,
    /// Size in bytes.
    pub size: usize,
}

/// Checks the binary header: WebAssembly magic and the component layer.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (missing the \\0asm magic number)".into());
    }
    // Bytes 4..8: version and layer. Core modules are layer 0, components 1.
    match &bytes[6..8] {
        [1, 0] => Ok(()),
        [0, 0] => Err("this is a core WebAssembly module, not a component; build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)".into()),
        other => Err(format!("unknown WebAssembly layer {other:?}")),
    }
}

/// Which world the imports and exports fit, or why none.
pub fn detect_world(imports: &[String], exports: &[String]) -> Result<World, String> {
    let worlds: Vec<World> = World::ALL
        .into_iter()
        .filter(|w| exports.iter().any(|e| e == w.export()))
        .collect();
    let world = match worlds.as_slice() {
        [w] => *w,
        [] => {
            return Err(format!(
                "exports {} but none of `handle`, `validate`, `route`, `recover`: not an AgentRouter plugin",
                list(exports)
            ));
        }
        many => {
            return Err(format!(
                "exports the functions of several worlds ({many:?}); a plugin implements one"
            ));
        }
    };
    for import in imports {
        if import.starts_with("wasi:") {
            continue;
        }
        let Some(iface) = import.strip_prefix("agentrouter:plugin/") else {
            return Err(format!(
                "imports `{import}`, which no AgentRouter world provides"
            ));
        };
        let iface = iface.split('@').next().unwrap_or(iface);
        let allowed = match world {
            World::Agent => ["types", "llm", "agents", "kv", "log", "settings"].contains(&iface),
            _ => ["types", "log", "settings"].contains(&iface),
        };
        if !allowed {
            return Err(format!(
                "exports `{}` like a {world} but imports `{import}`, which the {world} world does not provide",
                world.export()
            ));
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

fn names(engine: &Engine, component: &Component) -> (Vec<String>, Vec<String>) {
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

/// One line describing what a compiled component looks like, for errors.
pub fn describe(engine: &Engine, component: &Component) -> String {
    let (imports, exports) = names(engine, component);
    match detect_world(&imports, &exports) {
        Ok(world) => format!("the component implements the `{world}` world"),
        Err(why) => format!("the component {why}"),
    }
}

/// Compiles `bytes` and reports what they are.
pub fn inspect(engine: &Engine, bytes: &[u8]) -> Result<ComponentInfo, String> {
    check_header(bytes)?;
    let component =
        Component::new(engine, bytes).map_err(|e| format!("invalid component: {e:#}"))?;
    let (imports, exports) = names(engine, &component);
    Ok(ComponentInfo {
        world: detect_world(&imports, &exports),
        imports,
        exports,
        digest: super::sha256_hex(bytes),
        size: bytes.len(),
    })
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
        let err = detect_world(&s(&[]), &s(&["wasi:cli/run@0.2.6"])).unwrap_err();
        assert!(
            err.contains("wasi:cli/run") && err.contains("not an AgentRouter plugin"),
            "{err}"
        );
        let err = detect_world(&s(&["acme:vault/secrets"]), &s(&["validate"])).unwrap_err();
        assert!(err.contains("acme:vault/secrets"), "{err}");
        let err = detect_world(&s(&["agentrouter:plugin/llm@0.1.0"]), &s(&["route"])).unwrap_err();
        assert!(err.contains("router world does not provide"), "{err}");
    }

    #[test]
    fn header_check_names_core_modules_and_garbage() {
        assert!(
            check_header(b"hello world")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            check_header(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
