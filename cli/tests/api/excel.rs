//! The Excel add-in as the server serves it: the manifest names this server's public URL in
//! every address, and every file it names is served from the same origin.

use crate::support;

use reqwest::{StatusCode, header};
use support::{DevStack, http};

/// The addresses (attribute values) in a manifest that start with `base`.
fn urls_under<'a>(manifest: &'a str, base: &str) -> Vec<&'a str> {
    manifest
        .match_indices(&format!("\"{base}"))
        .map(|(at, _)| {
            let rest = &manifest[at + 1..];
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_names_this_server_and_every_file_it_names_is_served() {
    let temp = tempfile::tempdir().unwrap();
    let stack = DevStack::start(&temp.path().join("data"));
    let client = http();
    let response = client.get(format!("{}/excel/manifest.xml", stack.url)).send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "is the web frontend (with the add-in) built? `cargo xtask build-web`"
    );
    assert!(
        response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/xml")
    );
    let manifest = response.text().await.unwrap();
    assert!(!manifest.contains("{{PUBLIC_URL}}"), "every placeholder is replaced");
    let urls = urls_under(&manifest, &format!("{}/excel/", stack.url));
    assert!(urls.len() >= 4, "the manifest names the add-in's files: {urls:?}");
    for url in &urls {
        let file = client.get(*url).send().await.unwrap();
        assert_eq!(file.status(), StatusCode::OK, "{url}");
    }
    let functions = client.get(format!("{}/excel/functions.json", stack.url)).send().await.unwrap();
    let metadata: serde_json::Value = functions.json().await.unwrap();
    let ids: Vec<&str> = metadata["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|function| function["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["VALUE", "GRID"]);

    // Behind a proxy: the configured public URL, not the address asked.
    drop(stack);
    let stack = DevStack::start_with_args(
        &temp.path().join("data2"),
        &["--public-url", "https://aerogrid.example.com/"],
    );
    let manifest = client
        .get(format!("{}/excel/manifest.xml", stack.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(urls_under(&manifest, &stack.url).is_empty(), "{manifest}");
    assert!(urls_under(&manifest, "https://aerogrid.example.com/excel/").len() >= 4, "{manifest}");
}
