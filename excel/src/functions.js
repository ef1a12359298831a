// AeroGrid's Excel custom functions: AEROGRID.VALUE and AEROGRID.GRID, streaming live grids into
// cells.
//
// How it works: every cell on one grid (team, app, grid) shares ONE gRPC-web subscription to the
// whole grid (a `Feed`, reference-counted by its cells); the feed keeps the grid in a `GridModel`
// and tells the cells whose rows changed. Each cell sets its result at most `aerogrid.rate` times
// a second (the server conflates to the same rate), computing its value only when it does. A
// feed reconnects by itself (0.5 s doubling to 10 s), reading the server URL and token from
// `OfficeRuntime.storage` again each time, and ends its subscription when its last cell is
// cancelled.
//
// `excel/build.mjs` bundles this module with the others of src/ into the classic script
// `dist/functions.js` that Excel's shared runtime loads (no import/export there): its imports are
// the bundle's shared scope, and what the task pane needs is on `globalThis.AeroGrid`.

import { Code, GrpcError, listGrids, subscribe } from './grpcweb.js';
import { GridModel } from './model.js';
import {
  DEFAULT_RATE,
  RATE_KEY,
  TOKEN_KEY,
  URL_KEY,
  defaultUrl,
  getItem,
  readSettings,
  setItem,
} from './settings.js';
import {
  Problem,
  noToken,
  noUrl,
  problemFromError,
  teamLookups,
  toExcelError,
  tokenTeam,
} from './problems.js';

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 10_000;
/** The server sends a heartbeat every 5 s on a quiet grid: silence this long means a dead link. */
const SILENCE_MS = 20_000;
/**
 * How long a feed stays subscribed after its last cell went away: Excel cancels and invokes a
 * formula again when it is re-entered or copied, and that should not cost a new snapshot.
 */
const LINGER_MS = 1_000;
/** Excel's limit on the text in a cell. */
const MAX_TEXT = 32_767;

// ---------------------------------------------------------------------------------------------
// Feeds: one subscription per grid, shared by its cells.

/** @type {Map<string, Feed>} */
const feeds = new Map();
/** @type {Set<Cell>} */
const cells = new Set();

/** Milliseconds on a monotonic clock (wall-clock jumps must not stall or burst cells). */
function now() {
  const clock = globalThis.performance;
  return clock && typeof clock.now === 'function' ? clock.now() : Date.now();
}

/** A sleep that `wake()` ends early. */
function interruptibleSleep(ms) {
  let wake;
  const promise = new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { promise, wake };
}

class Feed {
  constructor(team, app, grid) {
    this.team = team;
    this.app = app;
    this.grid = grid;
    this.ref = `${team}/${app}/${grid}`;
    this.model = new GridModel();
    /** Why the cells cannot show values now, or null. */
    this.problem = null;
    /** @type {Set<Cell>} every cell */
    this.cells = new Set();
    /** @type {Map<string, Set<Cell>>} VALUE cells by row key */
    this.byRow = new Map();
    /** @type {Set<Cell>} GRID cells (every change concerns them) */
    this.wholeGrid = new Set();
    this.rate = DEFAULT_RATE;
    this.stopped = false;
    this.controller = null;
    this.sleep = null;
    this.lingerTimer = null;
    this.subscriptions = 0;
    this.running = this.run();
  }

  add(cell) {
    if (this.lingerTimer) {
      clearTimeout(this.lingerTimer);
      this.lingerTimer = null;
    }
    this.cells.add(cell);
    if (cell.row === undefined) {
      this.wholeGrid.add(cell);
    } else {
      let set = this.byRow.get(cell.row);
      if (!set) this.byRow.set(cell.row, (set = new Set()));
      set.add(cell);
    }
    if (this.problem || this.model.ready) cell.markDirty();
  }

  remove(cell) {
    this.cells.delete(cell);
    this.wholeGrid.delete(cell);
    const set = this.byRow.get(cell.row);
    if (set) {
      set.delete(cell);
      if (set.size === 0) this.byRow.delete(cell.row);
    }
    if (this.cells.size === 0 && !this.lingerTimer) {
      this.lingerTimer = setTimeout(() => {
        this.lingerTimer = null;
        if (this.cells.size === 0) this.stop();
      }, LINGER_MS);
    }
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (feeds.get(this.ref) === this) feeds.delete(this.ref);
    if (this.controller) this.controller.abort();
    if (this.sleep) this.sleep.wake();
  }

