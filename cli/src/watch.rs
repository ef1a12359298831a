//! `aerogrid watch`: a grid, live, in the terminal.
//!
//! On a terminal it draws the grid as a table and highlights the cells that changed in the last
//! second (green when a number went up, red when it went down). Piped, it prints one JSON line
//! per message instead, for scripts. Either way it reconnects by itself and starts over from a
//! fresh snapshot.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal, Write as _},
    sync::Arc,
    time::{Duration, Instant},
};

use aerogrid_proto::{
    model::{Applied, GridModel, display, number},
    v1::{SubscribeRequest, SubscribeResponse, Value, row_change, subscribe_response},
};
use clap::Args;

use crate::grids::{ServerArgs, describe, parse_grid, to_json};

/// How long a changed cell stays highlighted.
const HIGHLIGHT_FOR: Duration = Duration::from_secs(1);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Args)]
pub(crate) struct WatchCommand {
    /// The grid, as TEAM/APP/GRID.
    grid: String,
    /// Only these columns (comma-separated; all by default).
    #[arg(long, value_delimiter = ',')]
    columns: Vec<String>,
    /// Only these row keys (comma-separated; all by default).
    #[arg(long, value_delimiter = ',')]
    rows: Vec<String>,
    /// At most this many updates per second from the server (0: every change).
    #[arg(long, default_value_t = 10)]
    rate: u32,
    #[command(flatten)]
    server: ServerArgs,
}

