//! `/`: sign in, or choose (or create) a team.

use leptos::prelude::*;
use leptos_router::{components::A, hooks::use_navigate};

use crate::{
    api::{self, Team},
    app::use_session,
};

// `#[component]` turns the function `pub`; it is only used in this crate.
#[allow(unreachable_pub)]
#[component]
pub(crate) fn Home() -> impl IntoView {
    let session = use_session();
    move || match session.me.get() {
        None => view! { <p class="empty">"Loading…"</p> }.into_any(),
        Some(None) => view! { <SignIn /> }.into_any(),
        Some(Some(_)) => view! { <Teams /> }.into_any(),
    }
}

#[component]
fn SignIn() -> impl IntoView {
    let session = use_session();
    let name = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let submit = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        busy.set(true);
        leptos::task::spawn_local(async move {
            match api::sign_in(&name.get_untracked(), &password.get_untracked()).await {
                Ok(_) => {
                    error.set(None);
                    session.refresh();
                }
                Err(failure) => error.set(Some(failure.message)),
            }
            busy.set(false);
        });
    };
    view! {
        <section class="card narrow" aria-labelledby="sign-in-title">
            <h2 id="sign-in-title">"Sign in"</h2>
            <form on:submit=submit data-testid="sign-in-form">
                <label>"User name"
                    <input type="text" autocomplete="username" required
                        data-testid="sign-in-name" bind:value=name />
                </label>
                <label>"Password"
                    <input type="password" autocomplete="current-password" required
                        data-testid="sign-in-password" bind:value=password />
                </label>
                <Show when=move || error.get().is_some()>
                    <p class="error" role="alert" data-testid="sign-in-error">{move || error.get()}</p>
                </Show>
                <button type="submit" class="primary" disabled=move || busy.get()>"Sign in"</button>
            </form>
            <p class="hint">
                "Running " <code>"aerogrid dev"</code> "? Open the sign-in link it printed (also in "
                <code>".aerogrid/login-url"</code> ")."
            </p>
        </section>
    }
}

#[component]
fn Teams() -> impl IntoView {
    let session = use_session();
    let navigate = use_navigate();
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let create = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let navigate = navigate.clone();
        leptos::task::spawn_local(async move {
            let team = name.get_untracked();
            let body = aerogrid_api::NewTeam { name: team.clone() };
            match api::post::<Team>("/api/v1/teams", Some(&body)).await {
                Ok(_) => {
                    session.refresh();
                    navigate(&format!("/teams/{}", api::segment(&team)), Default::default());
                }
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="teams-title">
            <h2 id="teams-title">"Your teams"</h2>
            <Show
                when=move || !session.teams.get().is_empty()
                fallback=|| view! { <p class="empty">"You are in no team yet: create one."</p> }
            >
                <ul class="plain-list" data-testid="teams">
                    <For each=move || session.teams.get() key=|team| team.name.clone() let(team)>
                        <li>
                            <A href=format!("/teams/{}", api::segment(&team.name))>{team.name.clone()}</A>
                            <span class="muted">{format!(" · {}", team.role)}</span>
                        </li>
                    </For>
                </ul>
            </Show>
            <form class="inline" on:submit=create>
                <label>"New team"
                    <input type="text" required placeholder="team name" data-testid="new-team-name"
                        bind:value=name />
                </label>
                <button type="submit">"Create team"</button>
            </form>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert">{move || error.get()}</p>
            </Show>
        </section>
    }
}
