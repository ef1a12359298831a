//! Running one app: supervised runs (`run`), restarted with backoff when they crash.

mod run;

use std::time::{Duration, Instant};

use aerogrid_api::AppState;
use aerogrid_kafka::KafkaSettings;
use tokio::sync::watch;
use uuid::Uuid;

use crate::{Error, Result, connector::WarmPool, db, limits::Limits, status::OutputLimits};
use run::run_once;

/// Restarts after a crash wait this long, doubling with each crash in a row, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How soon an app waiting for its packages or schemas (an index or a registry that cannot be
/// reached) tries again, doubling up to the most.
const WAIT_RETRY: Duration = Duration::from_secs(5);
const WAIT_RETRY_MOST: Duration = Duration::from_secs(300);

/// Why an app's task should end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// No reason yet: the app keeps running.
    KeepRunning,
    /// The user stopped it (or deleted it).
    Stopped,
    /// This node is shutting down or lost the lease: another run takes over.
    Leave,
    /// The user started it again or restarted it: a fresh run takes over.
    Restart,
}

/// What every app task of a node shares.
#[derive(Clone)]
pub(crate) struct NodeContext {
    pub(crate) db: sqlx::PgPool,
    pub(crate) kafka: KafkaSettings,
    pub(crate) pool: WarmPool,
    pub(crate) node_id: String,
    /// Create missing input topics (the dev stack's own broker) instead of waiting for them.
    pub(crate) create_topics: bool,
    pub(crate) limits: Limits,
    pub(crate) output: OutputLimits,
    /// Wakes the node's loop (a released app is claimed again at once).
    pub(crate) wake: std::sync::Arc<tokio::sync::Notify>,
    /// Passes confirmed changelog records to the gateways that follow an app (None: off).
    pub(crate) relay: Option<std::sync::Arc<crate::relay::Relay>>,
    /// Where apps' packages are resolved and installed.
    pub(crate) packages: aerogrid_packages::PackageSettings,
    /// Where writer schemas of topics in the registry's wire format come from.
    pub(crate) registry: aerogrid_registry::Registry,
}

enum Outcome {
    Stop(Stop),
    Failed { message: String, line: Option<u32> },
}

/// Runs the app until told to stop; restarts its connector with backoff when it crashes.
pub(crate) async fn run_app(
    context: NodeContext,
    app_id: Uuid,
    epoch: i64,
    stop: watch::Receiver<Stop>,
    grants: watch::Receiver<Option<Vec<String>>>,
) {
    match supervise(&context, app_id, epoch, stop, grants).await {
        Stop::Stopped => {
            // Unless another node took the app over (this one was paused past its lease): then
            // the state is that node's to tell.
            match db::lease_is_ours(&context.db, &context.node_id, app_id).await {
                Ok(false) => return,
                Ok(true) => {}
                Err(error) => report(Err(error)),
            }
            report(db::set_state(&context.db, app_id, AppState::Stopped, None, None, None).await);
            // Free at once, so a new Start is picked up without waiting for the lease to expire.
            report(db::release_lease(&context.db, &context.node_id, app_id).await);
        }
        Stop::Restart => {
            report(db::release_lease(&context.db, &context.node_id, app_id).await);
            context.wake.notify_one();
        }
        Stop::KeepRunning | Stop::Leave => {}
    }
}

async fn supervise(
    context: &NodeContext,
    app_id: Uuid,
    epoch: i64,
    mut stop: watch::Receiver<Stop>,
    mut grants: watch::Receiver<Option<Vec<String>>>,
) -> Stop {
    let mut failures = 0u32;
    let mut waits = 0u32;
    loop {
        let run_started = Instant::now();
        let outcome = run_once(context, app_id, epoch, &mut stop, &mut grants).await;
        let wait = match outcome {
            Ok(Outcome::Stop(reason)) => return reason,
            Ok(Outcome::Failed { message, line }) | Err(Error::Refused { message, line }) => {
                tracing::info!(%app_id, %message, "App failed; it stays failed until started again.");
                // In the app's log too, where the user follows it (it may quote user code).
                let message = crate::status::clean_text(&message, context.output.line_bytes);
                report(
                    db::insert_logs(
                        &context.db,
                        app_id,
                        &["error".to_owned()],
                        std::slice::from_ref(&message),
                    )
                    .await,
                );
                let line = line.and_then(|line| i32::try_from(line).ok());
                report(
                    db::set_state(
                        &context.db,
                        app_id,
                        AppState::Failed,
                        Some(&message),
                        line,
                        None,
                    )
                    .await,
                );
                // Not restarted in a loop: its code cannot run as it is.
                return stopped(&mut stop).await;
            }
            // Another node runs it now (this one was paused past its lease, say).
            Err(Error::LeaseLost) => return Stop::Leave,
            Err(error @ (Error::PackagesUnavailable(_) | Error::RegistryUnavailable(_))) => {
                // A run that went well for a while starts the waiting over.
                if run_started.elapsed() > HEALTHY_RUN {
                    waits = 0;
                }
                waits += 1;
                let message = error.to_string();
                tracing::info!(%app_id, %message, "App waits for its packages or schemas.");
                waiting(context, app_id, &message).await;
                (WAIT_RETRY * 2u32.saturating_pow((waits - 1).min(6))).min(WAIT_RETRY_MOST)
            }
            Err(Error::TopicMissing(topic)) => {
                let message = format!("waiting for topic `{topic}` to exist");
                waiting(context, app_id, &message).await;
                Duration::from_secs(2)
            }
            Err(error) => {
                // A run that went well for a while starts the backoff over.
                if run_started.elapsed() > HEALTHY_RUN {
                    failures = 0;
                }
                failures += 1;
                let backoff =
                    (FIRST_BACKOFF * 2u32.saturating_pow((failures - 1).min(9))).min(MAX_BACKOFF);
                tracing::warn!(%app_id, %error, ?backoff, "App interrupted; restarting.");
                report(db::count_restart(&context.db, app_id).await);
                report(
                    db::set_state(
                        &context.db,
                        app_id,
                        AppState::Starting,
                        Some(&format!("restarting after: {error}")),
                        None,
                        None,
                    )
                    .await,
                );
                backoff
            }
        };
        let reason = tokio::select! {
            () = tokio::time::sleep(wait) => Stop::KeepRunning,
            reason = stopped(&mut stop) => reason,
        };
        if reason != Stop::KeepRunning {
            return reason;
        }
    }
}

/// Waits until the app is told to stop, and says why.
async fn stopped(stop: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let current = *stop.borrow_and_update();
        if current != Stop::KeepRunning {
            return current;
        }
        if stop.changed().await.is_err() {
            return Stop::Leave;
        }
    }
}

/// The app waits (for its packages, the registry, a topic), saying why.
async fn waiting(context: &NodeContext, app_id: Uuid, message: &str) {
    report(db::set_state(&context.db, app_id, AppState::Waiting, Some(message), None, None).await);
}

fn report(result: Result<()>) {
    if let Err(error) = result {
        tracing::warn!(%error, "Cannot record app status.");
    }
}

/// Whether team `team` with `grants` may read every one of `topics` (the backend checked when
/// the app was started; this node checks again, and again whenever the grants change).
fn check_topics(team: &str, grants: &[String], topics: &[String]) -> Result<(), String> {
    for topic in topics {
        aerogrid_policy::topics::check_topic(team, grants, topic)
            .map_err(|refusal| refusal.to_string())?;
    }
    Ok(())
}
