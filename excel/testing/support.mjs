// Shared by the add-in's tests and its benchmark: building, a real `aerogrid dev`, the seed app,
// orders, and Excel's custom-functions runtime imitated closely enough to load dist/functions.js
// the way Excel does (a classic script in a fresh global scope). Not a test file itself (node's
// runner takes every file under a `test/` folder for one), hence this folder.

import { spawn } from 'node:child_process';
import { access, constants, readFile } from 'node:fs/promises';
import path from 'node:path';
import vm from 'node:vm';

import { startDevstack } from '../../e2e/lib/devstack.mjs';
import { build, distDir, excelDir } from '../build.mjs';

export const repoRoot = path.resolve(excelDir, '..');
export { build, distDir, excelDir };

/** The aerogrid binary: $AEROGRID_BIN, or the debug build. */
export const aerogridBin = path.resolve(
  repoRoot,
  process.env.AEROGRID_BIN || path.join('target', 'debug', 'aerogrid'),
);

/**
 * Why a test that needs the server cannot run, or null. Without AEROGRID_BIN set, a missing debug
 * build skips those tests (a checkout that has not built the Rust side yet); with it set, a
 * missing binary is a failure.
 */
export async function serverUnavailable() {
  try {
    await access(aerogridBin, constants.X_OK);
    return null;
  } catch {
    if (process.env.AEROGRID_BIN) {
      throw new Error(`AEROGRID_BIN=${process.env.AEROGRID_BIN}: no executable at ${aerogridBin}`);
    }
    return `no aerogrid binary at ${aerogridBin} (build it, or set AEROGRID_BIN)`;
  }
}

export const SEED = path.join(repoRoot, 'connector', 'python', 'tests', 'seed.py');

/**
 * A real `aerogrid dev` (e2e/lib/devstack.mjs starts and stops it; its log goes to
 * target/e2e-artifacts/excel-<name>.log), with its admin token, its broker and REST helpers.
 */
export async function startServer(name, { args = [] } = {}) {
  const stack = await startDevstack({ name: `excel-${name}`, args, bin: aerogridBin });
  const file = async (what) => (await readFile(path.join(stack.dataDir, what), 'utf8')).trim();
  const server = {
    url: stack.baseUrl,
    dataDir: stack.dataDir,
    logFile: stack.logFile,
    stop: stack.stop,
    pid: stack.pid,
    adminToken: await file('admin-token'),
    broker: await file('broker'),
  };
  server.api = (method, route, body, token = server.adminToken) =>
    api(server.url, method, route, body, token);
  return server;
}

