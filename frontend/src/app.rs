//! The shell: top bar (team switcher, user, sign-out), the routes, and a status line with the
//! server's health and who is signed in.
//!
//! Status lines carry a `data-testid` for the browser tests and a `data-state` (`loading`,
//! `ok`, `error`, or `signed-out` for the user line) so tests can wait for an answer instead of
//! sleeping.

use leptos::prelude::*;
use leptos_router::{
    components::{A, Route, Router, Routes},
    hooks::{use_location, use_navigate},
    path,
};

use crate::{
    api::{self, Health, Me, Probe, Team},
    pages,
};

/// Who is signed in and their teams, shared by every page.
#[derive(Clone, Copy)]
pub(crate) struct Session {
    /// None while the first `GET /me` is on its way.
    pub(crate) me: RwSignal<Option<Option<Me>>>,
    pub(crate) teams: RwSignal<Vec<Team>>,
}

impl Session {
    /// Asks the server again (after signing in or out, or creating a team).
    pub(crate) fn refresh(self) {
        leptos::task::spawn_local(async move {
            let me = api::me().await.unwrap_or(None);
            let teams = if me.is_some() { api::teams().await.unwrap_or_default() } else { vec![] };
            self.teams.set(teams);
            self.me.set(Some(me));
        });
    }

    pub(crate) fn role_in(self, team: &str) -> Option<api::Role> {
        self.teams.with(|teams| teams.iter().find(|t| t.name == team).map(|t| t.role))
    }
}

pub(crate) fn use_session() -> Session {
    expect_context::<Session>()
}

/// The whole app. A plain function rather than a `#[component]`: it takes no props, and the
/// macro's generated `pub` items would trip the workspace's `unreachable_pub` lint.
pub(crate) fn app() -> impl IntoView {
    let session = Session { me: RwSignal::new(None), teams: RwSignal::new(Vec::new()) };
    provide_context(session);
    session.refresh();
    view! {
        <Router>
            <TopBar />
            <main class="content" id="main">
                <Routes fallback=|| view! { <p class="empty">"There is no such page."</p> }>
                    <Route path=path!("/") view=pages::home::Home />
                    <Route path=path!("/teams/:team") view=pages::team::TeamApps />
                    <Route path=path!("/teams/:team/apps/:app") view=pages::app_page::AppPage />
                </Routes>
            </main>
            <footer class="statusbar">
                <HealthLine />
                <MeLine />
            </footer>
        </Router>
    }
}

#[component]
fn TopBar() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let location = use_location();
    // The team in the URL, if any.
    let current_team = Memo::new(move |_| {
        let path = location.pathname.get();
        let mut parts = path.split('/').filter(|part| !part.is_empty());
        match (parts.next(), parts.next()) {
            (Some("teams"), Some(team)) => {
                Some(js_sys::decode_uri_component(team).map(String::from).unwrap_or_default())
            }
            _ => None,
        }
    });
    let switch_team = {
        let navigate = navigate.clone();
        move |event: leptos::ev::Event| {
            let team = event_target_value(&event);
            if !team.is_empty() {
                navigate(&format!("/teams/{}", api::segment(&team)), Default::default());
            }
        }
    };
    let sign_out = move |_| {
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            let _ = api::sign_out().await;
            session.refresh();
            navigate("/", Default::default());
        });
    };
    let signed_in = move || matches!(session.me.get(), Some(Some(_)));
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">
                <h1 id="app-title" data-testid="app-title">"AeroGrid"</h1>
            </A>
            <Show when=signed_in>
                <label class="team-switcher">
                    <span class="visually-hidden">"Team"</span>
                    <select data-testid="team-switcher" on:change=switch_team.clone()>
                        <option value="" selected=move || current_team.get().is_none()>
                            "Choose a team…"
                        </option>
                        <For
                            each=move || session.teams.get()
                            key=|team| team.name.clone()
                            let(team)
                        >
                            {
                                let name = team.name.clone();
                                let selected = {
                                    let name = name.clone();
                                    move || current_team.get().as_deref() == Some(name.as_str())
                                };
                                view! { <option value=name.clone() selected=selected>{name.clone()}</option> }
                            }
                        </For>
                    </select>
                </label>
                <span class="spacer"></span>
                <span class="user">
                    {move || session.me.get().flatten().map(|me| me.name).unwrap_or_default()}
                </span>
                <button class="link" data-testid="sign-out" on:click=sign_out.clone()>
                    "Sign out"
                </button>
            </Show>
        </header>
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
    let session = use_session();
    let state = move || match session.me.get() {
        None => "loading",
        Some(Some(_)) => "ok",
        Some(None) => "signed-out",
    };
    let text = move || match session.me.get() {
        None => "…".to_owned(),
        Some(Some(me)) => describe_me(&me),
        Some(None) => "Not signed in".to_owned(),
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

fn describe_component(c: &Probe) -> String {
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
