//! The live preview of one grid, over gRPC-web: a snapshot then changes, kept in a model the
//! view reads. Only the rows in view are in the page (10,000 rows stay smooth); sorting and
//! filtering work on the model; changed cells flash; the stream reconnects by itself.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aerogrid_proto::{
    model::{Applied, GridModel, compare, display},
    v1::{
        GridRef, ListGridsRequest, SubscribeRequest, Value, grid_service_client::GridServiceClient,
        subscribe_response,
    },
};
use leptos::prelude::*;
use tonic_web_wasm_client::Client;

/// Height of one row in pixels (the CSS must agree: `.grid-row`).
const ROW_HEIGHT: f64 = 28.0;
/// Height of the scrolled area.
const VIEW_HEIGHT: f64 = 420.0;
/// A changed cell flashes this long.
const FLASH_MS: f64 = 1000.0;
/// The server conflates changes to at most this many messages a second: the page redraws no
/// more often than that, however fast the grid changes.
const UPDATES_PER_SECOND: u32 = 20;

fn client() -> GridServiceClient<Client> {
    let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
    GridServiceClient::new(Client::new(origin))
}

/// The grids of `team/app` and their columns (none before the app first ran).
pub(crate) async fn grids_of(team: &str, app: &str) -> Result<Vec<String>, String> {
    let answer = client()
        .list_grids(ListGridsRequest { team: team.to_owned() })
        .await
        .map_err(|status| status.message().to_owned())?;
    Ok(answer
        .into_inner()
        .grids
        .into_iter()
        .filter_map(|info| info.grid)
        .filter(|grid| grid.app == app)
        .map(|grid| grid.grid)
        .collect())
}

/// The grid and when each of its cells last changed (ms since the page loaded; 0: never).
#[derive(Default)]
struct Model {
    grid: GridModel,
    changed: HashMap<Arc<str>, Vec<f64>>,
}

impl Model {
    fn apply(&mut self, event: subscribe_response::Event, now: f64) {
        match self.grid.apply(event) {
            Applied::Snapshot => self.changed.clear(),
            Applied::Written(written) => {
                let width = self.grid.columns().len();
                for cell in written {
                    self.changed.entry(cell.key).or_insert_with(|| vec![0.0; width])[cell.column] =
                        now;
                }
                let rows = self.grid.rows();
                self.changed.retain(|key, _| rows.contains_key(key));
            }
            Applied::Nothing => {}
        }
    }

    /// Whether the cell changed within the flash's time.
    fn fresh(&self, key: &str, column: usize, now: f64) -> bool {
        let changed = self.changed.get(key).and_then(|row| row.get(column)).copied();
        changed.is_some_and(|changed| changed > 0.0 && now - changed < FLASH_MS)
    }
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or(0.0, |p| p.now())
}

/// Sorting: by the key (None) or a column, ascending or not.
#[derive(Clone, Copy, PartialEq)]
struct Sort {
    column: Option<usize>,
    ascending: bool,
}

