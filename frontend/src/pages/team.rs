//! `/teams/{team}`: the team's apps with live status badges; new app from a template; rename and
//! delete with confirmation.

use std::time::Duration;

use leptos::prelude::*;
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_params_map},
};

use crate::{
    api::{self, AppState, AppSummary, DesiredState, Role},
    app::use_session,
    templates::TEMPLATES,
};

/// How often the list asks for fresh states.
const REFRESH: Duration = Duration::from_secs(2);

// `#[component]` turns the function `pub`; it is only used in this crate.
#[allow(unreachable_pub)]
#[component]
pub(crate) fn TeamApps() -> impl IntoView {
    let params = use_params_map();
    let team = Memo::new(move |_| params.read().get("team").unwrap_or_default());
    let session = use_session();
    let apps = RwSignal::new(None::<Result<Vec<AppSummary>, String>>);
    let load = move || {
        // Also called when a row's action ends, perhaps after the page was left.
        let Some(team) = team.try_get_untracked() else { return };
        leptos::task::spawn_local(async move {
            let answer = api::apps(&team).await.map_err(|error| error.message);
            apps.set(Some(answer));
        });
    };
    Effect::new(move |_| {
        team.track();
        apps.set(None);
        load();
    });
    let interval = set_interval_with_handle(load, REFRESH).ok();
    on_cleanup(move || {
        if let Some(interval) = interval {
            interval.clear();
        }
    });
    let can_edit = move || session.role_in(&team.get()).is_some_and(|role| role >= Role::Editor);
    view! {
        <section class="card" aria-labelledby="apps-title">
            <div class="card-head">
                <h2 id="apps-title">"Apps of " {move || team.get()}</h2>
            </div>
            {move || match apps.get() {
                None => view! { <p class="empty">"Loading…"</p> }.into_any(),
                Some(Err(error)) => view! { <p class="error" role="alert">{error}</p> }.into_any(),
                Some(Ok(list)) if list.is_empty() => {
                    view! { <p class="empty" data-testid="no-apps">"No apps yet."</p> }.into_any()
                }
                Some(Ok(list)) => view! {
                    <table class="apps" data-testid="apps">
                        <thead><tr><th scope="col">"App"</th><th scope="col">"State"</th><th scope="col">"Version"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                        <tbody>
                            {list.into_iter().map(|app| view! { <AppRow team=team.get_untracked() app=app can_edit=can_edit() reload=load /> }).collect_view()}
                        </tbody>
                    </table>
                }.into_any(),
            }}
        </section>
        <Show when=can_edit>
            <NewApp team=team />
        </Show>
    }
}

/// The badge of an app's state (also used on the app page).
/// `state` None: not loaded yet. A state the user asked to change shows as under way.
pub(crate) fn state_badge(state: Option<AppState>, desired: Option<DesiredState>) -> impl IntoView {
    let label = match (state, desired) {
        (None, _) => "loading",
        (Some(AppState::Stopped), Some(DesiredState::Running)) => "starting",
        (Some(AppState::Running), Some(DesiredState::Stopped)) => "stopping",
        (Some(state), _) => state.as_str(),
    };
    view! { <span class=format!("badge state-{label}") data-testid="state" data-state=label>{label}</span> }
}