  /** Drops the connection and connects again now (settings changed). */
  reconnect() {
    this.backoff = MIN_BACKOFF_MS;
    if (this.controller) this.controller.abort();
    if (this.sleep) this.sleep.wake();
  }

  notifyAll() {
    for (const cell of this.cells) cell.markDirty();
  }

  async run() {
    this.backoff = MIN_BACKOFF_MS;
    while (!this.stopped) {
      const controller = new AbortController();
      this.controller = controller;
      let silent = null;
      let silenced = false;
      const listen = () => {
        clearTimeout(silent);
        silent = setTimeout(() => {
          silenced = true;
          controller.abort();
        }, SILENCE_MS);
      };
      try {
        const settings = await readSettings();
        if (this.stopped) break;
        if (!settings.url) throw noUrl();
        if (!settings.token) throw noToken();
        this.rate = settings.rate;
        this.subscriptions++;
        const stream = subscribe({
          url: settings.url,
          token: settings.token,
          grid: { team: this.team, app: this.app, grid: this.grid },
          maxUpdatesPerSecond: Math.max(1, Math.round(settings.rate)),
          signal: controller.signal,
        });
        listen();
        for await (const message of stream) {
          listen();
          const changed = this.model.apply(message);
          if (!changed) continue;
          if (changed.snapshot) {
            this.problem = null;
            this.backoff = MIN_BACKOFF_MS;
            this.notifyAll();
          } else {
            for (const key of changed.keys) {
              const set = this.byRow.get(key);
              if (set) for (const cell of set) cell.markDirty();
            }
            for (const cell of this.wholeGrid) cell.markDirty();
          }
        }
        throw new GrpcError(Code.UNAVAILABLE, 'the server ended the stream');
      } catch (error) {
        if (this.stopped) break;
        if (silenced) {
          this.problem = new Problem(
            'notAvailable',
            `AeroGrid: ${this.ref}: no word from the server for ${SILENCE_MS / 1000} s (reconnecting)`,
          );
        } else if (error && error.code === Code.CANCELLED && controller.signal.aborted) {
          // reconnect(): settings changed; go again at once.
          continue;
        } else {
          this.problem = problemFromError(error, this.ref);
        }
        this.model = new GridModel();
        this.notifyAll();
      } finally {
        clearTimeout(silent);
        if (this.controller === controller) this.controller = null;
      }
      if (this.stopped) break;
      this.sleep = interruptibleSleep(this.backoff);
      await this.sleep.promise;
      this.sleep = null;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    }
  }
}

function feedFor(team, app, grid) {
  const ref = `${team}/${app}/${grid}`;
  let feed = feeds.get(ref);
  if (!feed || feed.stopped) {
    feed = new Feed(team, app, grid);
    feeds.set(ref, feed);
  }
  return feed;
}

// ---------------------------------------------------------------------------------------------
// Cells.

/** A grid value as Excel takes it: null as an empty text, numbers Excel cannot hold as #NUM!. */
function toExcelValue(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'number' && !Number.isFinite(value)) {
    return toExcelError(new Problem('invalidNumber', `AeroGrid: the value is ${value}`));
  }
  if (typeof value === 'string' && value.length > MAX_TEXT) return value.slice(0, MAX_TEXT);
  return value;
}

/** A text argument: strings as they are, whole numbers and booleans as written. */
function textArgument(value) {
  if (Array.isArray(value)) value = value.length === 1 && Array.isArray(value[0]) ? value[0][0] : value[0];
  if (value === null || value === undefined) return '';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  return String(value).trim();
}

