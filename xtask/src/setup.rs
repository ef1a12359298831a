//! `cargo xtask setup`: every tool the build and tests need, pinned, installed only when missing.
//! Nothing comes from anywhere but cargo, npm, pip and apt.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::timed;

/// Build tools installed with `cargo install`, pinned.
struct CargoTool {
    krate: &'static str,
    binary: &'static str,
    version: &'static str,
    /// `--version` output must contain this (and `--help` the `help_marker`, when set).
    expected_version: &'static str,
    help_marker: Option<&'static str>,
    extra_args: &'static [&'static str],
    first_build: &'static str,
}

const CARGO_TOOLS: &[CargoTool] = &[
    CargoTool {
        // The local broker of `aerogrid dev`; libsql is its persistent storage engine.
        krate: "tansu",
        binary: "tansu",
        version: aerogrid_devstack::TANSU_VERSION,
        expected_version: concat!("tansu ", "0.6.0"),
        help_marker: Some("libsql"),
        // Without --locked its postgres storage does not compile.
        extra_args: &["--locked", "--features", "dynostore,postgres,libsql"],
        first_build: "15-25 min",
    },
    CargoTool {
        // Must equal the `wasm-bindgen` crate version in Cargo.lock exactly.
        krate: "wasm-bindgen-cli",
        binary: "wasm-bindgen",
        version: "0.2.130",
        expected_version: "wasm-bindgen 0.2.130",
        help_marker: None,
        // Its lockfile names a yanked crate: --locked fails.
        extra_args: &[],
        first_build: "4 min",
    },
    CargoTool {
        krate: "trunk",
        binary: "trunk",
        // 0.22 needs a newer rustc than the machine's.
        version: "0.21.14",
        expected_version: "trunk 0.21.14",
        help_marker: None,
        extra_args: &["--locked"],
        first_build: "15 min",
    },
];

/// Debian packages: the browser for e2e tests, PostgreSQL's server binaries for the private
/// cluster, and what rdkafka's bundled librdkafka (and later PyO3) build against.
const APT_PACKAGES: &[&str] = &[
    "chromium",
    "postgresql",
    "build-essential",
    "pkg-config",
    "libssl-dev",
    "zlib1g-dev",
    "python3-dev",
];

/// The API fuzzer (schema-driven, from the OpenAPI document), in a virtualenv of its own.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The Python package manager that locks and installs apps' packages (`aerogrid-packages`).
const UV: &str = "uv==0.13.9";

/// Where uv is installed (tests find it there, or at `AEROGRID_UV`).
pub(crate) fn uv_bin(root: &Path) -> PathBuf {
    crate::target_dir(root).join("tools").join("uv").join("bin").join("uv")
}

/// Where the API fuzzer's virtualenv lives (tests find it there, or at `AEROGRID_SCHEMATHESIS`).
pub(crate) fn schemathesis_bin(root: &Path) -> PathBuf {
    crate::target_dir(root).join("tools").join("schemathesis").join("bin").join("schemathesis")
}

/// The Python that runs the Excel add-in's native-client sample (grpcio, pinned in its
/// requirements file), in a virtualenv of its own.
pub(crate) fn native_sample_python(root: &Path) -> PathBuf {
    crate::target_dir(root).join("tools").join("excel-native").join("bin").join("python")
}

/// The Python of the benchmarks' peer scripts (`cli/benches/peer/`); the runtime benchmark finds
/// it here or at `AEROGRID_PEER_PYTHON`.
pub(crate) fn bench_peer_python(root: &Path) -> PathBuf {
    crate::target_dir(root).join("tools").join("bench-peer").join("bin").join("python")
}

/// npm projects whose `node_modules` the build and tests use.
const NPM_PROJECTS: &[&str] = &["frontend", "e2e"];

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    timed("setup", || {
        timed("rust target wasm32-unknown-unknown", || {
            let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
            if installed.lines().any(|line| line.trim() == "wasm32-unknown-unknown") {
                eprintln!("    already installed");
                return Ok(());
            }
            crate::run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
        })?;
        for tool in CARGO_TOOLS {
            install_cargo_tool(tool)?;
        }
        install_apt_packages()?;
        check_node()?;
        for project in NPM_PROJECTS {
            install_npm_project(&root.join(project))?;
        }
        install_schemathesis(root)?;
        install_uv(root)?;
        install_native_sample_python(root)?;
        install_bench_peer_python(root)
    })
}

fn install_cargo_tool(tool: &CargoTool) -> anyhow::Result<()> {
    let name = format!("{} {}", tool.krate, tool.version);
    timed(&name, || {
        let binary = cargo_bin(tool.binary);
        if is_installed(&binary, tool) {
            eprintln!("    already installed: {}", binary.display());
            return Ok(());
        }
        eprintln!("    installing with cargo (takes about {} the first time)", tool.first_build);
        let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        command.args(["install", tool.krate, "--version", tool.version, "--force"]);
        command.args(tool.extra_args);
        // Keep its build out of the workspace's target dir and jobserver. These are dev tools:
        // parallel codegen without LTO builds them several times faster on two cores.
        command
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_MAKEFLAGS")
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
        crate::run(&mut command)?;
        if !is_installed(&binary, tool) {
            bail!(
                "`{}` still does not report `{}` after installing",
                binary.display(),
                tool.expected_version
            );
        }
        Ok(())
    })
}

fn is_installed(binary: &Path, tool: &CargoTool) -> bool {
    let version = output(Command::new(binary).arg("--version")).unwrap_or_default();
    if !version.contains(tool.expected_version) {
        return false;
    }
    match tool.help_marker {
        Some(marker) => {
            output(Command::new(binary).arg("--help")).unwrap_or_default().contains(marker)
        }
        None => true,
    }
}