#[component]
fn AppRow(
    team: String,
    app: AppSummary,
    can_edit: bool,
    reload: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let confirming = RwSignal::new(false);
    let renaming = RwSignal::new(false);
    let new_name = RwSignal::new(app.name.clone());
    let error = RwSignal::new(None::<String>);
    let href = format!("/teams/{}/apps/{}", api::segment(&team), api::segment(&app.name));
    let (team_for_delete, name_for_delete) = (team.clone(), app.name.clone());
    let delete = Callback::new(move |()| {
        let (team, name) = (team_for_delete.clone(), name_for_delete.clone());
        leptos::task::spawn_local(async move {
            match api::delete_app(&team, &name).await {
                Ok(()) => reload(),
                Err(failure) => error.set(Some(failure.message)),
            }
            confirming.set(false);
        });
    });
    let (team_for_rename, name_for_rename) = (team.clone(), app.name.clone());
    let rename = Callback::new(move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let (team, name) = (team_for_rename.clone(), name_for_rename.clone());
        leptos::task::spawn_local(async move {
            match api::rename(&team, &name, &new_name.get_untracked()).await {
                Ok(_) => {
                    renaming.set(false);
                    reload();
                }
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    });
    let prompt = StoredValue::new(format!("Delete {}, its versions, logs and grids? ", app.name));
    let (row_name, link_text) = (app.name.clone(), app.name.clone());
    view! {
        <tr data-testid="app-row" data-app=row_name>
            <td><A href=href>{link_text}</A></td>
            <td>{state_badge(Some(app.state), Some(app.desired_state))}
                {app.error.clone().map(|error| view! { <span class="muted small">{format!(" {error}")}</span> })}
            </td>
            <td>{format!("v{}", app.latest_version)}</td>
            <td class="actions">
                <Show when=move || can_edit>
                    <Show when=move || !confirming.get() && !renaming.get()>
                        <button class="link" on:click=move |_| renaming.set(true)>"Rename"</button>
                        <button class="link danger" data-testid="delete-app" on:click=move |_| confirming.set(true)>"Delete"</button>
                    </Show>
                    <Show when=move || confirming.get()>
                        <span role="alertdialog" aria-label="Confirm deletion" class="confirm">
                            {move || prompt.get_value()}
                            <button class="danger" data-testid="confirm-delete" on:click=move |_| delete.run(())>"Delete"</button>
                            <button on:click=move |_| confirming.set(false)>"Cancel"</button>
                        </span>
                    </Show>
                    <Show when=move || renaming.get()>
                        <form class="inline" on:submit=move |event| rename.run(event)>
                            <label><span class="visually-hidden">"New name"</span><input type="text" bind:value=new_name required /></label>
                            <button type="submit">"Rename"</button>
                            <button type="button" on:click=move |_| renaming.set(false)>"Cancel"</button>
                        </form>
                    </Show>
                </Show>
                <Show when=move || error.get().is_some()>
                    <span class="error" role="alert">{move || error.get()}</span>
                </Show>
            </td>
        </tr>
    }
}

#[component]
fn NewApp(team: Memo<String>) -> impl IntoView {
    let navigate = use_navigate();
    let name = RwSignal::new(String::new());
    let template = RwSignal::new(TEMPLATES[0].id.to_owned());
    let error = RwSignal::new(None::<String>);
    let create = move |event: leptos::ev::SubmitEvent| {
        event.prevent_default();
        let navigate = navigate.clone();
        let chosen = template.get_untracked();
        let code = TEMPLATES.iter().find(|t| t.id == chosen).unwrap_or(&TEMPLATES[0]).code;
        leptos::task::spawn_local(async move {
            let (team, app) = (team.get_untracked(), name.get_untracked());
            match api::create_app(&team, &app, code).await {
                Ok(_) => navigate(
                    &format!("/teams/{}/apps/{}", api::segment(&team), api::segment(&app)),
                    Default::default(),
                ),
                Err(failure) => error.set(Some(failure.message)),
            }
        });
    };
    view! {
        <section class="card" aria-labelledby="new-app-title">
            <h2 id="new-app-title">"New app"</h2>
            <form class="inline" on:submit=create data-testid="new-app-form">
                <label>"Name"
                    <input type="text" required placeholder="orders" data-testid="new-app-name" bind:value=name />
                </label>
                <label>"Template"
                    <select data-testid="new-app-template" on:change=move |event| template.set(event_target_value(&event))>
                        {TEMPLATES.iter().map(|t| view! { <option value=t.id>{t.title}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" class="primary">"Create"</button>
            </form>
            <Show when=move || error.get().is_some()>
                <p class="error" role="alert">{move || error.get()}</p>
            </Show>
        </section>
    }
}
