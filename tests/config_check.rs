//! `config::check` end to end: a real runtime loads every configured plugin.

use agentrouter::config::{self, QUICKSTART_TOML};
use agentrouter::plugins;
use agentrouter::runtime::World;
use std::path::Path;

/// Writes `text` as `gateway.toml` in `dir`. The check writes its plugin
/// cache under the config's directory, so tests use a temporary one.
fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn quickstart_checks_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), QUICKSTART_TOML);
    let report = config::check(&path)
        .await
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    assert_eq!(report.slots.len(), 7, "{report}");
    assert_eq!(report.models, ["usf-mini", "usf-mini-x1"]);
    let manager = report.slots.iter().find(|s| s.name == "manager").unwrap();
    assert_eq!(manager.world, World::Agent);
    assert_eq!(manager.origin, "builtin:manager");
    assert_eq!(manager.digest.len(), 64);
    // The check warmed the cache the server will use.
    assert!(dir.path().join("data/plugin-cache").is_dir());
}

#[tokio::test]
async fn plugin_of_the_wrong_world_is_keyed_by_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = plugins::fixture_dir().join("foreign_import.wasm");
    let text = format!(
        "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n\n\
         [plugins.vault]\nsource = {:?}\nworld = \"validator\"\n\n\
         [plugins.guard]\nsource = \"builtin:input-guard\"\n",
        fixture.display().to_string()
    );
    let path = write_config(dir.path(), &text);
    let errors = config::check(&path).await.unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!(e.key, "plugins.vault");
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("acme:vault"), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:5: plugins.vault: ", path.display()))
    );
}

#[tokio::test]
async fn validator_importing_kv_is_refused_by_check_in_the_words_of_plugin_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = plugins::fixture_dir().join("kv_validator.wasm");
    let text = format!(
        "[upstreams.a]\nkind = \"simulated\"\nmodel = \"m\"\n\n\
         [plugins.leaky]\nsource = {:?}\nworld = \"validator\"\n\n\
         [pipeline]\ninput_validators = [\"leaky\"]\n",
        fixture.display().to_string()
    );
    let path = write_config(dir.path(), &text);
    let errors = config::check(&path).await.unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = &errors[0];
    assert_eq!((e.key.as_str(), e.line), ("plugins.leaky", Some(5)));
    assert!(
        e.message.ends_with(
            "does not fit world `validator`: exports `validate` like a validator but imports \
             `agentrouter:plugin/kv@0.1.0`, which the validator world does not provide"
        ),
        "{e}"
    );
}
