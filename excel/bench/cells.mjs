#!/usr/bin/env node
// 200 AEROGRID.VALUE cells on one grid while orders arrive: produce-to-cell latency and the
// add-in runtime's memory (printed; not a timed test).
//
// The seed app runs on a fresh `aerogrid dev`; dist/functions.js runs as Excel runs it (a classic
// script in a fresh global scope, see testing/support.mjs) with Node's fetch, and this process
// stands in for Excel's shared runtime: its heap and RSS are reported before and after the cells.
// Orders go through one long-running `aerogrid produce` at a steady rate, 17 products in turn, as
// in cli/benches/gateway_fanout.rs: every order's send time is kept under the total it makes for
// its product, so a cell whose result becomes that total tells how long the order took to reach
// it: producer -> broker -> runtime -> changelog -> gateway -> gRPC-web -> setResult. With
// conflation (the server and each cell at `aerogrid.rate` updates/s), a result shows the newest
// total, and its latency is that of the newest order it includes.
//
// `node excel/bench/cells.mjs` from the repository root, after building the aerogrid binary.
// Settings (environment): CELLS (200), RATE orders/s (50), SECONDS timed (20), CELL_RATE
// (aerogrid.rate: 2), BROKER_STORAGE (memory or sqlite: memory).

import { performance } from 'node:perf_hooks';

import {
  build,
  createRunningApp,
  invocation,
  loadFunctions,
  producer,
  readToken,
  serverUnavailable,
  startServer,
  waitFor,
} from '../testing/support.mjs';

const setting = (name, fallback) => {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
};
const CELLS = setting('CELLS', 200);
const RATE = setting('RATE', 50);
const SECONDS = setting('SECONDS', 20);
const CELL_RATE = setting('CELL_RATE', 2);
const WARMUP_SECONDS = 2;
const PRODUCTS = 17;
const BROKER_STORAGE = process.env.BROKER_STORAGE || 'memory';

const mib = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
const ms = (value) => `${value.toFixed(0)} ms`;

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function memory() {
  globalThis.gc?.();
  const { heapUsed, rss } = process.memoryUsage();
  return { heapUsed, rss };
}

async function main() {
  const unavailable = await serverUnavailable();
  if (unavailable) throw new Error(unavailable);
  await build();
  console.log(
    `${CELLS} VALUE cells on acme/orders/product_sum; ${RATE} orders/s for ${SECONDS} s (after ${WARMUP_SECONDS} s warm-up); aerogrid.rate ${CELL_RATE}; broker storage ${BROKER_STORAGE}`,
  );
  const server = await startServer('bench-cells', { args: ['--broker-storage', BROKER_STORAGE] });
  const feed = producer(server);
  try {
    await createRunningApp(server, 'acme', 'orders');
    const token = await readToken(server, 'acme');

    // When each total was reached, by product.
    const sentByTotal = new Map(); // `${product}\t${total}` -> time
    const totals = new Map();
    let next = 0;
    let timed = false;
    const send = () => {
      const n = next++;
      const product = `p${n % PRODUCTS}`;
      const quantity = (n % 5) + 1;
      const total = (totals.get(product) || 0) + quantity;
      totals.set(product, total);
      if (timed) sentByTotal.set(`${product}\t${total}`, performance.now());
      feed.send(`order-${n}`, { product, quantity });
    };
    // Every product once, so that the grid has its rows before the cells start.
    for (let i = 0; i < PRODUCTS; i++) send();

    const before = memory();
    const rt = await loadFunctions({
      settings: { 'aerogrid.url': server.url, 'aerogrid.token': token, 'aerogrid.rate': String(CELL_RATE) },
    });
    const cells = [];
    for (let i = 0; i < CELLS; i++) {
      const cell = invocation();
      cell.product = `p${i % PRODUCTS}`;
      rt.functions.VALUE('acme/orders', 'product_sum', cell.product, 'units_sold', cell);
      cells.push(cell);
    }
    await waitFor(() => cells.every((c) => typeof c.last === 'number'), {
      timeout: 60_000,
      what: 'every cell to show a number',
    });
    const loaded = memory();

    // Orders at a steady rate: warm-up untimed, then timed.
    const produceFor = async (seconds) => {
      const start = performance.now();
      const count = Math.round(RATE * seconds);
      for (let i = 0; i < count; i++) {
        const due = start + (i * 1000) / RATE;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        send();
      }
    };
    await produceFor(WARMUP_SECONDS);
    const resultsBefore = cells.reduce((sum, c) => sum + c.results.length, 0);
    const timedFrom = performance.now();
    const cpuBefore = process.cpuUsage();
    timed = true;
    await produceFor(SECONDS);
    timed = false;
    const producedUntil = performance.now();
    // Until every cell shows its product's final total (or 10 s).
    await waitFor(() => cells.every((c) => c.last === totals.get(c.product)), {
      timeout: 10_000,
      what: 'every cell to show its final total',
    }).catch((error) => console.log(`warning: ${error.message}`));
    const cpu = process.cpuUsage(cpuBefore);
    const wall = performance.now() - timedFrom;
    const after = memory();

    const latencies = [];
    for (const cell of cells) {
      for (const { at, value } of cell.results) {
        if (at < timedFrom) continue;
        const sent = sentByTotal.get(`${cell.product}\t${value}`);
        if (sent !== undefined) latencies.push(at - sent);
      }
    }
    latencies.sort((a, b) => a - b);
    const results = cells.reduce((sum, c) => sum + c.results.length, 0) - resultsBefore;
    const subscribes = rt.requests.filter((r) => r.url.endsWith('/Subscribe')).length;
    const fastest = Math.min(
      ...cells.map((c) => {
        const times = c.results.map((r) => r.at);
        let min = Infinity;
        for (let i = 1; i < times.length; i++) min = Math.min(min, times[i] - times[i - 1]);
        return min;
      }),
    );

    console.log(
      `produce to setResult: p50 ${ms(percentile(latencies, 50))}, p99 ${ms(percentile(latencies, 99))}, max ${ms(latencies.at(-1) ?? NaN)} (${latencies.length} timed results)`,
    );
    console.log(
      `setResult calls: ${results} in ${(wall / 1000).toFixed(1)} s = ${(results / (wall / 1000) / CELLS).toFixed(2)}/s per cell (limit ${CELL_RATE}); closest two results of one cell ${ms(fastest)} apart`,
    );
    console.log(`Subscribe requests: ${subscribes} for ${CELLS} cells; orders produced: ${next} (${((next - PRODUCTS) / ((producedUntil - timedFrom) / 1000 + WARMUP_SECONDS)).toFixed(0)}/s)`);
    console.log(
      `runtime CPU while timed: ${(((cpu.user + cpu.system) / 1000 / wall) * 100).toFixed(1)}% of one core`,
    );
    console.log(
      `memory (this Node process, standing in for the add-in runtime): heapUsed ${mib(before.heapUsed)} before the cells, ${mib(loaded.heapUsed)} with ${CELLS} cells subscribed, ${mib(after.heapUsed)} at the end (which includes this benchmark's own record of every result); rss ${mib(before.rss)} / ${mib(loaded.rss)} / ${mib(after.rss)}`,
    );
    for (const cell of cells) cell.cancel();
  } finally {
    await feed.close().catch(() => {});
    await server.stop();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