fn install_apt_packages() -> anyhow::Result<()> {
    timed("Debian packages", || {
        let missing: Vec<&str> = APT_PACKAGES
            .iter()
            .copied()
            .filter(|package| {
                let status =
                    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
                !status.is_ok_and(|status| status.contains("install ok installed"))
            })
            .collect();
        if missing.is_empty() {
            eprintln!("    already installed: {}", APT_PACKAGES.join(", "));
            return Ok(());
        }
        let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
        let apt = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.to_vec();
            all.push("apt-get");
            all.extend_from_slice(args);
            let mut command = Command::new(all[0]);
            command.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            crate::run(&mut command)
        };
        apt(&["update", "-q"])?;
        let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
        install.extend(&missing);
        apt(&install).with_context(|| format!("installing {}", missing.join(", ")))
    })
}

/// The Node.js major version the npm lockfiles, the frontend build and the JavaScript tests are
/// made for (also `engines` in each `package.json`).
const NODE_MAJOR: u32 = 20;

/// Node.js is the machine's: another major version fails here, with what to do, rather than
/// somewhere in a test.
fn check_node() -> anyhow::Result<()> {
    timed(&format!("node {NODE_MAJOR}"), || {
        let version = output(Command::new("node").arg("--version"))
            .context("Node.js is needed (`node` on PATH)")?;
        let major = version.trim().trim_start_matches('v').split('.').next().unwrap_or_default();
        if major.parse::<u32>().ok() != Some(NODE_MAJOR) {
            anyhow::bail!(
                "Node.js {} found; the build and tests are pinned to Node.js {NODE_MAJOR}.x: install it (e.g. NodeSource's `nodejs` {NODE_MAJOR}.x package)",
                version.trim()
            );
        }
        eprintln!("    {}", version.trim());
        Ok(())
    })
}

fn install_npm_project(dir: &Path) -> anyhow::Result<()> {
    let name =
        format!("npm packages of {}/", dir.file_name().unwrap_or_default().to_string_lossy());
    timed(&name, || {
        let lock = dir.join("package-lock.json");
        let installed = dir.join("node_modules").join(".package-lock.json");
        let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified()).ok();
        if let (Some(lock), Some(installed)) = (modified(&lock), modified(&installed))
            && installed >= lock
        {
            eprintln!("    up to date");
            return Ok(());
        }
        crate::run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(dir))
    })
}

fn install_schemathesis(root: &Path) -> anyhow::Result<()> {
    install_pip_tool(SCHEMATHESIS, &schemathesis_bin(root))
}

fn install_uv(root: &Path) -> anyhow::Result<()> {
    install_pip_tool(UV, &uv_bin(root))
}

/// `spec` (`name==version`) in a virtualenv of its own, whose `bin/` holds `binary`.
fn install_pip_tool(spec: &str, binary: &Path) -> anyhow::Result<()> {
    timed(spec, || {
        let wanted = spec.split("==").nth(1).unwrap_or_default();
        if output(Command::new(binary).arg("--version")).is_ok_and(|out| out.contains(wanted)) {
            eprintln!("    already installed");
            return Ok(());
        }
        let venv = binary.parent().and_then(Path::parent).context("the venv's folder")?;
        crate::run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv))?;
        crate::run(Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            spec,
        ]))
    })
}

fn install_native_sample_python(root: &Path) -> anyhow::Result<()> {
    let requirements = root.join("excel").join("native-sample").join("requirements.txt");
    install_requirements(
        "Python packages of the Excel native-client sample",
        "python3",
        &native_sample_python(root),
        &requirements,
    )
}

fn install_bench_peer_python(root: &Path) -> anyhow::Result<()> {
    let requirements = root.join("cli").join("benches").join("peer").join("requirements.txt");
    // The CPython connectors embed: the peer runs on the same interpreter.
    install_requirements(
        "Python packages of the benchmarks' peer scripts",
        "/usr/bin/python3.11",
        &bench_peer_python(root),
        &requirements,
    )
}

/// A virtualenv of `interpreter` whose `python` is `python`, with exactly `requirements` installed.
fn install_requirements(
    what: &str,
    interpreter: &str,
    python: &Path,
    requirements: &Path,
) -> anyhow::Result<()> {
    timed(what, || {
        let venv = python.parent().and_then(Path::parent).context("the venv's folder")?;
        // Installed for exactly this requirements file: a copy of it marks the install.
        let marker = venv.join("requirements.txt");
        let wanted = std::fs::read_to_string(requirements)?;
        if python.exists() && std::fs::read_to_string(&marker).is_ok_and(|had| had == wanted) {
            eprintln!("    already installed");
            return Ok(());
        }
        crate::run(Command::new(interpreter).args(["-m", "venv", "--clear"]).arg(venv))?;
        crate::run(
            Command::new(venv.join("bin").join("pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(requirements),
        )?;
        std::fs::write(&marker, wanted)?;
        Ok(())
    })
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// Where `cargo install` puts binaries.
pub(crate) fn cargo_bin(binary: &str) -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
    });
    cargo_home.join("bin").join(binary)
}

/// PATH for the frontend build: npm's pinned wasm-opt first (Debian's breaks the wasm), then
/// cargo's bin dir (wasm-bindgen), then the rest.
pub(crate) fn tool_path(root: &Path) -> anyhow::Result<std::ffi::OsString> {
    let mut dirs = vec![
        root.join("frontend").join("node_modules").join(".bin"),
        cargo_bin("").parent().map(Path::to_owned).unwrap_or_default(),
    ];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    Ok(std::env::join_paths(dirs)?)
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let output = command.output()?;
    if !output.status.success() {
        bail!("exited with {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