// `#[component]` turns the function `pub`; it is only used in this crate.
#[allow(unreachable_pub)]
#[component]
pub(crate) fn LiveGrid(team: String, app: String, grid: String) -> impl IntoView {
    let model = StoredValue::new_local(Model::default());
    // Bumped whenever the model changes: what the view depends on.
    let version = RwSignal::new(0u64);
    let connection = RwSignal::new("connecting".to_owned());
    let scroll_top = RwSignal::new(0.0f64);
    let sort = RwSignal::new(Sort { column: None, ascending: true });
    let filter = RwSignal::new(String::new());
    // Leaving the page ends the subscription at once (its fetch is dropped), not at the next
    // message.
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();

    {
        let request = SubscribeRequest {
            grid: Some(GridRef { team, app, grid }),
            columns: vec![],
            row_keys: vec![],
            max_updates_per_second: UPDATES_PER_SECOND,
        };
        let subscribe = async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                connection.set("connecting".into());
                match client().subscribe(request.clone()).await {
                    Ok(response) => {
                        let mut stream = response.into_inner();
                        loop {
                            match stream.message().await {
                                Ok(Some(message)) => {
                                    if let Some(event) = message.event {
                                        model.update_value(|model| model.apply(event, now_ms()));
                                        version.update(|v| *v += 1);
                                    }
                                    connection.set("live".into());
                                    backoff = Duration::from_millis(500);
                                }
                                Ok(None) => {
                                    connection.set("reconnecting: the stream ended".into());
                                    break;
                                }
                                Err(status) => {
                                    connection.set(format!("reconnecting: {}", status.message()));
                                    break;
                                }
                            }
                        }
                    }
                    Err(status) => connection.set(format!("reconnecting: {}", status.message())),
                }
                gloo_timers::future::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        };
        leptos::task::spawn_local(async move {
            // `stopped` first: once the page is gone, no message is applied to its model.
            futures::future::select(stopped, Box::pin(subscribe)).await;
        });
    }
    // Flashes fade without a change: redraw a few times a second while any cell is fresh.
    let clock = RwSignal::new(0u64);
    let ticker =
        set_interval_with_handle(move || clock.update(|c| *c += 1), Duration::from_millis(250))
            .ok();
    on_cleanup(move || {
        let _ = stop.send(());
        if let Some(ticker) = ticker {
            ticker.clear();
        }
    });

    let columns = Memo::new(move |_| {
        version.track();
        model.with_value(|model| model.grid.columns().to_vec())
    });
    // The keys in display order, after filtering and sorting.
    // Recomputed whenever the model changes; never compared (10,000 keys would cost more than
    // they save).
    let keys = Memo::new_with_compare(
        move |_| {
            version.track();
            model.with_value(|model| {
                let needle = filter.get().to_lowercase();
                let mut rows: Vec<(&Arc<str>, &Vec<Value>)> = model
                    .grid
                    .rows()
                    .iter()
                    .filter(|(key, values)| {
                        needle.is_empty()
                            || key.to_lowercase().contains(&needle)
                            || values
                                .iter()
                                .any(|value| display(value).to_lowercase().contains(&needle))
                    })
                    .collect();
                let Sort { column, ascending } = sort.get();
                match column {
                    None => rows.sort_unstable_by(|a, b| a.0.cmp(b.0)),
                    Some(column) => rows.sort_unstable_by(|a, b| {
                        compare(&a.1[column], &b.1[column]).then_with(|| a.0.cmp(b.0))
                    }),
                }
                if !ascending {
                    rows.reverse();
                }
                rows.into_iter().map(|(key, _)| key.clone()).collect::<Vec<Arc<str>>>()
            })
        },
        |_, _| true,
    );
    let total_rows = move || {
        version.track();
        model.with_value(|model| model.grid.rows().len())
    };
    let visible = move || {
        clock.track();
        let first = (scroll_top.get() / ROW_HEIGHT).floor() as usize;
        let count = (VIEW_HEIGHT / ROW_HEIGHT).ceil() as usize + 2;
        let now = now_ms();
        keys.with(|keys| {
            model.with_value(|model| {
                keys.iter()
                    .enumerate()
                    .skip(first)
                    .take(count)
                    .map(|(index, key)| {
                        let cells: Vec<(String, bool)> = model.grid.rows()[key]
                            .iter()
                            .enumerate()
                            .map(|(column, value)| (display(value), model.fresh(key, column, now)))
                            .collect();
                        (index, key.to_string(), cells)
                    })
                    .collect::<Vec<_>>()
            })
        })
    };
    let header = move || {
        let current = sort.get();
        let mut headers = vec![(None, "key".to_owned())];
        headers.extend(columns.get().into_iter().enumerate().map(|(i, c)| (Some(i), c)));
        headers
            .into_iter()
            .map(|(column, name)| {
                let sorted = current.column == column;
                let aria = if !sorted { "none" } else if current.ascending { "ascending" } else { "descending" };
                let toggle = move |_| {
                    sort.update(|sort| {
                        if sort.column == column {
                            sort.ascending = !sort.ascending;
                        } else {
                            *sort = Sort { column, ascending: true };
                        }
                    })
                };
                view! {
                    <div role="columnheader" class="grid-cell grid-head" aria-sort=aria>
                        <button class="sort" on:click=toggle title="Sort by this column">
                            {name}{if sorted { if current.ascending { " ▲" } else { " ▼" } } else { "" }}
                        </button>
                    </div>
                }
            })
            .collect_view()
    };
    let column_count = move || columns.get().len() + 1;
    view! {
        <div class="grid-toolbar">
            <label>
                <span class="visually-hidden">"Filter rows"</span>
                <input type="search" placeholder="Filter rows" data-testid="grid-filter" bind:value=filter />
            </label>
            <span class="muted" data-testid="row-count">
                {move || { let shown = keys.with(Vec::len); let total = total_rows(); if shown == total { format!("{total} rows") } else { format!("{shown} of {total} rows") } }}
            </span>
            <span class=move || format!("connection {}", if connection.get() == "live" { "live" } else { "waiting" })
                data-testid="connection" data-state=move || connection.get()>
                {move || connection.get()}
            </span>
        </div>
        <div class="grid" role="grid" aria-rowcount=move || keys.with(Vec::len) + 1 aria-colcount=column_count
            style=move || format!("--columns: {}", column_count())>
            <div role="row" class="grid-row grid-header" aria-rowindex="1">{header}</div>
            <div class="grid-body" style=format!("height: {VIEW_HEIGHT}px") tabindex="0"
                aria-label="Rows: arrow keys, Page Up/Down, Home and End scroll"
                on:keydown=move |event: leptos::ev::KeyboardEvent| {
                    let body = event_target::<web_sys::Element>(&event);
                    let page = VIEW_HEIGHT - ROW_HEIGHT;
                    let top = f64::from(body.scroll_top());
                    let to = match event.key().as_str() {
                        "ArrowDown" => top + ROW_HEIGHT,
                        "ArrowUp" => top - ROW_HEIGHT,
                        "PageDown" => top + page,
                        "PageUp" => top - page,
                        "Home" => 0.0,
                        "End" => f64::from(body.scroll_height()),
                        _ => return,
                    };
                    event.prevent_default();
                    body.set_scroll_top(to.max(0.0) as i32);
                }
                on:scroll=move |event| {
                    let target = event_target::<web_sys::Element>(&event);
                    scroll_top.set(f64::from(target.scroll_top()));
                }>
                <div class="grid-spacer" style=move || format!("height: {}px", keys.with(Vec::len) as f64 * ROW_HEIGHT)>
                    {move || visible().into_iter().map(|(index, key, cells)| { let label = key.clone(); view! {
                        <div role="row" class="grid-row" aria-rowindex=index + 2 data-key=key
                            style=format!("transform: translateY({}px)", index as f64 * ROW_HEIGHT)>
                            <div role="rowheader" class="grid-cell key">{label}</div>
                            {cells.into_iter().map(|(value, fresh)| view! {
                                <div role="gridcell" class=if fresh { "grid-cell flash" } else { "grid-cell" }>{value}</div>
                            }).collect_view()}
                        </div>
                    }}).collect_view()}
                </div>
            </div>
        </div>
    }
}
