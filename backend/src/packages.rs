//! Apps' requirements at save: read, resolved with uv into a lock for the runtime (in bounded
//! time, a few at once), and what is wrong with them as diagnostics.

use std::time::Duration;

use aerogrid_api::{Diagnostic, Severity};
use aerogrid_packages::{LineError, LockError, PackageSettings, Requirements};

use crate::{
    db::apps::VersionText,
    validate::packages::{self as checks, Declared},
};

/// Largest requirements text (1,000 lines of 1,000 bytes is the parser's bound; real ones are
/// a few lines).
pub(crate) const MAX_REQUIREMENTS_BYTES: usize = 64 * 1024;
/// How long a save waits for a lock (a few run at once: `aerogrid_packages` bounds them). Past
/// it the version is saved unresolved and the runtime resolves it at Start (with the longer
/// `--max-python-install-seconds`).
const LOCK_AT_SAVE: Duration = Duration::from_secs(30);

/// The version to store for `code` and `requirements`. `previous` is the version edited: its
/// resolution is kept when the requirements are the same (saving code never waits for uv).
pub(crate) async fn version_text(
    settings: &PackageSettings,
    code: String,
    requirements: String,
    previous: Option<&VersionText>,
) -> VersionText {
    let mut text = VersionText { code, requirements, ..VersionText::default() };
    // The same packages (comments and blank lines aside) keep their resolution.
    let same = |previous: &&VersionText| match (
        Requirements::parse(&previous.requirements),
        Requirements::parse(&text.requirements),
    ) {
        (Ok(before), Ok(now)) => before.to_uv_input() == now.to_uv_input(),
        _ => previous.requirements == text.requirements,
    };
    if let Some(previous) = previous.filter(same) {
        text.lock.clone_from(&previous.lock);
        text.lock_error.clone_from(&previous.lock_error);
        text.lock_error_line = previous.lock_error_line;
        if text.lock.is_some() || text.lock_error.is_some() {
            return text;
        }
    }
    let Ok(parsed) = Requirements::parse(&text.requirements) else { return text };
    if parsed.is_empty() {
        return text;
    }
    match resolve(settings, &parsed).await {
        Ok(lock) => text.lock = Some(lock),
        Err(Some(error)) => {
            text.lock_error = Some(error.message);
            text.lock_error_line = i32::try_from(error.line).ok();
        }
        Err(None) => {}
    }
    text
}

/// The lock; `Err(Some)` for the user's error, `Err(None)` when it cannot be made now.
async fn resolve(
    settings: &PackageSettings,
    requirements: &Requirements,
) -> Result<String, Option<LineError>> {
    // More requirements than the packages an app may have cannot lock within it: said at once.
    if let Some(beyond) = requirements.packages.get(settings.limits.packages) {
        return Err(Some(LineError {
            line: beyond.line,
            message: format!(
                "an app may have at most {} packages, its dependencies included",
                settings.limits.packages
            ),
        }));
    }
    let Some(uv) = &settings.uv else { return Err(None) };
    let mut uv = uv.clone();
    uv.timeout = uv.timeout.min(LOCK_AT_SAVE);
    match uv.lock(requirements, &settings.target).await {
        Ok(lock) => {
            let count = lock.packages().len();
            if count > settings.limits.packages {
                return Err(Some(LineError {
                    line: requirements.packages.first().map_or(1, |package| package.line),
                    message: format!(
                        "the requirements come to {count} packages with their dependencies; an app may have at most {}",
                        settings.limits.packages
                    ),
                }));
            }
            Ok(lock.text)
        }
        Err(LockError::Requirements(mut errors)) => Err(Some(errors.swap_remove(0))),
        Err(LockError::Unavailable(why)) => {
            tracing::info!(%why, "Requirements saved unresolved: the index cannot be reached.");
            Err(None)
        }
        Err(LockError::Tool(why)) => {
            tracing::warn!(%why, "Requirements saved unresolved: uv failed.");
            Err(None)
        }
    }
}

/// What is wrong with a version's requirements, and the packages its code may import. A
/// `saved` version that is not resolved gets a warning saying so.
pub(crate) fn check(text: &VersionText, saved: bool) -> (Declared, Vec<Diagnostic>) {
    let (parsed, mut diagnostics) = checks::read(&text.requirements);
    if let Some(message) = &text.lock_error {
        let line = text.lock_error_line.and_then(|line| u32::try_from(line).ok()).unwrap_or(1);
        let error = LineError { line, message: message.clone() };
        diagnostics.extend(checks::on_lines(&text.requirements, &[error], Severity::Error));
    } else if saved && diagnostics.is_empty() && !parsed.is_empty() && text.lock.is_none() {
        let line = parsed.packages[0].line;
        let error = LineError {
            line,
            message: "the requirements are not resolved yet (the package index could not be reached): the runtime resolves them when the app starts".into(),
        };
        diagnostics.extend(checks::on_lines(&text.requirements, &[error], Severity::Warning));
    }
    let lock = text.lock.clone().map(|text| aerogrid_packages::Lock { text });
    (Declared::new(&parsed, lock.as_ref()), diagnostics)
}
