//! `agentrouter plugin new`: a plugin project that builds as generated.
//!
//! Every project carries the contract it is built against (`wit/plugin.wit`,
//! the version this host implements), a source file implementing the world
//! with a small working example, a README naming the build, inspect, call
//! and config steps, and the language's build file:
//!
//! - **rust**: a cargo package depending on the SDK **by path**, on a copy
//!   of the SDK written into the project (`sdk/`). The SDK is not published
//!   to a registry; a copy that matches this host's contract builds offline
//!   from crates.io alone (`wit-bindgen`), wherever the project is moved.
//! - **python**: `app.py` and a `requirements.txt` pinning componentize-py.
//! - **js**: a module and a `package.json` pinning componentize-js and jco.

use crate::runtime::World;
use std::path::{Path, PathBuf};

/// The languages a project can be scaffolded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust with the AgentRouter SDK.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

impl Lang {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }
}

/// Pinned toolchain versions the scaffolds (and the examples) build with.
pub mod pins {
    /// componentize-py on PyPI.
    pub const COMPONENTIZE_PY: &str = "0.25.1";
    /// @bytecodealliance/componentize-js on npm.
    pub const COMPONENTIZE_JS: &str = "0.23.0";
    /// @bytecodealliance/jco on npm.
    pub const JCO: &str = "1.35.0";
    /// @bytecodealliance/preview2-shim on npm: componentize-js 0.23.0
    /// imports it without declaring it, so `npm ci` of a project that does
    /// not name it fails at build time with `ERR_MODULE_NOT_FOUND`.
    pub const PREVIEW2_SHIM: &str = "0.25.0";
}

/// Why a project could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin, crate and package name.
    #[error(
        "`{0}` is not a usable plugin name: use lower-case letters, digits and `-`, starting with a letter (e.g. `my-guard`)"
    )]
    BadName(String),
    /// The directory exists and is not empty.
    #[error("{0} already exists and is not empty; choose another name or --dir")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The SDK's sources, copied into Rust projects.
const SDK_FILES: [(&str, &str); 6] = [
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    (
        "src/helpers.rs",
        include_str!("../../../sdk/src/helpers.rs"),
    ),
    ("src/agent.rs", include_str!("../../../sdk/src/agent.rs")),
    (
        "src/validator.rs",
        include_str!("../../../sdk/src/validator.rs"),
    ),
    ("src/router.rs", include_str!("../../../sdk/src/router.rs")),
    (
        "src/recovery.rs",
        include_str!("../../../sdk/src/recovery.rs"),
    ),
];

fn source(lang: Lang, world: World) -> &'static str {
    match (lang, world) {
        (Lang::Rust, World::Agent) => include_str!("templates/rust/agent.rs"),
        (Lang::Rust, World::Validator) => include_str!("templates/rust/validator.rs"),
        (Lang::Rust, World::Router) => include_str!("templates/rust/router.rs"),
        (Lang::Rust, World::Recovery) => include_str!("templates/rust/recovery.rs"),
        (Lang::Python, World::Agent) => include_str!("templates/python/agent.py"),
        (Lang::Python, World::Validator) => include_str!("templates/python/validator.py"),
        (Lang::Python, World::Router) => include_str!("templates/python/router.py"),
        (Lang::Python, World::Recovery) => include_str!("templates/python/recovery.py"),
        (Lang::Js, World::Agent) => include_str!("templates/js/agent.js"),
        (Lang::Js, World::Validator) => include_str!("templates/js/validator.js"),
        (Lang::Js, World::Router) => include_str!("templates/js/router.js"),
        (Lang::Js, World::Recovery) => include_str!("templates/js/recovery.js"),
    }
}

/// Whether `name` can be a slot, crate, package and file name.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64
}

/// The `.wasm` a project's build writes, relative to the project.
pub fn artifact(name: &str, lang: Lang) -> PathBuf {
    match lang {
        Lang::Rust => Path::new("target/wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_"))),
        Lang::Python | Lang::Js => PathBuf::from(format!("{name}.wasm")),
    }
}

/// The one command that builds a project, run in its directory.
pub fn build_command(name: &str, world: World, lang: Lang) -> String {
    match lang {
        Lang::Rust => "cargo build --release --target wasm32-wasip2".into(),
        Lang::Python => {
            format!("componentize-py -d wit -w {world} componentize app -o {name}.wasm")
        }
        Lang::Js => "npm install && npm run build".into(),
    }
}

