//! The runtime node's main loop: claim the apps that should run, run each in its own task, stop
//! the ones that should not.

use std::{collections::HashMap, future::Future, path::PathBuf, time::Duration};

use aerogrid_kafka::KafkaSettings;
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::{
    Result,
    app::{NodeContext, Stop, run_app},
    connector::{ConnectorUids, WarmPool},
    db,
    limits::Limits,
    relay::Relay,
    status::OutputLimits,
};

/// Leases are renewed and apps claimed this often, and at once when Postgres notifies a change.
const POLL: Duration = Duration::from_secs(1);
/// Logs and bad records past their retention are deleted this often.
const SWEEP: Duration = Duration::from_secs(60);
/// The channel `migrations/*_app_notify.up.sql` notifies on a Start or Stop.
const APPS_CHANNEL: &str = "aerogrid_apps";
/// The channel `migrations/*_tenant_isolation.up.sql` notifies on a revoked grant (and other
/// access changes): the apps' topics are checked at once.
const ACCESS_CHANNEL: &str = "aerogrid_access";

/// Settings of a runtime node.
#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    /// This node's name in leases and logs (default: host name and process id).
    #[arg(long, env = "AEROGRID_NODE_ID")]
    pub node_id: Option<String>,
    /// Connector processes kept started ahead of time.
    #[arg(long, env = "AEROGRID_CONNECTOR_POOL", default_value_t = 2)]
    pub connector_pool: usize,
    /// Create input topics that do not exist (for a broker of one's own, like the dev stack's)
    /// instead of waiting for them.
    #[arg(long, env = "AEROGRID_CREATE_TOPICS", default_value_t = false)]
    pub create_topics: bool,
    /// Seconds an app lease lasts without renewal: the apps of a node that died move to
    /// another node after this long.
    #[arg(long, env = "AEROGRID_LEASE_SECONDS", default_value_t = 10.0)]
    pub lease_seconds: f64,
    /// Memory of an app's connector process, in MiB, unless the app sets its own.
    #[arg(long, env = "AEROGRID_CONNECTOR_MEMORY_MIB", default_value_t = 512)]
    pub connector_memory_mib: u64,
    /// The most memory any app's connector may have here, in MiB, whatever the app asks: an
    /// app asking for more fails with that reason.
    #[arg(long, env = "AEROGRID_MAX_CONNECTOR_MEMORY_MIB", default_value_t = 4096)]
    pub max_connector_memory_mib: u64,
    /// Seconds a stream step, timer or module import may run without yielding before its app
    /// is stopped and fails.
    #[arg(long, env = "AEROGRID_CONNECTOR_STALL_SECONDS", default_value_t = 5.0)]
    pub connector_stall_seconds: f64,
    /// Rows of one grid; an app whose grid grows beyond it fails.
    #[arg(long, env = "AEROGRID_MAX_GRID_ROWS", default_value_t = 100_000)]
    pub max_grid_rows: usize,
    /// Size of all grids of one app, in MiB; an app whose grids grow beyond it fails.
    #[arg(long, env = "AEROGRID_MAX_GRID_MIB", default_value_t = 256)]
    pub max_grid_mib: u64,
    /// Row changes per second of one app (all its grids); a faster app is slowed down.
    #[arg(long, env = "AEROGRID_MAX_GRID_CHANGES_PER_SECOND", default_value_t = 500_000.0)]
    pub max_grid_changes_per_second: f64,
    /// Bytes of a grid row's key; an app that sends a longer one fails.
    #[arg(long, env = "AEROGRID_MAX_GRID_KEY_BYTES", default_value_t = 4096)]
    pub max_grid_key_bytes: usize,
    /// Bytes of text in one grid cell; an app that sends more fails.
    #[arg(long, env = "AEROGRID_MAX_GRID_CELL_BYTES", default_value_t = 1 << 20)]
    pub max_grid_cell_bytes: usize,
    /// Bytes of one changelog record, unless the broker tells its `max.message.bytes`:
    /// snapshots and deltas are cut below it; an app with a row larger fails.
    #[arg(long, env = "AEROGRID_CHANGELOG_RECORD_BYTES", default_value_t = 1_000_000)]
    pub changelog_record_bytes: usize,
    /// Bytes of one log line (or bad-record reason) of an app; longer ones are cut, with their
    /// size.
    #[arg(long, env = "AEROGRID_MAX_LOG_LINE_BYTES", default_value_t = 8192)]
    pub max_log_line_bytes: usize,
    /// Bytes kept of a bad record's key and of its value (their sizes are kept in full).
    #[arg(long, env = "AEROGRID_MAX_BAD_RECORD_BYTES", default_value_t = 16384)]
    pub max_bad_record_bytes: usize,
    /// Log lines per second of one app; lines beyond are dropped, with one warning per run.
    #[arg(long, env = "AEROGRID_MAX_LOG_LINES_PER_SECOND", default_value_t = 1000.0)]
    pub max_log_lines_per_second: f64,
    /// Newest log lines kept per app.
    #[arg(long, env = "AEROGRID_LOGS_KEPT_PER_APP", default_value_t = 100_000)]
    pub logs_kept_per_app: i64,
    /// Newest bad records kept per app.
    #[arg(long, env = "AEROGRID_BAD_RECORDS_KEPT_PER_APP", default_value_t = 10_000)]
    pub bad_records_kept_per_app: i64,
    /// Days logs and bad records are kept.
    #[arg(long, env = "AEROGRID_OUTPUT_RETENTION_DAYS", default_value_t = 7.0)]
    pub output_retention_days: f64,
    /// User ids for connectors, `FIRST-LAST`, when this node runs as root: each connector
    /// process runs as one no other running connector has (and its own group), so no two apps
    /// share a user. Ids of no account on the machine: they own no file. Nodes on one host need
    /// ranges of their own.
    #[arg(long, env = "AEROGRID_CONNECTOR_UIDS", default_value = "1879048192-1879113727", value_parser = parse_uid_range)]
    pub connector_uids: (u32, u32),
    /// Where this node serves the changelog relay: gateways follow an app's changes here as
    /// soon as the broker confirms them, instead of reading them back from the broker.
    #[arg(long, env = "AEROGRID_RELAY_LISTEN", default_value = "127.0.0.1:0")]
    pub relay_listen: std::net::SocketAddr,
    /// `host:port` at which gateways reach the relay (default: the address it listens on; needed
    /// when that is 0.0.0.0 or behind a mapping, e.g. the pod's IP on Kubernetes).
    #[arg(long, env = "AEROGRID_RELAY_ADVERTISE")]
    pub relay_advertise: Option<String>,
    /// Relay nothing: gateways read every change from the changelog (one broker hop more).
    #[arg(long, env = "AEROGRID_NO_RELAY", default_value_t = false)]
    pub no_relay: bool,
    /// Run user code without the sandbox (no namespaces, landlock, seccomp or audit hook).
    /// Only for debugging and benchmarks: user code can then reach the network and this node.
    #[arg(long, env = "AEROGRID_NO_SANDBOX", default_value_t = false)]
    pub no_sandbox: bool,
}

