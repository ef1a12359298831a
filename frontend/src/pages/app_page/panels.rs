//! The app page's panels beside the editor: the live preview, the log, bad records, versions and
//! "Use in Excel".

// `#[component]` makes its props `pub`; they are only used by the app page.
#![allow(unreachable_pub)]

use std::time::Duration;

use leptos::{html, prelude::*};
use wasm_bindgen::{JsCast, prelude::Closure};

use crate::{
    api::{self, Status},
    editor::{Editor, Text},
    grid::{LiveGrid, grids_of},
};

/// Lines the log pane keeps.
const LOG_LINES: usize = 2000;

/// One tab per grid of the app; the grids are known once the app has run.
#[component]
pub(super) fn Preview(
    team: String,
    app: String,
    status: RwSignal<Option<Status>>,
) -> impl IntoView {
    let grids = RwSignal::new(None::<Result<Vec<String>, String>>);
    let chosen = RwSignal::new(None::<String>);
    let load = {
        let (team, app) = (team.clone(), app.clone());
        move || {
            let (team, app) = (team.clone(), app.clone());
            leptos::task::spawn_local(async move {
                let found = grids_of(&team, &app).await;
                if let Ok(list) = &found
                    && chosen.try_get_untracked().is_some_and(|chosen| chosen.is_none())
                {
                    chosen.set(list.first().cloned());
                }
                grids.set(Some(found));
            });
        }
    };
    load();
    // Until the app has published grids, look again as its state changes.
    Effect::new({
        let load = load.clone();
        move |_| {
            status.track();
            if grids.with_untracked(|g| !matches!(g, Some(Ok(list)) if !list.is_empty())) {
                load();
            }
        }
    });
    view! {
        {move || match grids.get() {
            None => view! { <p class="empty">"Loading grids…"</p> }.into_any(),
            Some(Err(error)) => view! { <p class="error">{error}</p> }.into_any(),
            Some(Ok(list)) if list.is_empty() => view! { <p class="empty" data-testid="no-grids">"No grids yet: start the app to see its grids here."</p> }.into_any(),
            Some(Ok(list)) => view! {
                <div role="tablist" class="tabs small" aria-label="Grids">
                    {list.into_iter().map(|grid| {
                        let name = grid.clone();
                        let test_id = format!("grid-tab-{grid}");
                        view! {
                            <button role="tab" data-testid=test_id
                                aria-selected={ let name = name.clone(); move || (chosen.get().as_deref() == Some(name.as_str())).to_string() }
                                on:click={ let name = name.clone(); move |_| chosen.set(Some(name.clone())) }>{grid}</button>
                        }
                    }).collect_view()}
                </div>
            }.into_any(),
        }}
        {
            let (team, app) = (team.clone(), app.clone());
            move || chosen.get().map(|grid| view! { <LiveGrid team=team.clone() app=app.clone() grid=grid /> })
        }
    }
}

/// The log, followed live (server-sent events); stays at the bottom unless scrolled up.
#[component]
pub(super) fn LogPane(team: String, app: String) -> impl IntoView {
    let lines = RwSignal::new(Vec::<api::LogLine>::new());
    let state = RwSignal::new("connecting");
    let pane = NodeRef::<html::Div>::new();
    let source = web_sys::EventSource::new(&api::follow_logs_url(&team, &app)).ok();
    let on_log =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |event: web_sys::MessageEvent| {
            let Some(data) = event.data().as_string() else { return };
            let Ok(line) = serde_json::from_str::<api::LogLine>(&data) else { return };
            state.set("live");
            let pinned = pane.get_untracked().is_none_or(|pane| {
                pane.scroll_top() + pane.client_height() >= pane.scroll_height() - 8
            });
            lines.update(|lines| {
                lines.push(line);
                if lines.len() > LOG_LINES {
                    lines.drain(..lines.len() - LOG_LINES);
                }
            });
            if pinned && let Some(pane) = pane.get_untracked() {
                request_animation_frame(move || pane.set_scroll_top(pane.scroll_height()));
            }
        });
    let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| state.set("live"));
    let on_error = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| state.set("reconnecting"));
    if let Some(source) = &source {
        let _ = source.add_event_listener_with_callback("log", on_log.as_ref().unchecked_ref());
        source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    }
    // Closed, and its callbacks freed, when the panel goes.
    let held = send_wrapper::SendWrapper::new((source, on_log, on_open, on_error));
    on_cleanup(move || {
        let (source, on_log, on_open, on_error) = held.take();
        if let Some(source) = source {
            source.close();
        }
        drop((on_log, on_open, on_error));
    });
    view! {
        <div class="log-head"><span class="muted" data-testid="log-state">{move || state.get()}</span></div>
        <div class="log" node_ref=pane data-testid="log" role="log" aria-live="polite">
            <For each=move || lines.get() key=|line| line.id let(line)>
                <div class=format!("log-line level-{}", line.level)>
                    <time>{line.at.format("%H:%M:%S%.3f").to_string()}</time>
                    <span class="level">{line.level.clone()}</span>
                    <span class="text">{line.message.clone()}</span>
                </div>
            </For>
        </div>
    }
}