/** One REST call; the parsed JSON answer (throws on an error status). */
export async function api(url, method, route, body, token) {
  const response = await fetch(`${url}/api/v1${route}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Waits until `check()` returns something truthy (polling), and returns it. */
export async function waitFor(check, { timeout = 30_000, interval = 100, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/**
 * Creates `team` (if new) and the seed app `app` in it, starts it, and waits until it runs and
 * its grid `product_sum` is listed live.
 */
export async function createRunningApp(server, team, app) {
  const teams = await server.api('GET', '/teams');
  if (!teams.some((t) => t.name === team)) await server.api('POST', '/teams', { name: team });
  // The seed app reads `orders`, which is not in the team's own namespace: an admin grants it.
  await server.api('PUT', `/teams/${team}/topics/orders`);
  const code = await readFile(SEED, 'utf8');
  await server.api('POST', `/teams/${team}/apps`, { name: app, code });
  await startApp(server, team, app);
}

export async function startApp(server, team, app) {
  await server.api('POST', `/teams/${team}/apps/${app}/start`);
  await waitFor(
    async () => (await server.api('GET', `/teams/${team}/apps/${app}/status`)).state === 'running',
    { timeout: 60_000, what: `${team}/${app} running` },
  );
}

/** A read-scope API token of `team`. */
export async function readToken(server, team, name = 'excel test') {
  const minted = await server.api('POST', `/teams/${team}/tokens`, { name, scope: 'read' });
  return minted.token;
}

/** Sends orders (`[key, {product, quantity}]`) to the `orders` topic with `aerogrid produce`. */
export async function produce(server, orders) {
  const child = spawn(aerogridBin, ['produce', 'orders', '--brokers', server.broker], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (data) => (stderr += data));
  for (const [key, order] of orders) child.stdin.write(`${key}\t${JSON.stringify(order)}\n`);
  child.stdin.end();
  const code = await new Promise((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`aerogrid produce exited ${code}: ${stderr}`);
}

/**
 * A long-running `aerogrid produce orders`: `send(key, order)` writes one line; `close()` ends it.
 */
export function producer(server) {
  const child = spawn(aerogridBin, ['produce', 'orders', '--brokers', server.broker], {
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (data) => (stderr += data));
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return {
    send(key, order) {
      child.stdin.write(`${key}\t${JSON.stringify(order)}\n`);
    },
    async close() {
      child.stdin.end();
      const code = await exited;
      if (code !== 0) throw new Error(`aerogrid produce exited ${code}: ${stderr}`);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Excel's custom-functions runtime, imitated.

/** CustomFunctions.ErrorCode's values. */
export const ErrorCode = Object.freeze({
  invalidValue: '#VALUE!',
  notAvailable: '#N/A',
  divisionByZero: '#DIV/0!',
  invalidNumber: '#NUM!',
  nullReference: '#NULL!',
  invalidName: '#NAME?',
  invalidReference: '#REF!',
});

/** CustomFunctions.Error. */
export class CustomFunctionError {
  constructor(code, message) {
    this.code = code;
    if (message !== undefined) this.message = message;
  }
}

/**
 * Loads dist/functions.js into a fresh global scope with the globals Excel's shared runtime
 * gives it. `fetch` defaults to Node's; every call is recorded in `requests` with its URL and
 * init (its `signal` included).
 *
 * @returns {{functions: {VALUE: Function, GRID: Function}, storage: Map<string, string>,
 *   requests: {url: string, init: object}[], AeroGrid: object, context: object}}
 */
export async function loadFunctions({ settings = {}, fetch: fetchFn = fetch, globals = {} } = {}) {
  const script = await readFile(path.join(distDir, 'functions.js'), 'utf8');
  const storage = new Map(Object.entries(settings));
  const requests = [];
  const associated = {};
  const context = vm.createContext({
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    queueMicrotask,
    performance,
    AbortController,
    AbortSignal,
    TextEncoder,
    TextDecoder,
    URL,
    fetch: (url, init) => {
      requests.push({ url: String(url), init: init || {} });
      return fetchFn(url, init);
    },
    CustomFunctions: {
      associate(id, fn) {
        associated[id] = fn;
      },
      Error: CustomFunctionError,
      ErrorCode,
    },
    OfficeRuntime: {
      storage: {
        async getItem(key) {
          return storage.has(key) ? storage.get(key) : null;
        },
        async setItem(key, value) {
          storage.set(key, String(value));
        },
        async removeItem(key) {
          storage.delete(key);
        },
      },
    },
    ...globals,
  });
  vm.runInContext(script, context, { filename: 'functions.js' });
  return { functions: associated, storage, requests, AeroGrid: context.AeroGrid, context };
}

/**
 * Excel's StreamingInvocation for one cell: records every result with its time; `cancel()` is
 * what Excel does when the cell's formula goes away.
 */
export function invocation() {
  const cell = {
    results: [],
    onCanceled: undefined,
    setResult(value) {
      cell.results.push({ at: performance.now(), value });
      for (const waiter of cell.waiters.splice(0)) waiter();
    },
    waiters: [],
    get last() {
      return cell.results.length ? cell.results[cell.results.length - 1].value : undefined;
    },
    cancel() {
      if (cell.onCanceled) cell.onCanceled();
    },
    /** Waits until the latest result passes `check`, and returns it. */
    async until(check, { timeout = 30_000, what = 'a result' } = {}) {
      const deadline = Date.now() + timeout;
      for (;;) {
        if (cell.results.length && check(cell.last)) return cell.last;
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(
            `timed out after ${timeout} ms waiting for ${what}; last result: ${describe(cell.last)}`,
          );
        }
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 1000));
          cell.waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
  };
  return cell;
}

export function isError(value, code) {
  return value instanceof CustomFunctionError && (code === undefined || value.code === code);
}

export function describe(value) {
  if (value instanceof CustomFunctionError) return `${value.code} ${value.message ?? ''}`.trim();
  return JSON.stringify(value);
}
