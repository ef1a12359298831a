//! Locking against the real PyPI through the pinned uv (`cargo xtask setup` installs it), with
//! its downloads cached under target/.

use std::{path::PathBuf, time::Duration};

use aerogrid_packages::{LockError, Requirements, Target, Uv};

fn target_dir() -> PathBuf {
    let executable = std::env::current_exe().unwrap();
    executable.ancestors().nth(3).unwrap().to_owned()
}

fn uv() -> Uv {
    let binary = std::env::var_os("AEROGRID_UV").map_or_else(
        || target_dir().join("tools").join("uv").join("bin").join("uv"),
        PathBuf::from,
    );
    assert!(
        binary.exists(),
        "uv is not installed at {}: run `cargo xtask setup`",
        binary.display()
    );
    Uv {
        binary,
        cache_dir: target_dir().join("tools").join("uv-cache"),
        index_url: None,
        extra_index_urls: Vec::new(),
        timeout: Duration::from_secs(120),
    }
}

fn runtime_target() -> Target {
    Target { python_version: "3.11".into(), platform: "x86_64-manylinux_2_28".into() }
}

async fn line_errors(text: &str) -> Vec<(u32, String)> {
    let requirements = Requirements::parse(text).unwrap();
    match uv().lock(&requirements, &runtime_target()).await {
        Err(LockError::Requirements(errors)) => {
            errors.into_iter().map(|error| (error.line, error.message)).collect()
        }
        other => panic!("{text:?} locked: {other:?}"),
    }
}

#[tokio::test]
async fn numpy_and_pandas_lock_to_exact_versions_with_hashes() {
    let requirements = Requirements::parse("# data\nnumpy>=2\npandas>=2.2\n").unwrap();
    let lock = uv().lock(&requirements, &runtime_target()).await.unwrap();
    let packages = lock.packages();
    let names: Vec<&str> = packages.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in ["numpy", "pandas", "python-dateutil"] {
        assert!(names.contains(&wanted), "{wanted} in {packages:?}");
    }
    let (_, numpy) = packages.iter().find(|(name, _)| name == "numpy").unwrap();
    assert!(numpy.starts_with('2'), "numpy {numpy}");
    assert!(lock.text.contains("--hash=sha256:"), "{}", lock.text);
    let empty = uv().lock(&Requirements::default(), &runtime_target()).await.unwrap();
    assert_eq!(empty.text, "");
}

#[tokio::test]
async fn what_cannot_be_installed_is_said_on_its_line() {
    let unknown = line_errors("numpy\nnumpyy-not-a-package\n").await;
    assert_eq!(unknown[0].0, 2, "{unknown:?}");
    assert!(unknown[0].1.contains("not found in the package registry"), "{unknown:?}");

    let impossible = line_errors("# pins\nnumpy==0.0.1\n").await;
    assert_eq!(impossible[0].0, 2, "{impossible:?}");
    assert!(impossible[0].1.contains("there is no version of numpy==0.0.1"), "{impossible:?}");

    let conflicting = line_errors("numpy>=2\nnumpy<1\n").await;
    assert_eq!(conflicting[0].0, 1, "{conflicting:?}");

    // pycrypto has only a source distribution: building it would run its code.
    let sdist_only = line_errors("numpy\npycrypto\n").await;
    assert_eq!(sdist_only[0].0, 2, "{sdist_only:?}");
    assert!(sdist_only[0].1.contains("no usable wheels"), "{sdist_only:?}");
}

#[tokio::test]
async fn an_unreachable_index_is_not_the_users_error_and_keeps_its_credentials() {
    let uv = Uv { index_url: Some("http://bob:hunter2@127.0.0.1:9/simple".into()), ..uv() };
    let requirements = Requirements::parse("numpy\n").unwrap();
    match uv.lock(&requirements, &runtime_target()).await {
        Err(LockError::Unavailable(reason)) => {
            assert!(!reason.contains("hunter2"), "{reason}");
        }
        other => panic!("locked against no index: {other:?}"),
    }
}
