//! `aerogrid dev`: the whole platform on one machine.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use aerogrid_backend::{ServerArgs, ServerState, bootstrap, db};
use aerogrid_devstack::{BrokerStorage, ChildExit, DataDirLock, LocalBroker, PrivatePostgres};
use aerogrid_kafka::{KafkaArgs, KafkaSettings};
use anyhow::Context;
use tokio::sync::watch;

use crate::data_files::{self, DataFiles};

/// How long the server and the runtime node get to finish after a stop signal.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub(crate) struct DevArgs {
    /// Address to listen on (port 0 picks a free port; the URL is written to `<data-dir>/url`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where the dev stack keeps its database, broker data and credentials.
    #[arg(long, default_value = ".aerogrid")]
    data_dir: PathBuf,
    /// PostgreSQL to use instead of starting a private cluster in the data dir.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Storage of the local broker (when KAFKA_BROKERS is unset).
    #[arg(long, value_enum, default_value_t = BrokerStorage::Sqlite)]
    broker_storage: BrokerStorage,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    node: aerogrid_runtime::NodeArgs,
    #[command(flatten)]
    python: aerogrid_packages::PythonArgs,
    #[command(flatten)]
    registry: aerogrid_registry::RegistryArgs,
    /// Run no runtime node here (apps then run on `aerogrid runtime` processes of your own).
    #[arg(long)]
    no_runtime: bool,
}

/// The processes `aerogrid dev` started for itself.
#[derive(Default)]
struct Services {
    postgres: Option<PrivatePostgres>,
    broker: Option<LocalBroker>,
}

impl Services {
    /// Stops the broker, then the database (nothing uses either any more).
    async fn stop(self) {
        if let Some(broker) = self.broker {
            broker.stop().await;
        }
        if let Some(postgres) = self.postgres {
            postgres.stop().await;
        }
    }
}

