//! `/teams/{team}/apps/{app}`: the editors of the code and of its requirements with live
//! diagnostics, Save / Start / Stop / Restart, and beside them the live preview, the log, bad
//! records, versions and "Use in Excel".

use std::{cell::Cell, rc::Rc, time::Duration};

use leptos::{html, prelude::*};
use leptos_router::hooks::use_params_map;
use wasm_bindgen::JsCast;

use crate::{
    api::{self, DesiredState, Diagnostic, Role, Severity, SourceFile, Status},
    app::use_session,
    editor::{Editor, Text},
    pages::team::state_badge,
};

mod panels;

use panels::{BadRecords, Excel, LogPane, Preview, Versions};

/// Validation waits for typing to pause this long.
const VALIDATE_AFTER: Duration = Duration::from_millis(350);
const STATUS_EVERY: Duration = Duration::from_secs(1);

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
    let saved_requirements = RwSignal::new(String::new());
    let requirements = RwSignal::new(String::new());
    // Which editor shows: the code, or the requirements.
    let showing = RwSignal::new(SourceFile::Code);
    let diagnostics = RwSignal::new(Vec::<Diagnostic>::new());
    let status = RwSignal::new(None::<Status>);
    let desired = RwSignal::new(None::<DesiredState>);
    let message = RwSignal::new(None::<(bool, String)>);
    let busy = RwSignal::new(false);
    let tab = RwSignal::new(Tab::Preview);
    let editor = StoredValue::new_local(None::<Editor>);
    let editor_element = NodeRef::<html::Div>::new();
    let requirements_editor = StoredValue::new_local(None::<Editor>);
    let requirements_element = NodeRef::<html::Div>::new();
    let edits = Rc::new(Cell::new(0u64));
    let dirty = Memo::new(move |_| {
        code.with(|code| saved_code.with(|saved| code != saved))
            || requirements.with(|now| saved_requirements.with(|saved| now != saved))
    });
    // Each editor shows the diagnostics of its own text.
    let show_markers = move |found: &[Diagnostic]| {
        let of = |file: SourceFile| -> Vec<Diagnostic> {
            found.iter().filter(|d| d.file == file).cloned().collect()
        };
        let _ = editor.try_with_value(|editor| {
            if let Some(editor) = editor {
                editor.set_markers(&of(SourceFile::Code));
            }
        });
        let _ = requirements_editor.try_with_value(|editor| {
            if let Some(editor) = editor {
                editor.set_markers(&of(SourceFile::Requirements));
            }
        });
    };
    let current_texts = move || {
        let code = editor
            .with_value(|editor| editor.as_ref().map(Editor::value))
            .unwrap_or_else(|| code.get_untracked());
        let requirements = requirements_editor
            .with_value(|editor| editor.as_ref().map(Editor::value))
            .unwrap_or_else(|| requirements.get_untracked());
        (code, requirements)
    };

    // Validation, once typing pauses.
    let revalidate = {
        let edits = edits.clone();
        let team = team.clone();
        move |(text, wanted): (String, String)| {
            let edit = edits.get() + 1;
            edits.set(edit);
            let edits = edits.clone();
            let team = team.clone();
            leptos::task::spawn_local(async move {
                gloo_timers::future::sleep(VALIDATE_AFTER).await;
                if edits.get() != edit {
                    return;
                }
                if let Ok(found) = api::validate(&team, &text, &wanted).await
                    && edits.get() == edit
                {
                    // The page may be gone by now.
                    show_markers(&found);
                    let _ = diagnostics.try_set(found);
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
            let (text, wanted) = current_texts();
            busy.set(true);
            leptos::task::spawn_local(async move {
                match api::save(&team, &app, &text, &wanted, version.get_untracked()).await {
                    Ok(saved) => {
                        version.set(saved.version);
                        saved_code.set(text);
                        saved_requirements.set(wanted);
                        show_markers(&saved.diagnostics);
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
                saved_requirements.set(detail.requirements.clone());
                requirements.set(detail.requirements.clone());
                diagnostics.set(detail.diagnostics.clone());
                status.set(Some(detail.status));
                desired.set(Some(detail.desired_state));
                let element: web_sys::HtmlElement = element.unchecked_into();
                let on_code = {
                    let revalidate = revalidate.clone();
                    move |text: String| {
                        code.set(text.clone());
                        revalidate((text, requirements.get_untracked()));
                    }
                };
                let on_requirements = move |text: String| {
                    requirements.set(text.clone());
                    revalidate((code.get_untracked(), text));
                };
                let Some(editable) = can_edit.try_get_untracked() else { return };
                let read_only = !editable;
                let created = Editor::create(
                    &element,
                    Text::Code,
                    &detail.code,
                    read_only,
                    on_code,
                    save.clone(),
                )
                .await;
                let Some(Some(second)) = requirements_element.try_get_untracked() else { return };
                let second: web_sys::HtmlElement = second.unchecked_into();
                let listed = Editor::create(
                    &second,
                    Text::Requirements,
                    &detail.requirements,
                    read_only,
                    on_requirements,
                    save,
                )
                .await;
                match (created, listed) {
                    (Ok(created), Ok(listed)) => {
                        // Who may edit may have become known while they were created.
                        if let Some(editable) = can_edit.try_get_untracked() {
                            created.set_read_only(!editable);
                            listed.set_read_only(!editable);
                        }
                        // Gone already (the page was left meanwhile): dropping them disposes them.
                        drop(editor.try_set_value(Some(created)));
                        drop(requirements_editor.try_set_value(Some(listed)));
                        show_markers(&detail.diagnostics);
                    }
                    (Err(error), _) | (_, Err(error)) => {
                        loaded.set(Some(Err(format!("The editor could not start: {error}"))))
                    }
                }
            });
        });
    }
    Effect::new(move |_| {
        let read_only = !can_edit.get();
        for editor in [editor, requirements_editor] {
            editor.with_value(|editor| {
                if let Some(editor) = editor {
                    editor.set_read_only(read_only);
                }
            });
        }
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
                            show_markers(&failure.diagnostics);
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
                        revalidate(current_texts());
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
            {move || status.get().and_then(|s| s.progress).map(|progress| view! {
                <p class="notice" role="status" data-testid="app-progress">{progress}</p>
            })}
            {move || status.get().and_then(|s| s.error.map(|error| (error, s.error_line))).map(|(error, line)| view! {
                <p class="error" data-testid="app-error">{match line { Some(line) => format!("Line {line}: {error}"), None => error }}</p>
            })}
            {move || match loaded.get() { Some(Err(error)) => Some(view! { <p class="error" role="alert">{error}</p> }), _ => None }}
            <div class="app-body">
                <div class="editor-pane">
                    <div role="tablist" class="tabs files" aria-label="The app's files">
                        {[(SourceFile::Code, "main.py", "file-code"), (SourceFile::Requirements, "requirements.txt", "file-requirements")]
                            .into_iter()
                            .map(|(file, label, id)| view! {
                                <button role="tab" data-testid=id aria-selected=move || (showing.get() == file).to_string()
                                    on:click=move |_| showing.set(file)>
                                    {label}
                                    {move || {
                                        let errors = diagnostics.with(|found| found.iter().filter(|d| d.file == file && d.severity == Severity::Error).count());
                                        (errors > 0).then(|| view! { <span class="count error">{errors}</span> })
                                    }}
                                </button>
                            })
                            .collect_view()}
                    </div>
                    <div class="editor" node_ref=editor_element data-testid="editor" aria-label="Code of the app"
                        style=move || if showing.get() == SourceFile::Code { "" } else { "display: none" }></div>
                    <div class="editor" node_ref=requirements_element data-testid="requirements-editor"
                        aria-label="Requirements of the app: one Python package per line, e.g. pandas==2.2.3"
                        style=move || if showing.get() == SourceFile::Requirements { "" } else { "display: none" }></div>
                    <ul class="problems" data-testid="problems" aria-label="Problems">
                        <For each=move || diagnostics.get() key=|d| (d.file, d.line, d.column, d.message.clone()) let(d)>
                            <li class=format!("problem {}", d.severity) data-line=d.line data-file=d.file.as_str()>
                                {match d.file {
                                    SourceFile::Code => format!("Line {}, column {}: {}", d.line, d.column, d.message),
                                    SourceFile::Requirements => format!("requirements.txt, line {}: {}", d.line, d.message),
                                }}
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
                                Tab::Versions => view! { <Versions team=team.clone() app=app.clone() current=code current_requirements=requirements can_edit=can_edit on_rollback=move |v: i32, text: String, wanted: String| {
                                    version.set(v);
                                    saved_code.set(text.clone());
                                    code.set(text.clone());
                                    saved_requirements.set(wanted.clone());
                                    requirements.set(wanted.clone());
                                    let _ = editor.try_with_value(|editor| if let Some(editor) = editor { editor.set_value(&text); });
                                    let _ = requirements_editor.try_with_value(|editor| if let Some(editor) = editor { editor.set_value(&wanted); });
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
