//! `aerogrid`: one binary for the whole platform.
//!
//! - `aerogrid dev` runs everything on one machine, starting PostgreSQL and a broker if needed;
//! - `aerogrid server` runs the backend (control plane, gateway, web frontend);
//! - `aerogrid runtime` runs a runtime node;
//! - `aerogrid snapshot` prints a grid, read through the gateway;
//! - `aerogrid watch` shows a grid live;
//! - `aerogrid produce` sends lines of standard input to a topic (for trying apps out).

mod data_files;
mod dev;
mod grids;
mod produce;
mod services;
mod watch;

use std::{net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aerogrid",
    version,
    about = "Live Kafka data, shaped by Python, in web pages and Excel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine: server, runtime node, and (unless DATABASE_URL and
    /// KAFKA_BROKERS are set) a private PostgreSQL and a local broker.
    Dev(Box<dev::DevArgs>),
    /// Run the backend: REST API, grid gateway and web frontend, on one port.
    Server(services::ServerCommand),
    /// Run a runtime node, which runs the apps' connectors.
    Runtime(services::RuntimeCommand),
    /// Print a grid once as JSON: {"columns": [...], "rows": {"<key>": {"<column>": value}}}.
    Snapshot(grids::SnapshotCommand),
    /// Show a grid live: a table in the terminal (changed cells highlighted), or one JSON line
    /// per update when the output is not a terminal.
    Watch(watch::WatchCommand),
    /// Send lines of standard input (`KEY<TAB>VALUE` or `VALUE`) to a topic, creating it if
    /// missing.
    Produce(produce::ProduceCommand),
    /// A connector process (started by runtime nodes, speaking their pipe protocol).
    #[command(hide = true)]
    Connector {
        /// Run user code without the sandbox: for debugging, and the benchmark's baseline.
        #[arg(long)]
        no_sandbox: bool,
        /// Keep the kernel's layers but not the audit hook: tests check those layers alone.
        #[arg(long, hide = true)]
        no_audit_hook: bool,
        /// As root: the user (and group) id to run user code as, instead of `nobody`.
        #[arg(long)]
        uid: Option<u32>,
        /// The app's installed packages (a read-only environment the node prepared): imports
        /// find them after the standard library.
        #[arg(long)]
        python_env: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A connector process runs no async runtime and no tracing of ours: only the interpreter.
    if let Command::Connector { no_sandbox, no_audit_hook, uid, python_env } = cli.command {
        let sandbox = match (no_sandbox, no_audit_hook) {
            (true, _) => aerogrid_connector::Sandbox::Off,
            (false, true) => aerogrid_connector::Sandbox::KernelOnly,
            (false, false) => aerogrid_connector::Sandbox::On,
        };
        return aerogrid_connector::main(sandbox, uid, python_env);
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // `dev` starts its child processes from this (main) thread: their parent-death signal is
    // tied to the thread that forked them, and the main thread lives as long as the process.
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev(args) => dev::run(*args).await,
            Command::Server(command) => command.run().await.map(|()| ExitCode::SUCCESS),
            Command::Runtime(command) => command.run().await.map(|()| ExitCode::SUCCESS),
            Command::Snapshot(command) => command.run().await.map(|()| ExitCode::SUCCESS),
            Command::Watch(command) => command.run().await.map(|()| ExitCode::SUCCESS),
            Command::Produce(command) => command.run().await.map(|()| ExitCode::SUCCESS),
            Command::Connector { .. } => unreachable!("handled before the async runtime starts"),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,aerogrid=info,aerogrid_backend=info,aerogrid_runtime=info,aerogrid_devstack=info,aerogrid_kafka=info",
        )
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Binds the HTTP listener, with a hint when the port is taken.
async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
            "; another program uses that port: pass --addr with another port (port 0 picks a free one)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr}: {error}{hint}")
    })
}

/// Completes on the first SIGINT or SIGTERM, and says which.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    /// ARCHITECTURE.md is where the next person starts: every crate of the workspace has its
    /// section in the code map, and every command of the binary its place in the entry points.
    #[test]
    fn the_architecture_names_every_crate_and_command() {
        let architecture = include_str!("../../ARCHITECTURE.md");
        let manifest = include_str!("../../Cargo.toml");
        let members = manifest
            .lines()
            .find_map(|line| line.strip_prefix("members = "))
            .expect("the workspace lists its members");
        let headings: Vec<&str> =
            architecture.lines().filter(|line| line.starts_with("### ")).collect();
        for member in members.trim_matches(['[', ']']).split(',') {
            let directory = format!("`{}/`", member.trim().trim_matches('"'));
            assert!(
                headings.iter().any(|heading| heading.contains(&directory)),
                "ARCHITECTURE.md has no code-map section for {directory}"
            );
        }
        let entry_points = architecture
            .split("## Entry points")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("an Entry points section");
        let command = <super::Cli as clap::CommandFactory>::command();
        for subcommand in command.get_subcommands() {
            let name = format!("`{}`", subcommand.get_name());
            assert!(
                entry_points.contains(&name),
                "ARCHITECTURE.md's entry points do not name {name}"
            );
        }
    }
}