#[component]
pub(super) fn BadRecords(team: String, app: String) -> impl IntoView {
    let records = LocalResource::new(move || {
        let (team, app) = (team.clone(), app.clone());
        async move { api::bad_records(&team, &app).await }
    });
    let interval = set_interval_with_handle(move || records.refetch(), Duration::from_secs(5)).ok();
    on_cleanup(move || {
        if let Some(interval) = interval {
            interval.clear();
        }
    });
    view! {
        {move || match records.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(error)) => view! { <p class="error">{error.message}</p> }.into_any(),
            Some(Ok(list)) if list.is_empty() => view! { <p class="empty" data-testid="no-bad-records">"No bad records."</p> }.into_any(),
            Some(Ok(list)) => view! {
                <table class="records" data-testid="bad-records">
                    <thead><tr><th scope="col">"When"</th><th scope="col">"Where"</th><th scope="col">"Reason"</th><th scope="col">"Message"</th></tr></thead>
                    <tbody>
                        {list.into_iter().map(|record| view! {
                            <tr>
                                <td>{record.at.format("%H:%M:%S").to_string()}</td>
                                <td>{format!("{}[{}]@{}", record.topic, record.partition, record.offset)}</td>
                                <td>{match record.line { Some(line) => format!("line {line}: {}", record.reason), None => record.reason.clone() }}</td>
                                <td><code>{record.value.clone().unwrap_or_default()}</code></td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any(),
        }}
    }
}

#[component]
pub(super) fn Versions(
    team: String,
    app: String,
    current: RwSignal<String>,
    current_requirements: RwSignal<String>,
    can_edit: Memo<bool>,
    on_rollback: impl Fn(i32, String, String) + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let list = LocalResource::new({
        let (team, app) = (team.clone(), app.clone());
        move || {
            let (team, app) = (team.clone(), app.clone());
            async move { api::versions(&team, &app).await }
        }
    });
    let compared = RwSignal::new(None::<i32>);
    let diff_element = NodeRef::<html::Div>::new();
    let diff = StoredValue::new_local(None::<Editor>);
    let requirements_diff_element = NodeRef::<html::Div>::new();
    let requirements_diff = StoredValue::new_local(None::<Editor>);
    // Whether the compared version's requirements differ from the editor's (then they show).
    let requirements_differ = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let confirming = RwSignal::new(None::<i32>);
    let compare = Callback::new({
        let (team, app) = (team.clone(), app.clone());
        move |version: i32| {
            compared.set(Some(version));
            let (team, app) = (team.clone(), app.clone());
            let modified = current.get_untracked();
            let modified_requirements = current_requirements.get_untracked();
            leptos::task::spawn_local(async move {
                let old = match api::version_code(&team, &app, version).await {
                    Ok(old) => old,
                    Err(failure) => return error.set(Some(failure.message)),
                };
                // The panel may be gone by now.
                let Some(Some(element)) = diff_element.try_get_untracked() else { return };
                let Some(Some(second)) = requirements_diff_element.try_get_untracked() else {
                    return;
                };
                if diff.try_set_value(None).is_some()
                    || requirements_diff.try_set_value(None).is_some()
                {
                    return;
                }
                let element: web_sys::HtmlElement = element.unchecked_into();
                match Editor::diff(&element, Text::Code, &old.code, &modified).await {
                    Ok(view) => drop(diff.try_set_value(Some(view))),
                    Err(failure) => return error.set(Some(failure)),
                }
                let differ = old.requirements != modified_requirements;
                let _ = requirements_differ.try_set(differ);
                if differ {
                    let second: web_sys::HtmlElement = second.unchecked_into();
                    let text = Text::Requirements;
                    match Editor::diff(&second, text, &old.requirements, &modified_requirements)
                        .await
                    {
                        Ok(view) => drop(requirements_diff.try_set_value(Some(view))),
                        Err(failure) => error.set(Some(failure)),
                    }
                }
            });
        }
    });
    let rollback = Callback::new({
        let (team, app) = (team.clone(), app.clone());
        move |version: i32| {
            let (team, app) = (team.clone(), app.clone());
            leptos::task::spawn_local(async move {
                match api::rollback(&team, &app, version).await {
                    Ok(rolled) => match api::version_code(&team, &app, rolled.version).await {
                        Ok(text) => {
                            on_rollback(rolled.version, text.code, text.requirements);
                            confirming.set(None);
                            if !error.is_disposed() {
                                list.refetch();
                            }
                        }
                        Err(failure) => error.set(Some(failure.message)),
                    },
                    Err(failure) => error.set(Some(failure.message)),
                }
            });
        }
    });
    view! {
        {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        {move || match list.get() {
            None => view! { <p class="empty">"Loading…"</p> }.into_any(),
            Some(Err(failure)) => view! { <p class="error">{failure.message}</p> }.into_any(),
            Some(Ok(versions)) => view! {
                <ul class="versions" data-testid="versions">
                    {versions.into_iter().map(|v| {
                        let number = v.version;
                        view! {
                            <li data-version=number>
                                <strong>{format!("v{number}")}</strong>
                                <span class="muted">{format!(" {} · {} · {}", v.created_at.format("%Y-%m-%d %H:%M"), v.created_by.clone().unwrap_or_else(|| "—".into()), v.note.clone().unwrap_or_default())}</span>
                                <button class="link" data-testid=format!("compare-{number}") on:click=move |_| compare.run(number)>"Compare with the editor"</button>
                                <Show when=move || can_edit.get()>
                                    <Show when=move || confirming.get() == Some(number)
                                        fallback=move || view! { <button class="link" data-testid=format!("rollback-{number}") on:click=move |_| confirming.set(Some(number))>"Roll back"</button> }>
                                        <span role="alertdialog" aria-label="Confirm rollback">
                                            {format!(" Make v{number}'s code and requirements the latest version? ")}
                                            <button class="danger" data-testid="confirm-rollback" on:click=move |_| rollback.run(number)>"Roll back"</button>
                                            <button on:click=move |_| confirming.set(None)>"Cancel"</button>
                                        </span>
                                    </Show>
                                </Show>
                            </li>
                        }
                    }).collect_view()}
                </ul>
            }.into_any(),
        }}
        <Show when=move || compared.get().is_some()>
            <p class="muted">{move || format!("v{} (left) against the editor (right)", compared.get().unwrap_or_default())}</p>
        </Show>
        <div class="diff" node_ref=diff_element data-testid="diff" style=move || if compared.get().is_some() { "" } else { "display: none" }></div>
        <Show when=move || compared.get().is_some() && requirements_differ.get()>
            <p class="muted">"Requirements: "{move || format!("v{} (left) against the editor (right)", compared.get().unwrap_or_default())}</p>
        </Show>
        <div class="diff" node_ref=requirements_diff_element data-testid="requirements-diff" style=move || if compared.get().is_some() && requirements_differ.get() { "" } else { "display: none" }></div>
    }
}

/// How to use the app's grids in Excel, with a button that mints a read-only token.
#[component]
pub(super) fn Excel(team: String, app: String) -> impl IntoView {
    let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
    let token = RwSignal::new(None::<Result<String, String>>);
    let grids = LocalResource::new({
        let (team, app) = (team.clone(), app.clone());
        move || {
            let (team, app) = (team.clone(), app.clone());
            async move { grids_of(&team, &app).await.unwrap_or_default() }
        }
    });
    // Grids are listed once the app has loaded (and briefly not while it restarts): ask again.
    let interval = set_interval_with_handle(
        move || {
            if grids.get_untracked().is_some_and(|names| names.is_empty()) {
                grids.refetch();
            }
        },
        Duration::from_secs(2),
    )
    .ok();
    on_cleanup(move || {
        if let Some(interval) = interval {
            interval.clear();
        }
    });
    let mint = {
        let team = team.clone();
        move |_| {
            let team = team.clone();
            leptos::task::spawn_local(async move {
                let minted = api::read_token(&team, "Excel add-in")
                    .await
                    .map(|t| t.token)
                    .map_err(|e| e.message);
                token.set(Some(minted));
            });
        }
    };
    let full_app = format!("{team}/{app}");
    view! {
        <ol class="steps">
            <li>"In Excel: Insert → Add-ins → Upload My Add-in, and choose the manifest from "
                <code data-testid="manifest-url">{format!("{origin}/excel/manifest.xml")}</code> "."</li>
            <li>"In the AeroGrid task pane, enter this server's address " <code>{origin.clone()}</code> " and a read-only token:"
                <div class="token">
                    <button data-testid="mint-token" on:click=mint>"Create a read-only token"</button>
                    {move || token.get().map(|minted| match minted {
                        Ok(token) => view! { <p>"Copy it now, it is shown once: " <code data-testid="token" class="secret">{token}</code></p> }.into_any(),
                        Err(error) => view! { <p class="error">{error}</p> }.into_any(),
                    })}
                </div>
            </li>
            <li>"Paste a formula into a cell:"
                {move || {
                    let full_app = full_app.clone();
                    let names = grids.get().unwrap_or_default();
                    let names = if names.is_empty() { vec!["GRID".to_owned()] } else { names };
                    view! {
                        <ul class="formulas" data-testid="formulas">
                            {names.into_iter().map(|grid| view! {
                                <li><code>{format!("=AEROGRID.GRID(\"{full_app}\", \"{grid}\")")}</code>" — the whole grid, ticking"</li>
                                <li><code>{format!("=AEROGRID.VALUE(\"{full_app}\", \"{grid}\", \"ROW\", \"COLUMN\")")}</code>" — one cell"</li>
                            }).collect_view()}
                        </ul>
                    }
                }}
            </li>
        </ol>
    }
}
