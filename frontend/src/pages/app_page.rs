//! `/teams/{team}/apps/{app}`: the editor with live diagnostics, Save / Start / Stop / Restart,
//! and beside it the live preview, the log, bad records, versions and "Use in Excel".

use std::{cell::Cell, rc::Rc, time::Duration};

use leptos::{html, prelude::*};
use leptos_router::hooks::use_params_map;
use wasm_bindgen::{JsCast, prelude::Closure};

use crate::{
    api::{self, DesiredState, Diagnostic, Role, Severity, Status},
    app::use_session,
    editor::Editor,
    grid::{LiveGrid, grids_of},
    pages::team::state_badge,
};

/// Validation waits for typing to pause this long.
const VALIDATE_AFTER: Duration = Duration::from_millis(350);
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// Lines the log pane keeps.
const LOG_LINES: usize = 2000;

// `#[component]` turns the function `pub`; it is only used in this crate.
#[allow(unreachable_pub)]
#[component]
pub(crate) fn AppPage() -> impl IntoView {
    let params = use_params_map();
    let team = params.read_untracked().get("team").unwrap_or_default();
    let app = params.read_untracked().get("app").unwrap_or_default();
    // A new path (another app) mounts a new page.
    view! { <AppEditor team=team app=app /> }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tab {
    Preview,
    Log,
    BadRecords,
    Versions,
    Excel,
}

#[component]
fn AppEditor(team: String, app: String) -> impl IntoView {
    let session = use_session();
    let can_edit = {
        let team = team.clone();
        Memo::new(move |_| session.role_in(&team).is_some_and(|role| role >= Role::Editor))
    };
    let loaded = RwSignal::new(None::<Result<(), String>>);
    let version = RwSignal::new(0i32);
    let saved_code = RwSignal::new(String::new());
    let code = RwSignal::new(String::new());
    let diagnostics = RwSignal::new(Vec::<Diagnostic>::new());
    let status = RwSignal::new(None::<Status>);
    let desired = RwSignal::new(None::<DesiredState>);
    let message = RwSignal::new(None::<(bool, String)>);
    let busy = RwSignal::new(false);
    let tab = RwSignal::new(Tab::Preview);
    let editor = StoredValue::new_local(None::<Editor>);
    let editor_element = NodeRef::<html::Div>::new();
    let edits = Rc::new(Cell::new(0u64));
    let dirty = Memo::new(move |_| code.with(|code| saved_code.with(|saved| code != saved)));

    // Validation, once typing pauses.
    let revalidate = {
        let edits = edits.clone();
        let team = team.clone();
        move |text: String| {
            let edit = edits.get() + 1;
            edits.set(edit);
            let edits = edits.clone();
            let team = team.clone();
            leptos::task::spawn_local(async move {
                gloo_timers::future::sleep(VALIDATE_AFTER).await;
                if edits.get() != edit {
                    return;
                }
                if let Ok(found) = api::validate(&team, &text).await
                    && edits.get() == edit
                {
                    // The page may be gone by now.
                    let _ = editor.try_with_value(|editor| {
                        if let Some(editor) = editor {
                            editor.set_markers(&found);
                        }
                    });
                    diagnostics.set(found);
                }
            });
        }
    };

    let save = {
        let (team, app) = (team.clone(), app.clone());
        move || {
            if !can_edit.get_untracked() || busy.get_untracked() {
                return;
            }
            let (team, app) = (team.clone(), app.clone());
            let text = editor
                .with_value(|editor| editor.as_ref().map(Editor::value))
                .unwrap_or_else(|| code.get_untracked());
            busy.set(true);
            leptos::task::spawn_local(async move {
                match api::save(&team, &app, &text, version.get_untracked()).await {
                    Ok(saved) => {
                        version.set(saved.version);
                        saved_code.set(text);
                        let errors = saved
                            .diagnostics
                            .iter()
                            .filter(|d| d.severity == Severity::Error)
                            .count();
                        diagnostics.set(saved.diagnostics);
                        let note = if errors > 0 {
                            format!(" (with {errors} error(s): Start will refuse it)")
                        } else {
                            String::new()
                        };
                        message.set(Some((true, format!("Saved version {}{note}", saved.version))));
                    }
                    Err(failure) => message.set(Some((false, failure.message))),
                }
                busy.set(false);
            });
        }
    };

    // Load the app, then the editor.
    {
        let (team, app, revalidate, save) =
            (team.clone(), app.clone(), revalidate.clone(), save.clone());
        Effect::new(move |_| {
            let Some(element) = editor_element.get() else { return };
            if loaded.get_untracked().is_some() {
                return;
            }
            loaded.set(Some(Ok(())));
            let (team, app, revalidate, save) =
                (team.clone(), app.clone(), revalidate.clone(), save.clone());
            leptos::task::spawn_local(async move {
                let detail = match api::app(&team, &app).await {
                    Ok(detail) => detail,
                    Err(failure) => {
                        loaded.set(Some(Err(failure.message)));
                        return;
                    }
                };
                version.set(detail.version);
                saved_code.set(detail.code.clone());
                code.set(detail.code.clone());
                diagnostics.set(detail.diagnostics.clone());
                status.set(Some(detail.status));
                desired.set(Some(detail.desired_state));
                let element: web_sys::HtmlElement = element.unchecked_into();
                let on_change = move |text: String| {
                    code.set(text.clone());
                    revalidate(text);
                };
                let Some(editable) = can_edit.try_get_untracked() else { return };
                let read_only = !editable;
                match Editor::create(&element, &detail.code, read_only, on_change, save).await {
                    Ok(created) => {
                        created.set_markers(&detail.diagnostics);
                        // Gone already (the page was left meanwhile): dropping it disposes it.
                        drop(editor.try_set_value(Some(created)));
                    }
                    Err(error) => {
                        loaded.set(Some(Err(format!("The editor could not start: {error}"))))
                    }
                }
            });
        });
    }
    Effect::new(move |_| {
        let read_only = !can_edit.get();
        editor.with_value(|editor| {
            if let Some(editor) = editor {
                editor.set_read_only(read_only);
            }
        });
    });

    // Status, every second, once the app is known to exist.
    let poll = {
        let (team, app) = (team.clone(), app.clone());
        move || {
            if status.get_untracked().is_none() {
                return;
            }
            let (team, app) = (team.clone(), app.clone());
            leptos::task::spawn_local(async move {
                if let Ok(found) = api::status(&team, &app).await {
                    status.set(Some(found));
                }
            });
        }
    };
    let interval = set_interval_with_handle(poll, STATUS_EVERY).ok();
    on_cleanup(move || {
        if let Some(interval) = interval {
            interval.clear();
        }
    });

    let act = {
        let (team, app) = (team.clone(), app.clone());
        move |action: &'static str| {
            let (team, app) = (team.clone(), app.clone());
            busy.set(true);
            leptos::task::spawn_local(async move {
                match api::lifecycle(&team, &app, action).await {
                    Ok(done) => {
                        desired.set(Some(done.desired_state));
                        message.set(Some((true, format!("{} requested", capitalise(action)))));
                    }
                    Err(failure) => {
                        if !failure.diagnostics.is_empty() {
                            diagnostics.set(failure.diagnostics.clone());
                        }
                        message.set(Some((false, failure.message)));
                    }
                }
                busy.set(false);
            });
        }
    };
    let (start, stop, restart) = (act.clone(), act.clone(), act);
    let save_click = save.clone();

    // An administrator grants a topic the code reads from its diagnostic, in one click.
    let is_admin = Memo::new(move |_| {
        session.me.with(|me| me.as_ref().and_then(Option::as_ref).is_some_and(|me| me.is_admin))
    });
    let team_name = team.clone();
    // The button asks, an effect grants (the grant needs the page's non-`Send` revalidation).
    let grant_asked = RwSignal::new(None::<String>);
    {
        let team = team.clone();
        let revalidate = revalidate.clone();
        Effect::new(move |_| {
            let Some(topic) = grant_asked.get() else { return };
            let team = team.clone();
            let revalidate = revalidate.clone();
            busy.set(true);
            leptos::task::spawn_local(async move {
                match api::grant_topic(&team, &topic).await {
                    Ok(()) => {
                        message.set(Some((true, format!("Team {team} may now read `{topic}`"))));
                        let text = editor
                            .with_value(|editor| editor.as_ref().map(Editor::value))
                            .unwrap_or_else(|| code.get_untracked());
                        revalidate(text);
                    }
                    Err(failure) => message.set(Some((false, failure.message))),
                }
                busy.set(false);
            });
        });
    }

    let state = move || status.get().map(|s| s.state);
    let title = format!("{team} / {app}");
    view! {
        <section class="app-page" aria-labelledby="app-title-text">
            <div class="app-head">
                <h2 id="app-title-text" data-testid="app-name">{title}</h2>
                {move || state_badge(state(), desired.get())}
                <span class="muted" data-testid="version">{move || format!("v{}", version.get())}</span>
                <span class="muted" data-testid="dirty">{move || if dirty.get() { "unsaved changes" } else { "" }}</span>
                <span class="spacer"></span>
                <Show when=move || can_edit.get() fallback=|| view! { <span class="muted" data-testid="read-only">"Read only (viewer)"</span> }>
                    <button data-testid="save" title="Save (Ctrl+S)" disabled=move || !dirty.get() || busy.get()
                        on:click={ let save = save_click.clone(); move |_| save() }>"Save"</button>
                    <button class="primary" data-testid="start" disabled=move || busy.get()
                        on:click={ let start = start.clone(); move |_| start("start") }>"Start"</button>
                    <button data-testid="stop" disabled=move || busy.get()
                        on:click={ let stop = stop.clone(); move |_| stop("stop") }>"Stop"</button>
                    <button data-testid="restart" disabled=move || busy.get()
                        on:click={ let restart = restart.clone(); move |_| restart("restart") }>"Restart"</button>
                </Show>
            </div>
            {move || message.get().map(|(ok, text)| view! {
                <p class=if ok { "notice" } else { "error" } role="status" data-testid="message">{text}</p>
            })}
            {move || status.get().and_then(|s| s.error.map(|error| (error, s.error_line))).map(|(error, line)| view! {
                <p class="error" data-testid="app-error">{match line { Some(line) => format!("Line {line}: {error}"), None => error }}</p>
            })}
            {move || match loaded.get() { Some(Err(error)) => Some(view! { <p class="error" role="alert">{error}</p> }), _ => None }}
            <div class="app-body">
                <div class="editor-pane">
                    <div class="editor" node_ref=editor_element data-testid="editor" aria-label="Code of the app"></div>
                    <ul class="problems" data-testid="problems" aria-label="Problems">
                        <For each=move || diagnostics.get() key=|d| (d.line, d.column, d.message.clone()) let(d)>
                            <li class=format!("problem {}", d.severity) data-line=d.line>
                                {format!("Line {}, column {}: {}", d.line, d.column, d.message)}
                                {
                                    // Reactive: who is signed in may be known after the problems.
                                    let (topic, team_name) = (d.grantable_topic.clone(), team_name.clone());
                                    move || topic.clone().filter(|_| is_admin.get()).map(|topic| {
                                        let label = format!("Grant `{topic}` to team {team_name}");
                                        view! {
                                            <button class="grant" data-testid="grant-topic" disabled=move || busy.get()
                                                on:click=move |_| grant_asked.set(Some(topic.clone()))>{label}</button>
                                        }
                                    })
                                }
                            </li>
                        </For>
                    </ul>
                </div>
                <div class="side-pane">
                    <div role="tablist" class="tabs" aria-label="App panels"
                        on:keydown=move |event: leptos::ev::KeyboardEvent| {
                            // The ARIA tabs pattern: arrows move between tabs, one tab stop.
                            let at = TABS.iter().position(|(which, _)| *which == tab.get_untracked()).unwrap_or(0);
                            let next = match event.key().as_str() {
                                "ArrowRight" => (at + 1) % TABS.len(),
                                "ArrowLeft" => (at + TABS.len() - 1) % TABS.len(),
                                "Home" => 0,
                                "End" => TABS.len() - 1,
                                _ => return,
                            };
                            event.prevent_default();
                            tab.set(TABS[next].0);
                            let list = event_target::<web_sys::Element>(&event);
                            if let Some(Ok(Some(button))) = list.parent_element().map(|parent| parent.query_selector(&format!("[data-testid=\"{}\"]", tab_id(TABS[next].1))))
                                && let Ok(button) = button.dyn_into::<web_sys::HtmlElement>()
                            {
                                let _ = button.focus();
                            }
                        }>
                        {TABS
                            .iter()
                            .map(|&(which, label)| view! {
                                <button role="tab" aria-selected=move || (tab.get() == which).to_string()
                                    tabindex=move || if tab.get() == which { "0" } else { "-1" }
                                    data-testid=tab_id(label)
                                    on:click=move |_| tab.set(which)>{label}</button>
                            })
                            .collect_view()}
                    </div>
                    <div role="tabpanel" class="panel">
                        {
                            let (team, app) = (team.clone(), app.clone());
                            move || match tab.get() {
                                Tab::Preview => view! { <Preview team=team.clone() app=app.clone() status=status /> }.into_any(),
                                Tab::Log => view! { <LogPane team=team.clone() app=app.clone() /> }.into_any(),
                                Tab::BadRecords => view! { <BadRecords team=team.clone() app=app.clone() /> }.into_any(),
                                Tab::Versions => view! { <Versions team=team.clone() app=app.clone() current=code can_edit=can_edit on_rollback=move |v: i32, text: String| {
                                    version.set(v);
                                    saved_code.set(text.clone());
                                    code.set(text.clone());
                                    let _ = editor.try_with_value(|editor| if let Some(editor) = editor { editor.set_value(&text); });
                                } /> }.into_any(),
                                Tab::Excel => view! { <Excel team=team.clone() app=app.clone() /> }.into_any(),
                            }
                        }
                    </div>
                </div>
            </div>
        </section>
    }
}