/** `team/app` or `app` → {team?, app}; throws a Problem for anything else. */
function parseApp(text) {
  const parts = text.split('/');
  if (parts.length === 1 && parts[0]) return { team: null, app: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { team: parts[0], app: parts[1] };
  throw new Problem(
    'invalidValue',
    `AeroGrid: the app is written "team/app" or "app" (not "${text}")`,
  );
}

/** GRID's optional columns: a range, an array, or a comma-separated text. */
function parseColumns(value) {
  if (value === null || value === undefined) return [];
  const flat = Array.isArray(value) ? value.flat(2) : [value];
  const columns = [];
  for (const item of flat) {
    if (item === null || item === undefined || item === '') continue;
    for (const part of textArgument(item).split(',')) {
      const name = part.trim();
      if (name) columns.push(name);
    }
  }
  return columns;
}

/** Whether `value` looks like Excel's invocation object (the last argument of a function). */
function isInvocation(value) {
  return Boolean(value) && typeof value === 'object' && typeof value.setResult === 'function';
}

class Cell {
  /**
   * @param {{appText: string, grid: string, row?: string, column?: string, columns?: string[]}}
   *   spec `row` and `column` for VALUE; `columns` for GRID.
   */
  constructor(invocation, spec) {
    this.invocation = invocation;
    this.appText = spec.appText;
    this.gridName = spec.grid;
    this.row = spec.row;
    this.column = spec.column;
    this.columns = spec.columns;
    this.feed = null;
    /** A problem of the cell's own (its team could not be found), or null. */
    this.problem = null;
    this.cancelled = false;
    this.dirty = false;
    this.timer = null;
    this.lastSetAt = -Infinity;
    this.lastShown = undefined;
    this.attachTry = 0;
    this.retryTimer = null;
    this.resultsSet = 0;
  }

  start() {
    cells.add(this);
    this.invocation.onCanceled = () => this.cancel();
    this.attach();
  }

  cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    cells.delete(this);
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    if (this.feed) this.feed.remove(this);
    this.feed = null;
  }

  /** Finds the cell's team (when not written) and joins the grid's feed; again when asked. */
  async attach() {
    const attempt = ++this.attachTry;
    clearTimeout(this.retryTimer);
    let team;
    let app;
    try {
      ({ team, app } = parseApp(this.appText));
      if (!team) team = await tokenTeam(await readSettings());
    } catch (error) {
      if (this.cancelled || attempt !== this.attachTry) return;
      this.problem = problemFromError(error, this.appText);
      this.markDirty();
      // The token or server may change (task pane): try again now and then.
      this.retryDelay = Math.min((this.retryDelay || MIN_BACKOFF_MS / 2) * 2, MAX_BACKOFF_MS);
      this.retryTimer = setTimeout(() => this.attach(), this.retryDelay);
      return;
    }
    if (this.cancelled || attempt !== this.attachTry) return;
    this.problem = null;
    this.retryDelay = 0;
    const feed = feedFor(team, app, this.gridName);
    if (feed === this.feed) return;
    if (this.feed) this.feed.remove(this);
    this.feed = feed;
    feed.add(this);
  }

  /** Something this cell shows changed: set the result when the rate allows. */
  markDirty() {
    if (this.cancelled) return;
    this.dirty = true;
    if (this.timer) return;
    const interval = 1000 / (this.feed ? this.feed.rate : DEFAULT_RATE);
    // Never sooner than the next turn of the event loop: the other messages of the same network
    // chunk are applied first.
    const wait = Math.max(0, this.lastSetAt + interval - now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
  }

  flush() {
    if (this.cancelled || !this.dirty) return;
    const interval = 1000 / (this.feed ? this.feed.rate : DEFAULT_RATE);
    if (now() - this.lastSetAt < interval) {
      this.markDirty();
      return;
    }
    this.dirty = false;
    const shown = this.compute();
    if (shown === undefined) return;
    if (!(shown.matrix) && sameShown(shown, this.lastShown)) return;
    this.lastShown = shown;
    this.resultsSet++;
    this.invocation.setResult(shown.error ? toExcelError(shown.error) : shown.value);
    // Timed from the end of the call, so that the next call starts at least an interval later.
    this.lastSetAt = now();
  }

  /**
   * What the cell shows now: `{value}`, `{error: Problem}`, or undefined (nothing yet: Excel
   * keeps showing #BUSY!).
   */
  compute() {
    if (this.problem) return { error: this.problem };
    const feed = this.feed;
    if (!feed) return undefined;
    if (feed.problem) return { error: feed.problem };
    const model = feed.model;
    if (!model.ready) return undefined;
    return this.row === undefined ? this.computeGrid(feed, model) : this.computeValue(feed, model);
  }

  computeValue(feed, model) {
    const index = model.columns.indexOf(this.column);
    if (index < 0) {
      return {
        error: new Problem(
          'notAvailable',
          `AeroGrid: ${feed.ref} has no column "${this.column}" (its columns: ${model.columns.join(', ') || 'none'})`,
        ),
      };
    }
    const values = model.rows.get(this.row);
    if (!values) {
      return {
        error: new Problem('notAvailable', `AeroGrid: ${feed.ref} has no row "${this.row}" (yet)`),
      };
    }
    const value = values[index];
    if (typeof value === 'number' && !Number.isFinite(value)) {
      return { error: new Problem('invalidNumber', `AeroGrid: the value is ${value}`) };
    }
    return { value: toExcelValue(value) };
  }

  computeGrid(feed, model) {
    let columns = model.columns;
    let indexes = columns.map((_, i) => i);
    if (this.columns.length > 0) {
      const missing = this.columns.filter((name) => !model.columns.includes(name));
      if (missing.length > 0) {
        return {
          error: new Problem(
            'notAvailable',
            `AeroGrid: ${feed.ref} has no column ${missing.map((name) => `"${name}"`).join(', ')} (its columns: ${model.columns.join(', ') || 'none'})`,
          ),
        };
      }
      columns = this.columns;
      indexes = columns.map((name) => model.columns.indexOf(name));
    }
    const matrix = [['key', ...columns]];
    for (const key of model.sortedKeys()) {
      const values = model.rows.get(key);
      const line = [key];
      for (const index of indexes) line.push(toExcelValue(values[index]));
      matrix.push(line);
    }
    return { value: matrix, matrix: true };
  }
}

function sameShown(a, b) {
  if (!b) return false;
  if (a.error || b.error) {
    return Boolean(a.error && b.error) && a.error.kind === b.error.kind && a.error.message === b.error.message;
  }
  return a.value === b.value;
}

// ---------------------------------------------------------------------------------------------
// The functions.

function startCell(invocation, build) {
  let spec;
  try {
    spec = build();
  } catch (error) {
    const problem =
      error instanceof Problem ? error : new Problem('invalidValue', `AeroGrid: ${error.message}`);
    invocation.setResult(toExcelError(problem));
    return;
  }
  new Cell(invocation, spec).start();
}

function required(value, what) {
  const text = textArgument(value);
  if (!text) throw new Problem('invalidValue', `AeroGrid: name the ${what}`);
  return text;
}

/** The app argument, checked: `team/app` or `app`. */
function appArgument(value) {
  const text = required(value, 'app ("team/app")');
  parseApp(text);
  return text;
}

/**
 * `=AEROGRID.VALUE(app, grid, row, column)`: one cell of a grid, live.
 * @param {string} app `team/app`, or `app` for an app of the token's team.
 * @param {string} grid The grid's name.
 * @param {any} row The row's key.
 * @param {any} column The column's name.
 * @param {CustomFunctions.StreamingInvocation<any>} invocation
 */
function value(app, grid, row, column, invocation) {
  startCell(invocation, () => ({
    appText: appArgument(app),
    grid: required(grid, 'grid'),
    row: required(row, 'row key'),
    column: required(column, 'column'),
  }));
}

/**
 * `=AEROGRID.GRID(app, grid, [columns])`: a whole grid, live, as a dynamic array: a header row
 * ("key" and the column names), then one row per grid row, sorted by key.
 * @param {string} app `team/app`, or `app` for an app of the token's team.
 * @param {string} grid The grid's name.
 * @param {any} [columns] Only these columns, in this order (a range, an array or "a,b").
 * @param {CustomFunctions.StreamingInvocation<any[][]>} invocation
 */
function gridFunction(app, grid, columns, invocation) {
  if (invocation === undefined && isInvocation(columns)) {
    invocation = columns;
    columns = null;
  }
  startCell(invocation, () => ({
    appText: appArgument(app),
    grid: required(grid, 'grid'),
    columns: parseColumns(columns),
  }));
}

/**
 * The task pane saved new settings: look teams up again, move cells whose app has no team to the
 * new token's team, and reconnect every feed now.
 */
function settingsChanged() {
  teamLookups.clear();
  for (const cell of cells) {
    if (cell.problem || !cell.appText.includes('/')) cell.attach();
  }
  for (const feed of feeds.values()) feed.reconnect();
}

/** Counts, for tests and the task pane's status line. */
function stats() {
  let subscriptions = 0;
  for (const feed of feeds.values()) subscriptions += feed.subscriptions;
  return { feeds: feeds.size, cells: cells.size, subscriptions };
}

if (typeof globalThis.CustomFunctions !== 'undefined' && globalThis.CustomFunctions.associate) {
  globalThis.CustomFunctions.associate('VALUE', value);
  globalThis.CustomFunctions.associate('GRID', gridFunction);
}

globalThis.AeroGrid = Object.freeze({
  storageKeys: Object.freeze({ url: URL_KEY, token: TOKEN_KEY, rate: RATE_KEY }),
  getItem,
  setItem,
  defaultUrl,
  readSettings,
  listGrids,
  subscribe,
  GridModel,
  GrpcError,
  Code,
  settingsChanged,
  stats,
  functions: Object.freeze({ VALUE: value, GRID: gridFunction }),
});