fn parse_uid_range(text: &str) -> std::result::Result<(u32, u32), String> {
    let (first, last) = text.split_once('-').ok_or("a range of user ids is FIRST-LAST")?;
    let id = |text: &str| text.trim().parse::<u32>().map_err(|error| format!("`{text}`: {error}"));
    let (first, last) = (id(first)?, id(last)?);
    if first == 0 || first > last {
        return Err("a range of user ids starts above 0 and ends at or after its start".into());
    }
    Ok((first, last))
}

impl NodeArgs {
    fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

struct RunningApp {
    stop: watch::Sender<Stop>,
    /// The app's team's topic grants, as of the last renewal (None before the first): the run
    /// checks again whenever they change.
    grants: watch::Sender<Option<Vec<String>>>,
    task: JoinHandle<()>,
    /// The app's Start/Restart count this run began with.
    start_generation: i64,
}

/// Runs the node until `shutdown` completes.
pub async fn run(
    db: sqlx::PgPool,
    kafka: KafkaSettings,
    args: NodeArgs,
    packages: aerogrid_packages::PackageSettings,
    registry: aerogrid_registry::Registry,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    sqlx::query("SELECT 1").execute(&db).await?;
    kafka.probe(Duration::from_secs(10)).await?;
    let node_id = args.node_id();
    let connector_binary = std::env::var_os("AEROGRID_CONNECTOR_BIN").map(PathBuf::from).unwrap_or(
        std::env::current_exe().map_err(|error| {
            crate::Error::Connector(format!("cannot find the aerogrid binary: {error}"))
        })?,
    );
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code, reason = "geteuid has no safe wrapper in std")]
    let is_root = unsafe { libc::geteuid() } == 0;
    let uids = is_root.then(|| ConnectorUids::new(args.connector_uids.0, args.connector_uids.1));
    let pool = WarmPool::start(connector_binary, args.connector_pool, !args.no_sandbox, uids);
    let changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let relay = if args.no_relay {
        None
    } else {
        Some(Relay::serve(args.relay_listen, args.relay_advertise.as_deref()).await?)
    };
    let (relay, endpoint) = relay.unzip();
    let listing = NodeListing {
        node_id: node_id.clone(),
        relay_url: endpoint.as_ref().map(|endpoint| endpoint.url.clone()),
        relay_token: endpoint.map(|endpoint| endpoint.token),
    };
    db::register_node(&db, &node_id, listing.relay_url.as_deref(), listing.relay_token.as_deref())
        .await?;
    let context = NodeContext {
        packages,
        registry,
        relay,
        wake: changed.clone(),
        db: db.clone(),
        kafka: kafka.clone(),
        pool,
        node_id: node_id.clone(),
        create_topics: args.create_topics,
        limits: Limits {
            memory_bytes: args.connector_memory_mib << 20,
            max_memory_bytes: args.max_connector_memory_mib.max(args.connector_memory_mib) << 20,
            stall: Duration::from_secs_f64(args.connector_stall_seconds.max(0.1)),
            grid_rows: args.max_grid_rows,
            grid_bytes: args.max_grid_mib << 20,
            changes_per_second: args.max_grid_changes_per_second.max(1.0),
            key_bytes: args.max_grid_key_bytes,
            cell_bytes: args.max_grid_cell_bytes,
            changelog_record_bytes: args.changelog_record_bytes.max(4096),
        },
        output: OutputLimits {
            line_bytes: args.max_log_line_bytes.max(64),
            payload_bytes: args.max_bad_record_bytes,
            lines_per_second: args.max_log_lines_per_second.max(1.0),
            logs_kept: args.logs_kept_per_app.max(1),
            bad_records_kept: args.bad_records_kept_per_app.max(1),
        },
    };
    tracing::info!(node = %node_id, brokers = %kafka.brokers, "Runtime node ready.");

    let mut running: HashMap<Uuid, RunningApp> = HashMap::new();
    let mut poll = tokio::time::interval(POLL);
    let listener = tokio::spawn(listen_for_app_changes(db.clone(), changed.clone()));
    let sweeper = tokio::spawn(sweep(db.clone(), listing, args.output_retention_days));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = poll.tick() => {}
            () = changed.notified() => {}
        }
        running.retain(|_, app| !app.task.is_finished());
        let ids: Vec<Uuid> = running.keys().copied().collect();
        match db::renew_leases(&db, &node_id, &ids, args.lease_seconds).await {
            Ok(kept) => {
                for (id, app) in &running {
                    match kept.iter().find(|held| held.app_id == *id) {
                        // Stopped or deleted by the user, or taken by another node.
                        None => app.stop.send_replace(Stop::Stopped),
                        // Started again or restarted: the task ends, and the claim below (once
                        // it has) starts a fresh run.
                        Some(held) if held.start_generation != app.start_generation => {
                            app.stop.send_replace(Stop::Restart)
                        }
                        Some(held) => {
                            app.grants.send_if_modified(|grants| {
                                let changed = grants.as_ref() != Some(&held.grants);
                                if changed {
                                    *grants = Some(held.grants.clone());
                                }
                                changed
                            });
                            continue;
                        }
                    };
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot renew app leases."),
        }
        match db::claim_apps(&db, &node_id, args.lease_seconds).await {
            Ok(claims) => {
                for claim in claims {
                    if running.contains_key(&claim.app_id) {
                        continue;
                    }
                    let (stop, stop_receiver) = watch::channel(Stop::KeepRunning);
                    // A run checks the grants it starts with itself; this carries changes. The
                    // first renewal counts as one: the grants may have changed since the run
                    // read them.
                    let (grants, grants_receiver) = watch::channel(None);
                    let task = tokio::spawn(run_app(
                        context.clone(),
                        claim.app_id,
                        claim.epoch,
                        stop_receiver,
                        grants_receiver,
                    ));
                    running.insert(
                        claim.app_id,
                        RunningApp { stop, grants, task, start_generation: claim.start_generation },
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot claim apps."),
        }
    }

    listener.abort();
    sweeper.abort();
    for app in running.values() {
        let _ = app.stop.send(Stop::Leave);
    }
    for (app_id, app) in running {
        if tokio::time::timeout(Duration::from_secs(10), app.task).await.is_err() {
            tracing::warn!(%app_id, "App did not stop within 10 s.");
        }
        // The next node (or this one, restarted) takes the app at once.
        if let Err(error) = db::release_lease(&db, &node_id, app_id).await {
            tracing::warn!(%error, "Cannot release an app lease.");
        }
    }
    if let Err(error) = db::unregister_node(&db, &node_id).await {
        tracing::warn!(%error, "Cannot remove this node from runtime_nodes.");
    }
    tracing::info!("Runtime node stopped.");
    Ok(())
}

/// What this node says of itself in `runtime_nodes`.
struct NodeListing {
    node_id: String,
    relay_url: Option<String>,
    relay_token: Option<String>,
}

/// Deletes logs and bad records past their retention, every `SWEEP`, and says the node is still
/// up. (Every node sweeps; a sweep that finds nothing costs an index lookup.)
async fn sweep(db: sqlx::PgPool, node: NodeListing, retention_days: f64) {
    let max_age_seconds = retention_days.max(0.0) * 86_400.0;
    // A retention shorter than the sweep is kept to within half of it.
    let every = SWEEP.min(Duration::from_secs_f64((max_age_seconds / 2.0).max(1.0)));
    let mut sweep = tokio::time::interval(every);
    loop {
        sweep.tick().await;
        if let Err(error) = db::delete_old_output(&db, max_age_seconds).await {
            tracing::warn!(%error, "Cannot delete old logs and bad records.");
        }
        let (url, token) = (node.relay_url.as_deref(), node.relay_token.as_deref());
        if let Err(error) = db::refresh_nodes(&db, &node.node_id, url, token).await {
            tracing::warn!(%error, "Cannot refresh runtime_nodes.");
        }
    }
}

/// Wakes the main loop whenever an app's desired state changes. Polling still runs: a lost
/// connection only delays things to the next poll.
async fn listen_for_app_changes(db: sqlx::PgPool, changed: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        let listening = async {
            // Runs until the connection fails.
            let mut listener = sqlx::postgres::PgListener::connect_with(&db).await?;
            listener.listen_all([APPS_CHANNEL, ACCESS_CHANNEL]).await?;
            loop {
                listener.recv().await?;
                changed.notify_one();
            }
        };
        let result: std::result::Result<std::convert::Infallible, sqlx::Error> = listening.await;
        let Err(error) = result;
        tracing::debug!(%error, "Listening for app changes failed; polling meanwhile.");
        tokio::time::sleep(POLL).await;
    }
}