const TABS: [(Tab, &str); 5] = [
    (Tab::Preview, "Preview"),
    (Tab::Log, "Log"),
    (Tab::BadRecords, "Bad records"),
    (Tab::Versions, "Versions"),
    (Tab::Excel, "Use in Excel"),
];

fn tab_id(label: &str) -> String {
    format!("tab-{}", label.to_lowercase().replace(' ', "-"))
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// One tab per grid of the app; the grids are known once the app has run.
#[component]
fn Preview(team: String, app: String, status: RwSignal<Option<Status>>) -> impl IntoView {
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
fn LogPane(team: String, app: String) -> impl IntoView {
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
fn BadRecords(team: String, app: String) -> impl IntoView {
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
fn Versions(
    team: String,
    app: String,
    current: RwSignal<String>,
    can_edit: Memo<bool>,
    on_rollback: impl Fn(i32, String) + Copy + Send + Sync + 'static,
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
    let error = RwSignal::new(None::<String>);
    let confirming = RwSignal::new(None::<i32>);
    let compare = Callback::new({
        let (team, app) = (team.clone(), app.clone());
        move |version: i32| {
            compared.set(Some(version));
            let (team, app) = (team.clone(), app.clone());
            let modified = current.get_untracked();
            leptos::task::spawn_local(async move {
                let old = match api::version_code(&team, &app, version).await {
                    Ok(old) => old,
                    Err(failure) => return error.set(Some(failure.message)),
                };
                // The panel may be gone by now.
                let Some(Some(element)) = diff_element.try_get_untracked() else { return };
                if diff.try_set_value(None).is_some() {
                    return;
                }
                let element: web_sys::HtmlElement = element.unchecked_into();
                match Editor::diff(&element, &old, &modified).await {
                    Ok(view) => drop(diff.try_set_value(Some(view))),
                    Err(failure) => error.set(Some(failure)),
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
                        Ok(code) => {
                            on_rollback(rolled.version, code);
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
                                            {format!(" Make v{number}'s code the latest version? ")}
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
    }
}

/// How to use the app's grids in Excel, with a button that mints a read-only token.
#[component]
fn Excel(team: String, app: String) -> impl IntoView {
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