/// Waits for `child` to exit by itself; never, when we did not start it.
async fn exited(child: Option<&mut aerogrid_devstack::ManagedChild>) -> ChildExit {
    match child {
        Some(child) => child.exited().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data dir `{}`", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let lock = DataDirLock::acquire(&data_dir)?;
    let files = DataFiles::new(&data_dir);
    let previous_broker_port = files
        .read(data_files::BROKER)
        .and_then(|address| address.rsplit_once(':')?.1.parse::<u16>().ok());
    files.remove_running();
    // Bind first: a taken port fails before anything starts.
    let listener = crate::bind(args.addr).await?;

    let mut services = Services::default();
    let started_stack =
        match start(&args, &data_dir, &lock, previous_broker_port, &mut services).await {
            Ok(stack) => stack,
            Err(error) => {
                services.stop().await;
                return Err(error);
            }
        };
    let Stack { pool, kafka, database_label } = started_stack;

    let admin =
        match bootstrap::ensure_dev_admin(&pool, files.read(data_files::ADMIN_TOKEN).as_deref())
            .await
        {
            Ok(admin) => admin,
            Err(error) => {
                services.stop().await;
                return Err(error).context("creating the dev admin");
            }
        };

    // Quotas count an app without a memory limit of its own as this node gives it.
    let mut server_args = args.server.clone();
    server_args.quotas.default_app_memory_mib =
        i32::try_from(args.node.connector_memory_mib).unwrap_or(i32::MAX);
    let packages = args.python.settings(Some(&data_dir));
    let state = match ServerState::new(pool.clone(), kafka.clone(), &server_args, packages.clone())
    {
        Ok(state) => state,
        Err(error) => {
            services.stop().await;
            return Err(error).context("checking the server settings");
        }
    };
    let scheme = if state.is_tls() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let (stop_sender, stop_receiver) = watch::channel(false);
    let stopped = move || {
        let mut receiver = stop_receiver.clone();
        async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    };
    let mut server = tokio::spawn(aerogrid_backend::serve(listener, state, stopped()));
    let mut node = args.node.clone();
    // The dev stack's own broker: apps' input topics are created on first use.
    node.create_topics |= services.broker.is_some();
    let mut runtime = if args.no_runtime {
        let stopped = stopped();
        tokio::spawn(async move {
            stopped.await;
            Ok(())
        })
    } else {
        let registry = match args.registry.registry() {
            Ok(registry) => registry,
            Err(error) => {
                services.stop().await;
                return Err(error).context("the schema registry settings");
            }
        };
        tokio::spawn(aerogrid_runtime::run(
            pool.clone(),
            kafka.clone(),
            node,
            packages,
            registry,
            stopped(),
        ))
    };

    let login_url = bootstrap::login_url(&url, &admin.login_link_secret);
    let database_url_file = services.postgres.as_ref().map(PrivatePostgres::url);
    let write_files = || -> anyhow::Result<()> {
        files.write(data_files::BROKER, &kafka.brokers, false)?;
        files.write(data_files::ADMIN_TOKEN, &admin.token, true)?;
        files.write(data_files::LOGIN_URL, &login_url, true)?;
        if let Some(database_url) = database_url_file {
            files.write(data_files::DATABASE_URL, database_url, true)?;
        }
        // Last: its presence says the stack is ready.
        files.write(data_files::URL, &url, false)
    };
    let failure = match write_files() {
        Err(error) => Some(format!("{error:#}")),
        Ok(()) => {
            let broker_label = match &services.broker {
                Some(broker) => {
                    format!("{} (local tansu; data {})", kafka.brokers, broker.durability())
                }
                None => format!("{} (from KAFKA_BROKERS)", kafka.brokers),
            };
            println!(
                "AeroGrid dev stack is up ({:.1} s)\n  url:         {url}\n  broker:      {broker_label}\n  database:    {database_label}\n  admin token: {}\n  sign in:     {login_url}\n  data dir:    {}\nPress Ctrl-C to stop.",
                started.elapsed().as_secs_f64(),
                admin.token,
                data_dir.display(),
            );
            tokio::select! {
                signal = crate::shutdown_signal() => {
                    eprintln!("Received {signal}: stopping.");
                    None
                }
                exit = exited(services.postgres.as_mut().map(PrivatePostgres::child)) => Some(exit.to_string()),
                exit = exited(services.broker.as_mut().map(LocalBroker::child)) => Some(exit.to_string()),
                result = &mut server => Some(format!("the HTTP server stopped: {}", outcome(result))),
                result = &mut runtime => Some(format!("the runtime node stopped: {}", outcome(result))),
            }
        }
    };
    if let Some(reason) = &failure {
        eprintln!("error: {reason}");
        eprintln!("Stopping the rest of the dev stack.");
    }

    // A second signal while stopping exits at once; the children still get their stop signal
    // from the kernel (parent-death signal) and finish by themselves.
    tokio::spawn(async {
        let signal = crate::shutdown_signal().await;
        eprintln!("Received {signal} again: exiting now; services finish stopping on their own.");
        std::process::exit(130);
    });
    let _ = stop_sender.send(true);
    // A task whose result the select above took must not be awaited again.
    if !server.is_finished() && tokio::time::timeout(STOP_GRACE, server).await.is_err() {
        eprintln!("The HTTP server did not stop within {STOP_GRACE:?}.");
    }
    if !runtime.is_finished() && tokio::time::timeout(STOP_GRACE, runtime).await.is_err() {
        eprintln!("The runtime node did not stop within {STOP_GRACE:?}.");
    }
    pool.close().await;
    services.stop().await;
    let _ = std::fs::remove_file(data_dir.join(data_files::URL));
    drop(lock);
    Ok(if failure.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn outcome<E: std::fmt::Display>(result: Result<Result<(), E>, tokio::task::JoinError>) -> String {
    match result {
        Ok(Ok(())) => "it exited".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    }
}

/// What the rest of the dev stack runs on.
struct Stack {
    pool: sqlx::PgPool,
    kafka: KafkaSettings,
    database_label: String,
}

/// Starts what is not given from outside, connects, migrates.
async fn start(
    args: &DevArgs,
    data_dir: &Path,
    lock: &DataDirLock,
    previous_broker_port: Option<u16>,
    services: &mut Services,
) -> anyhow::Result<Stack> {
    let (database_url, database_label) = match &args.database_url {
        Some(url) => (url.clone(), "from DATABASE_URL".to_owned()),
        None => {
            let dir = data_dir.join("postgres");
            eprintln!("Starting PostgreSQL in `{}`.", dir.display());
            let postgres = PrivatePostgres::start(&dir, lock).await?;
            let url = postgres.url().to_owned();
            let label = format!("private PostgreSQL in `{}`", dir.display());
            services.postgres = Some(postgres);
            (url, label)
        }
    };
    let kafka = match args.kafka.settings_or(None) {
        Some(kafka) => kafka,
        None => {
            let dir = data_dir.join("tansu");
            eprintln!("Starting the local broker (tansu, {} storage).", args.broker_storage);
            let broker =
                LocalBroker::start(&dir, args.broker_storage, previous_broker_port, lock).await?;
            if args.broker_storage == BrokerStorage::Memory {
                eprintln!("Note: the broker keeps its data in memory; it is lost when this stops.");
            }
            let address = broker.address().to_owned();
            services.broker = Some(broker);
            args.kafka.settings_or(Some(address)).expect("brokers given").tuned_for_tansu()
        }
    };
    let pool = crate::services::connect_database(&database_url).await?;
    db::migrate(&pool).await.context("applying database migrations")?;
    kafka
        .probe(Duration::from_secs(15))
        .await
        .context("the broker does not answer Kafka requests")?;
    Ok(Stack { pool, kafka, database_label })
}