impl WatchCommand {
    pub(crate) async fn run(self) -> anyhow::Result<()> {
        let grid = parse_grid(&self.grid)?;
        let request = SubscribeRequest {
            grid: Some(grid),
            columns: self.columns.clone(),
            row_keys: self.rows.clone(),
            max_updates_per_second: self.rate,
        };
        let mut output = if std::io::stdout().is_terminal() {
            Output::Screen(Screen::enter(&self.grid))
        } else {
            Output::Lines
        };
        let mut backoff = Duration::from_millis(250);
        loop {
            let result = tokio::select! {
                result = self.stream(&request, &mut output) => result,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match result {
                // Errors about the request itself do not get better by retrying.
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry(error)) => {
                    output.disconnected(&format!("{error:#}"), backoff);
                }
                Ok(()) => output.disconnected("the server ended the stream", backoff),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stream(&self, request: &SubscribeRequest, output: &mut Output) -> Result<(), Failure> {
        let mut client = self.server.connect().await.map_err(Failure::Retry)?;
        let call = self.server.request(request.clone()).map_err(Failure::Final)?;
        let mut stream = client.subscribe(call).await.map_err(Failure::from_status)?.into_inner();
        let mut table = Table::default();
        while let Some(message) = stream.message().await.map_err(Failure::from_status)? {
            output.show(&mut table, message);
        }
        Ok(())
    }
}

enum Failure {
    Retry(anyhow::Error),
    Final(anyhow::Error),
}

impl Failure {
    fn from_status(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound
            | Code::InvalidArgument
            | Code::Unimplemented => Self::Final(describe(status)),
            _ => Self::Retry(describe(status)),
        }
    }
}

enum Output {
    Screen(Screen),
    /// One JSON object per line: `{"snapshot": ...}`, `{"changes": ...}`, `{"disconnected": ...}`.
    Lines,
}

impl Output {
    fn show(&mut self, table: &mut Table, message: SubscribeResponse) {
        let Some(event) = message.event else { return };
        match self {
            Self::Screen(screen) => {
                table.apply(event, Instant::now());
                screen.draw(table, None);
            }
            Self::Lines => {
                if let Some(line) = event_json(&event) {
                    println!("{line}");
                }
            }
        }
    }

    fn disconnected(&mut self, reason: &str, retry_in: Duration) {
        match self {
            Self::Screen(screen) => {
                let notice = format!("disconnected: {reason}; reconnecting in {retry_in:?}");
                screen.draw(&Table::default(), Some(&notice));
            }
            Self::Lines => {
                println!("{}", serde_json::json!({ "disconnected": reason }));
            }
        }
    }
}

fn event_json(event: &subscribe_response::Event) -> Option<serde_json::Value> {
    match event {
        subscribe_response::Event::Snapshot(snapshot) => {
            let rows: serde_json::Map<String, serde_json::Value> = snapshot
                .rows
                .iter()
                .map(|row| (row.key.clone(), row_json(&snapshot.columns, &row.values)))
                .collect();
            Some(serde_json::json!({ "snapshot": {
                "sequence": snapshot.sequence,
                "columns": snapshot.columns,
                "rows": rows,
            }}))
        }
        subscribe_response::Event::Changes(changes) => {
            let rows: Vec<serde_json::Value> = changes
                .rows
                .iter()
                .map(|row| match &row.change {
                    Some(row_change::Change::Updated(cells)) => serde_json::json!({
                        "key": row.key,
                        "columns": cells.columns,
                        "values": cells.values.iter().map(to_json).collect::<Vec<_>>(),
                    }),
                    _ => serde_json::json!({ "key": row.key, "deleted": true }),
                })
                .collect();
            Some(serde_json::json!({ "changes": { "sequence": changes.sequence, "rows": rows } }))
        }
        subscribe_response::Event::Heartbeat(_) => None,
    }
}

fn row_json(columns: &[String], values: &[Value]) -> serde_json::Value {
    serde_json::Value::Object(columns.iter().cloned().zip(values.iter().map(to_json)).collect())
}

/// The grid as the terminal shows it, with when and how each cell last changed.
#[derive(Default)]
struct Table {
    grid: GridModel,
    changed: HashMap<(Arc<str>, usize), (Instant, Trend)>,
    updated_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Trend {
    Up,
    Down,
    Changed,
}

impl Table {
    fn apply(&mut self, event: subscribe_response::Event, now: Instant) {
        match self.grid.apply(event) {
            Applied::Snapshot => self.changed.clear(),
            Applied::Written(written) => {
                for cell in written {
                    let value = &self.grid.rows()[&cell.key][cell.column];
                    if *value != cell.before {
                        let trend = trend(&cell.before, value);
                        self.changed.insert((cell.key, cell.column), (now, trend));
                    }
                }
            }
            Applied::Nothing => {}
        }
        self.updated_at = Some(now);
        self.changed.retain(|_, (at, _)| now.duration_since(*at) < HIGHLIGHT_FOR);
    }

    /// The table as text for a `width` x `height` terminal, ANSI-highlighted.
    fn render(
        &self,
        title: &str,
        notice: Option<&str>,
        width: usize,
        height: usize,
        now: Instant,
    ) -> String {
        let key_header = "key";
        let cells: Vec<(&Arc<str>, Vec<String>)> = self
            .grid
            .rows()
            .iter()
            .map(|(key, values)| (key, values.iter().map(display).collect()))
            .collect();
        let mut widths: Vec<usize> = std::iter::once(key_header.len())
            .chain(self.grid.columns().iter().map(String::len))
            .collect();
        for (key, values) in &cells {
            widths[0] = widths[0].max(key.chars().count());
            for (index, text) in values.iter().enumerate() {
                if let Some(width) = widths.get_mut(index + 1) {
                    *width = (*width).max(text.chars().count());
                }
            }
        }
        let mut screen = String::new();
        let status = notice.map_or_else(
            || format!("{} rows · sequence {}", self.grid.rows().len(), self.grid.sequence()),
            str::to_owned,
        );
        let _ = writeln!(
            screen,
            "\x1b[1m{}\x1b[0m  {}",
            clip(title, width),
            clip(&status, width.saturating_sub(title.len() + 2))
        );
        let mut header = format!("{:<w$}", key_header, w = widths[0]);
        for (index, column) in self.grid.columns().iter().enumerate() {
            let _ = write!(header, "  {:>w$}", column, w = widths[index + 1]);
        }
        let _ = writeln!(screen, "\x1b[4m{}\x1b[0m", clip(&header, width));
        // Title, header, and a line for "more rows".
        let room = height.saturating_sub(3);
        for (key, values) in cells.iter().take(room) {
            let mut line = format!("{:<w$}", key, w = widths[0]);
            let mut visible = widths[0];
            for (index, text) in values.iter().enumerate() {
                let cell_width = widths.get(index + 1).copied().unwrap_or(0);
                visible += 2 + cell_width;
                if visible > width {
                    break;
                }
                let padded = format!("{text:>cell_width$}");
                let style = match self.changed.get(&((*key).clone(), index)) {
                    Some((at, trend)) if now.duration_since(*at) < HIGHLIGHT_FOR => match trend {
                        Trend::Up => "\x1b[1;30;42m",
                        Trend::Down => "\x1b[1;30;41m",
                        Trend::Changed => "\x1b[7m",
                    },
                    _ => "",
                };
                if style.is_empty() {
                    let _ = write!(line, "  {padded}");
                } else {
                    let _ = write!(line, "  {style}{padded}\x1b[0m");
                }
            }
            let _ = writeln!(screen, "{line}");
        }
        if cells.len() > room {
            let _ =
                writeln!(screen, "… {} more rows (use --rows to pick some)", cells.len() - room);
        }
        screen
    }
}

fn trend(old: &Value, new: &Value) -> Trend {
    match (number(old), number(new)) {
        (Some(old), Some(new)) if new > old => Trend::Up,
        (Some(old), Some(new)) if new < old => Trend::Down,
        _ => Trend::Changed,
    }
}

fn clip(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// The terminal in its alternate screen, given back as it was on drop.
struct Screen {
    title: String,
}

impl Screen {
    fn enter(title: &str) -> Self {
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Self { title: title.to_owned() }
    }

    /// Draws every message: `--rate` (10/s by default) already bounds how often they come, and
    /// a skipped frame could leave the screen stale until the next heartbeat.
    fn draw(&mut self, table: &Table, notice: Option<&str>) {
        let now = Instant::now();
        let (width, height) = terminal_size();
        let text = table.render(&self.title, notice, width, height, now);
        let mut stdout = std::io::stdout().lock();
        let _ = write!(stdout, "\x1b[H\x1b[2J{text}");
        let _ = stdout.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
}

fn terminal_size() -> (usize, usize) {
    let columns = std::env::var("COLUMNS").ok().and_then(|text| text.parse().ok());
    let lines = std::env::var("LINES").ok().and_then(|text| text.parse().ok());
    match (columns, lines) {
        (Some(columns), Some(lines)) => (columns, lines),
        _ => terminal_size_of_stdout().unwrap_or((100, 30)),
    }
}

#[allow(unsafe_code, reason = "TIOCGWINSZ has no safe wrapper in std")]
fn terminal_size_of_stdout() -> Option<(usize, usize)> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which is valid for the call.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_col > 0).then(|| (usize::from(size.ws_col), usize::from(size.ws_row)))
}

#[cfg(test)]
mod tests {
    use aerogrid_proto::v1::{CellUpdates, Changes, Row, RowChange, Snapshot, value};

    use super::*;

    fn int(value: i64) -> Value {
        Value { kind: Some(value::Kind::Int(value)) }
    }

    fn table_with_changes(now: Instant) -> Table {
        let mut table = Table::default();
        table.apply(
            subscribe_response::Event::Snapshot(Snapshot {
                sequence: 1,
                columns: vec!["units".into(), "price".into()],
                rows: vec![
                    Row { key: "a".into(), values: vec![int(1), int(10)] },
                    Row { key: "b".into(), values: vec![int(2), int(20)] },
                    Row { key: "c".into(), values: vec![int(3), int(30)] },
                ],
            }),
            now,
        );
        let update = |key: &str, column: u32, value: i64| RowChange {
            key: key.into(),
            change: Some(row_change::Change::Updated(CellUpdates {
                columns: vec![column],
                values: vec![int(value)],
            })),
        };
        table.apply(
            subscribe_response::Event::Changes(Changes {
                sequence: 2,
                rows: vec![
                    update("a", 0, 5),
                    update("b", 1, 7),
                    RowChange { key: "c".into(), change: Some(row_change::Change::Deleted(true)) },
                ],
            }),
            now,
        );
        table
    }

    #[test]
    fn changes_update_cells_and_remember_their_trend() {
        let now = Instant::now();
        let table = table_with_changes(now);
        let rows = table.grid.rows();
        assert_eq!(rows.keys().map(|key| &**key).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(rows["a"], [int(5), int(10)]);
        assert_eq!(table.changed[&("a".into(), 0)].1, Trend::Up);
        assert_eq!(table.changed[&("b".into(), 1)].1, Trend::Down);
        assert_eq!(table.changed.len(), 2);
        assert_eq!(table.grid.sequence(), 2);
    }

    #[test]
    fn changed_cells_are_highlighted_for_a_second() {
        let now = Instant::now();
        let table = table_with_changes(now);
        let fresh = table.render("acme/orders/g", None, 80, 10, now);
        assert!(fresh.contains("\x1b[1;30;42m    5\x1b[0m"), "{fresh:?}");
        assert!(fresh.contains("\x1b[1;30;41m    7\x1b[0m"), "{fresh:?}");
        assert!(fresh.contains("2 rows · sequence 2"));
        let later = table.render("acme/orders/g", None, 80, 10, now + HIGHLIGHT_FOR);
        assert!(!later.contains("\x1b[1;30;4"), "{later:?}");
    }

    #[test]
    fn rows_beyond_the_screen_are_counted() {
        let now = Instant::now();
        let table = table_with_changes(now);
        // Title, header, one row, and the "more" line.
        let text = table.render("t", None, 80, 4, now);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.ends_with("… 1 more rows (use --rows to pick some)\n"), "{text}");
    }
}
