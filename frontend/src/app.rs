//! The page itself: a header, the server's health and the signed-in user.
//!
//! Each status line carries a `data-testid` for the browser tests and a `data-state`
//! (`loading`, `ok`, `error`, or `signed-out` for the user line) so tests can wait for an answer instead of sleeping.

use leptos::prelude::*;

use crate::api::{self, Component, Health, Me};

/// The whole app. A plain function rather than a `#[component]`: it takes no props, and the
/// macro's generated `pub` items would trip the workspace's `unreachable_pub` lint.
pub(crate) fn app() -> impl IntoView {
    view! {
        <header class="topbar">
            <h1 id="app-title" data-testid="app-title">"AeroGrid"</h1>
        </header>
        <main class="content">
            <section class="card">
                <h2>"Server"</h2>
                <HealthLine />
                <MeLine />
            </section>
        </main>
    }
}

/// "Database: ok / Broker: ok", or what is wrong.
#[component]
fn HealthLine() -> impl IntoView {
    let health = LocalResource::new(api::health);
    let state = move || match health.get() {
        None => "loading",
        Some(Ok(h)) if h.database.ok && h.broker.ok => "ok",
        Some(_) => "error",
    };
    let text = move || match health.get() {
        None => "Checking the server…".to_owned(),
        Some(Ok(h)) => describe_health(&h),
        Some(Err(e)) => format!("Health check failed: {e}"),
    };
    view! {
        <p id="health" class="status" data-testid="health" data-state=state>
            {text}
        </p>
    }
}

/// Who is signed in, or "Not signed in".
#[component]
fn MeLine() -> impl IntoView {
    let me = LocalResource::new(api::me);
    let state = move || match me.get() {
        None => "loading",
        Some(Ok(Some(_))) => "ok",
        Some(Ok(None)) => "signed-out",
        Some(Err(_)) => "error",
    };
    let text = move || match me.get() {
        None => "…".to_owned(),
        Some(Ok(Some(me))) => describe_me(&me),
        Some(Ok(None)) => "Not signed in".to_owned(),
        Some(Err(e)) => format!("Could not tell who is signed in: {e}"),
    };
    view! {
        <p id="me" class="status" data-testid="me" data-state=state>
            {text}
        </p>
    }
}

fn describe_health(h: &Health) -> String {
    format!(
        "Database: {} / Broker: {}",
        describe_component(&h.database),
        describe_component(&h.broker)
    )
}

fn describe_component(c: &Component) -> String {
    match (c.ok, &c.error) {
        (true, _) => "ok".to_owned(),
        (false, Some(e)) => format!("error ({e})"),
        (false, None) => "error".to_owned(),
    }
}

fn describe_me(me: &Me) -> String {
    if me.is_admin {
        format!("Signed in as {} (administrator)", me.name)
    } else {
        format!("Signed in as {}", me.name)
    }
}
