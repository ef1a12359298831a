//! `cargo xtask <command>`: the project's developer commands.
//!
//! - `setup`: installs what the build and tests need, pinned, skipping what is already there;
//! - `build-web`: builds the frontend with Trunk (offline);
//! - `dev [ARGS]`: setup, build-web, then `aerogrid dev ARGS`;
//! - `test`: setup, formatting, clippy, build-web, every test (Rust and browser);
//! - `sqlx-prepare`: refreshes the `.sqlx/` query cache against a private PostgreSQL.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Xtask {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned tools and packages the build and tests need.
    Setup,
    /// Build the web frontend into `target/web` with Trunk.
    BuildWeb,
    /// Run the whole product locally (`aerogrid dev`); extra arguments go to it.
    Dev {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every check and test, as CI does.
    Test,
    /// Regenerate `.sqlx/` (the offline cache of checked queries).
    SqlxPrepare,
}

fn main() -> anyhow::Result<()> {
    let xtask = Xtask::parse();
    let root = project_root();
    std::env::set_current_dir(&root)?;
    match xtask.command {
        Task::Setup => setup::run(&root),
        Task::BuildWeb => build_web(&root),
        Task::Dev { args } => {
            setup::run(&root)?;
            build_web(&root)?;
            let mut command = cargo();
            command.args(["run", "--bin", "aerogrid", "--", "dev"]).args(args);
            command.env("AEROGRID_WEB_DIR", web_dir(&root));
            // The pinned uv, unless the caller chose one: apps' packages work out of the box.
            if std::env::var_os("AEROGRID_UV").is_none() {
                command.env("AEROGRID_UV", setup::uv_bin(&root));
            }
            run(&mut command)
        }
        Task::Test => test(&root),
        Task::SqlxPrepare => sqlx_prepare(&root),
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is one level down").to_owned()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

fn web_dir(root: &Path) -> PathBuf {
    target_dir(root).join("web")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command in the foreground, echoing it, and fails when it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}").replace('"', "");
    eprintln!("$ {shown}");
    let status = command.status().with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `step`, printing how long it took.
pub(crate) fn timed<T>(name: &str, step: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("==> {name}");
    let started = Instant::now();
    let result = step();
    let outcome = if result.is_ok() { "done" } else { "FAILED" };
    eprintln!("==> {name}: {outcome} in {:.1} s", started.elapsed().as_secs_f64());
    result
}

fn build_web(root: &Path) -> anyhow::Result<()> {
    timed("build the web frontend (trunk)", || {
        // Trunk runs cargo offline: fetch the frontend's crates first.
        run(cargo().args(["fetch", "--locked"]))?;
        let mut command = Command::new(setup::cargo_bin("trunk"));
        command
            .arg("build")
            .arg("--dist")
            .arg(web_dir(root))
            .env("PATH", setup::tool_path(root)?)
            .env("TRUNK_OFFLINE", "true");
        run(&mut command)
    })?;
    timed("build the Excel add-in", || {
        // Served by the backend under /excel/ (`excel/dist` after its build).
        run(Command::new("node").arg(root.join("excel").join("build.mjs")))?;
        let target = web_dir(root).join("excel");
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        copy_dir(&root.join("excel").join("dist"), &target)
    })
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn test(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    setup::run(root)?;
    timed("formatting", || run(cargo().args(["fmt", "--all", "--", "--check"])))?;
    timed("clippy (native)", || {
        run(cargo().args(["clippy", "--all-targets", "--locked", "--", "-D", "warnings"]))
    })?;
    timed("clippy (frontend and its API types, wasm32)", || {
        run(cargo().args([
            "clippy",
            "--package",
            "aerogrid-frontend",
            "--package",
            "aerogrid-api",
            "--target",
            "wasm32-unknown-unknown",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    build_web(root)?;
    timed("Python API tests", || {
        run(Command::new("python3").args([
            "-m",
            "unittest",
            "discover",
            "--start-directory",
            "connector/python/tests",
        ]))
    })?;
    timed("Rust tests", || {
        run(cargo()
            .args(["test", "--locked", "--", "--nocapture"])
            .env("AEROGRID_WEB_DIR", web_dir(root))
            .env("AEROGRID_SCHEMATHESIS", setup::schemathesis_bin(root))
            .env("AEROGRID_UV", setup::uv_bin(root)))
    })?;
    timed("Excel add-in tests (its functions against a real server)", || {
        run(Command::new("node")
            .args(["--test", "--test-concurrency=1", "excel/test/"])
            .env("AEROGRID_BIN", target_dir(root).join("debug").join("aerogrid"))
            .env("AEROGRID_NATIVE_PYTHON", setup::native_sample_python(root)))
    })?;
    timed("browser tests (e2e, Chromium)", || {
        run(Command::new("node")
            .args(["--test", "--test-concurrency=1", "e2e/tests/"])
            .env("AEROGRID_BIN", target_dir(root).join("debug").join("aerogrid"))
            .env("AEROGRID_WEB_DIR", web_dir(root))
            .env("AEROGRID_UV", setup::uv_bin(root))
            .env("AEROGRID_PYTHON_CACHE_DIR", target_dir(root).join("tmp").join("python-cache")))
    })?;
    eprintln!("All checks passed in {:.1} min.", started.elapsed().as_secs_f64() / 60.0);
    Ok(())
}

/// Starts a private PostgreSQL, applies `migrations/`, and rebuilds with the query macros writing
/// their data to `.sqlx/`.
fn sqlx_prepare(root: &Path) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let lock = aerogrid_devstack::DataDirLock::acquire(scratch.path())?;
        let postgres =
            aerogrid_devstack::PrivatePostgres::start(&scratch.path().join("pg"), &lock).await?;
        let result = async {
            let pool = sqlx::PgPool::connect(postgres.url()).await?;
            sqlx::migrate::Migrator::new(root.join("migrations")).await?.run(&pool).await?;
            pool.close().await;
            let offline_dir = root.join(".sqlx");
            if offline_dir.exists() {
                std::fs::remove_dir_all(&offline_dir)?;
            }
            std::fs::create_dir_all(&offline_dir)?;
            // The macros only write their data when they run: force the crates using them to
            // recompile.
            run(cargo().args([
                "clean",
                "--package",
                "aerogrid-backend",
                "--package",
                "aerogrid-runtime",
            ]))?;
            run(cargo()
                .args(["check", "--all-targets"])
                .env("SQLX_OFFLINE", "false")
                .env("DATABASE_URL", postgres.url())
                .env("SQLX_OFFLINE_DIR", &offline_dir))
        }
        .await;
        postgres.stop().await;
        result
    })
}
