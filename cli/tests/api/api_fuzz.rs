//! Schema-driven fuzzing of the REST API: schemathesis (from PyPI, installed by `cargo xtask
//! setup`) reads `/api/v1/openapi.json` from a real `aerogrid dev` and sends every operation
//! generated and boundary inputs. No answer may be a server error.

use crate::support;

use std::{path::PathBuf, process::Command};

use reqwest::Method;
use serde_json::json;
use support::{DevStack, api::Api};

const SEED: &str = include_str!("../../../connector/python/tests/seed.py");

fn schemathesis() -> PathBuf {
    let path = std::env::var_os("AEROGRID_SCHEMATHESIS").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target"),
            PathBuf::from,
        );
        target.join("tools/schemathesis/bin/schemathesis")
    });
    assert!(
        path.is_file(),
        "schemathesis is not installed at {}: run `cargo xtask setup` (or set AEROGRID_SCHEMATHESIS)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzzing_the_api_from_its_document_finds_no_server_error() {
    let binary = schemathesis();
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let api = Api::new(&stack);
    // Something real to act on: generated requests reach the handlers, not only the 404s.
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "acme" }))).await;
    api.admin(Method::POST, "/api/v1/teams", Some(json!({ "name": "customer" }))).await;
    api.admin(Method::PUT, "/api/v1/teams/acme/topics/orders", None).await;
    let app = json!({ "name": "orders", "code": SEED });
    api.admin(Method::POST, "/api/v1/teams/acme/apps", Some(app)).await;
    let config = temp.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        "[parameters]\nteam = \"acme\"\napp = \"orders\"\nwith = \"customer\"\npattern = \"orders\"\n",
    )
    .unwrap();

    let output = Command::new(&binary)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/v1/openapi.json", stack.url)])
        .args(["--header", &format!("Authorization: Bearer {}", stack.file("admin-token"))])
        .args(["--checks", "not_a_server_error", "--max-examples", "25"])
        .args(["--phases", "coverage,fuzzing", "--request-timeout", "10", "--no-color"])
        // A followed log never ends by itself; a password change may revoke the admin's tokens
        // (`revoke_tokens`), the fuzzer's own credential among them, and end the run's reach.
        .args(["--exclude-path-regex", "/follow$|/me/password$"])
        .current_dir(temp.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("Tested: 41"),
        "every operation but the followed log and the password change was fuzzed:\n{report}"
    );
    assert!(!stack.stderr().contains("panicked"), "the server panicked:\n{}", stack.stderr());
}