/// Writes a new project for a plugin `name` of `world` in `lang` into
/// `dir`, which must not exist or be empty. Returns the files written.
pub fn scaffold(
    dir: &Path,
    name: &str,
    world: World,
    lang: Lang,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_string()));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let mut files: Vec<(PathBuf, String)> = vec![
        ("wit/plugin.wit".into(), WIT.to_string()),
        ("README.md".into(), readme(name, world, lang)),
    ];
    let code = source(lang, world).replace("__NAME__", name);
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), rust_manifest(name, world)));
            files.push(("src/lib.rs".into(), code));
            files.push(("sdk/Cargo.toml".into(), SDK_MANIFEST.to_string()));
            for (path, text) in SDK_FILES {
                files.push((Path::new("sdk").join(path), text.to_string()));
            }
            files.push((".gitignore".into(), "/target\n".into()));
        }
        Lang::Python => {
            files.push(("app.py".into(), code));
            files.push((
                "requirements.txt".into(),
                format!("componentize-py=={}\n", pins::COMPONENTIZE_PY),
            ));
            files.push((".gitignore".into(), "*.wasm\n__pycache__/\n".into()));
        }
        Lang::Js => {
            files.push((format!("{name}.js").into(), code));
            files.push(("package.json".into(), js_manifest(name, world)));
            files.push((".gitignore".into(), "/node_modules\n*.wasm\n".into()));
        }
    }
    let mut written = Vec::with_capacity(files.len());
    for (relative, text) in files {
        let path = dir.join(&relative);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text.as_bytes())
        };
        write(&path).map_err(|cause| ScaffoldError::Write {
            path: path.clone(),
            cause,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn rust_manifest(name: &str, world: World) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
# A copy of the AgentRouter SDK matching the contract in wit/plugin.wit.
# Enable exactly one world feature.
agentrouter-sdk = {{ path = "sdk", features = ["{world}"] }}

# Small components compile and load faster in the host.
[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# A project of its own, even when created inside another cargo workspace.
[workspace]
"#
    )
}

const SDK_MANIFEST: &str = r#"[package]
name = "agentrouter-sdk"
description = "Write AgentRouter plugins (agents, validators, routers, recovery strategies) in Rust"
version = "0.1.0"
edition = "2024"
publish = false

[features]
# One feature per world; a plugin enables exactly one.
agent = []
validator = []
router = []
recovery = []

[dependencies]
wit-bindgen = "0.61"
"#;

fn js_manifest(name: &str, world: World) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js {name}.js --wit wit --world-name {world} --disable http fetch-event -o {name}.wasm"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{cjs}",
    "@bytecodealliance/jco": "{jco}",
    "@bytecodealliance/preview2-shim": "{shim}"
  }}
}}
"#,
        cjs = pins::COMPONENTIZE_JS,
        jco = pins::JCO,
        shim = pins::PREVIEW2_SHIM,
    )
}

fn readme(name: &str, world: World, lang: Lang) -> String {
    let build = build_command(name, world, lang);
    let wasm = artifact(name, lang);
    let wasm = wasm.display();
    let setup = match lang {
        Lang::Rust => "rustup target add wasm32-wasip2   # once".to_string(),
        Lang::Python => {
            "python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt"
                .to_string()
        }
        Lang::Js => "# Node.js 20 or later; npm installs the pinned toolchain".to_string(),
    };
    let input = match world {
        World::Validator => r#"{"stage": "input", "messages": ["hello"]}"#,
        World::Router => {
            r#"{"candidates": [{"name": "a", "ewma_latency_ms": 90}, {"name": "b", "ewma_latency_ms": 20}]}"#
        }
        World::Recovery => r#"{"failure": "Timeout", "upstream": "a", "alternatives": ["b"]}"#,
        World::Agent => r#"{"input": "hello"}"#,
    };
    let pipeline = match world {
        World::Validator => format!("[pipeline]\ninput_validators = [\"{name}\"]\n"),
        World::Router => format!("[pipeline]\nrouter = \"{name}\"\n"),
        World::Recovery => format!("[pipeline]\nrecovery = \"{name}\"\n"),
        World::Agent => format!("# clients call it as model \"agent:{name}\"\n"),
    };
    format!(
        r#"# {name}

An AgentRouter `{world}` plugin in {lang}, built against the contract in
`wit/plugin.wit` (`agentrouter:plugin@0.2.0`).

## Build

```sh
{setup}
{build}
```

The component is `{wasm}`.

## Check and try it

```sh
agentrouter plugin inspect {wasm}
agentrouter plugin call {wasm} --input '{input}'
```

`plugin call` runs the export once in the gateway's sandbox, with the
gateway's limits; for agents, `llm` and `agents` are stubs that answer
deterministically. `--setting key=value` sets what `settings.get` reads.

## Load it

```toml
[plugins.{name}]
source = "{wasm}"
world = "{world}"

{pipeline}```

The authoring guide (worlds, host imports, limits, logs, errors) is
`docs/authoring.md` in the AgentRouter repository.
"#,
        lang = lang.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_fit_crates_packages_and_slots() {
        assert!(valid_name("my-guard2"));
        for bad in ["", "My", "1abc", "a_b", "a-", "a b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn refuses_a_non_empty_directory_and_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), "x").unwrap();
        let err = scaffold(dir.path(), "guard", World::Validator, Lang::Rust).unwrap_err();
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        let fresh = dir.path().join("new");
        let err = scaffold(&fresh, "Bad", World::Validator, Lang::Js).unwrap_err();
        assert!(
            err.to_string().contains("not a usable plugin name"),
            "{err}"
        );
    }

    #[test]
    fn every_project_carries_the_contract_and_its_build_file() {
        let dir = tempfile::tempdir().unwrap();
        for (lang, build_file) in [
            (Lang::Rust, "Cargo.toml"),
            (Lang::Python, "requirements.txt"),
            (Lang::Js, "package.json"),
        ] {
            let project = dir.path().join(lang.as_str());
            let files = scaffold(&project, "probe", World::Router, lang).unwrap();
            assert!(files.contains(&project.join("wit/plugin.wit")));
            assert!(files.contains(&project.join(build_file)));
            let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
            assert!(readme.contains(&build_command("probe", World::Router, lang)));
        }
        let manifest = std::fs::read_to_string(dir.path().join("rust/Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"features = ["router"]"#), "{manifest}");
        assert!(dir.path().join("rust/sdk/src/router.rs").is_file());
    }
}
