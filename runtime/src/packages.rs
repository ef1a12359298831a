//! An app's packages at Start: its lock (resolved here when the save could not), then the
//! environment of that lock (installed once per node cache, shared by every app with it), with
//! what is happening in the app's status and log.

use std::time::Instant;

use aerogrid_packages::{Env, Lock, LockError, Requirements};
use uuid::Uuid;

use crate::{Error, Result, app::NodeContext, db};

/// uv's lines shown in the app's log per install (the rest are counted).
const LOGGED_LINES: usize = 50;

/// The environment the app's version imports from (held while the value lives: the run keeps
/// it); None when it declares no packages. A
/// problem in the requirements is the user's (`Refused`: the app fails); an index that cannot
/// be reached is not (`PackagesUnavailable`: the app waits and tries again).
pub(crate) async fn prepare(
    context: &NodeContext,
    app_id: Uuid,
    code: &db::AppCode,
) -> Result<Option<Env>> {
    let requirements = Requirements::parse(&code.requirements).map_err(|errors| {
        let first = &errors[0];
        refused(format!("requirements line {}: {}", first.line, first.message))
    })?;
    if requirements.is_empty() {
        return Ok(None);
    }
    if let Some(error) = &code.lock_error {
        return Err(refused(format!("the requirements cannot be installed: {error}")));
    }
    let settings = &context.packages;
    if context.pool.runs_as_other_users()
        && let Some(closed) = aerogrid_packages::closed_ancestor(&settings.envs_dir)
    {
        return Err(Error::PackagesUnavailable(format!(
            "this node cannot give connectors their packages: {} is closed to other users (the operator sets --python-cache-dir elsewhere, or opens it)",
            closed.display()
        )));
    }
    let lock = match &code.lock {
        Some(text) => Lock { text: text.clone() },
        None => resolve(context, app_id, code, &requirements).await?,
    };
    let packages = lock.packages();
    let listed: Vec<String> =
        packages.iter().map(|(name, version)| format!("{name} {version}")).collect();
    let what = format!("{} packages ({})", packages.len(), listed.join(", "));
    let started = Instant::now();
    let (lines, mut received) = tokio::sync::mpsc::channel::<String>(64);
    let progress = move |line: String| {
        // Full: the line is dropped (the log is a courtesy; the install goes on).
        let _ = lines.try_send(line);
    };
    let install = settings.install(&lock, &progress);
    tokio::pin!(install);
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut logged = 0usize;
    let result = loop {
        tokio::select! {
            result = &mut install => break result,
            Some(line) = received.recv() => {
                if logged < LOGGED_LINES {
                    log(context, app_id, "info", format!("uv: {line}")).await;
                }
                logged += 1;
            }
            _ = ticker.tick() => {
                let progress = format!(
                    "installing {what}: {} s so far",
                    started.elapsed().as_secs()
                );
                db::set_activity(&context.db, app_id, &progress).await?;
            }
        }
    };
    drop(received);
    if logged > LOGGED_LINES {
        log(context, app_id, "info", format!("uv: {} more lines", logged - LOGGED_LINES)).await;
    }
    match result {
        Ok(env) => {
            let how = if env.installed { "installed" } else { "already installed here" };
            let message = format!(
                "packages {how} in {:.1} s: {}",
                started.elapsed().as_secs_f64(),
                listed.join(", ")
            );
            log(context, app_id, "info", message).await;
            tracing::info!(%app_id, env = %env.path.display(), installed = env.installed, elapsed = ?started.elapsed(), "App packages ready.");
            if env.evicted_bytes > 0 {
                tracing::info!(
                    evicted_mib = env.evicted_bytes >> 20,
                    "Least recently used package environments removed (--max-python-cache-mib)."
                );
            }
            Ok(Some(env))
        }
        Err(error) if error.is_transient() => {
            Err(Error::PackagesUnavailable(format!("waiting to install {what}: {error}")))
        }
        Err(error) => Err(refused(error.to_string())),
    }
}

/// Resolves requirements the save could not (the index was unreachable then), and keeps the
/// lock, or the user's error, with the version.
async fn resolve(
    context: &NodeContext,
    app_id: Uuid,
    code: &db::AppCode,
    requirements: &Requirements,
) -> Result<Lock> {
    let settings = &context.packages;
    let Some(uv) = &settings.uv else {
        return Err(Error::PackagesUnavailable(
            "this node cannot install packages: uv is not found (--uv or PATH)".into(),
        ));
    };
    db::set_activity(&context.db, app_id, "resolving the requirements").await?;
    match uv.lock(requirements, &settings.target).await {
        Ok(lock) => {
            db::set_lock(&context.db, app_id, code.version, Ok(&lock.text)).await?;
            log(
                context,
                app_id,
                "info",
                format!("requirements resolved: {} packages", lock.packages().len()),
            )
            .await;
            Ok(lock)
        }
        Err(LockError::Requirements(errors)) => {
            let first = &errors[0];
            let line = i32::try_from(first.line).unwrap_or(1);
            db::set_lock(&context.db, app_id, code.version, Err((&first.message, line))).await?;
            Err(refused(format!("requirements line {}: {}", first.line, first.message)))
        }
        Err(error) => {
            Err(Error::PackagesUnavailable(format!("waiting to resolve the requirements: {error}")))
        }
    }
}

fn refused(message: String) -> Error {
    Error::Refused { message, line: None }
}

async fn log(context: &NodeContext, app_id: Uuid, level: &str, message: String) {
    let message = crate::status::clean_text(&message, context.output.line_bytes);
    if let Err(error) = db::insert_logs(&context.db, app_id, &[level.to_owned()], &[message]).await
    {
        tracing::warn!(%error, "Cannot log the app's install.");
    }
}
