// AEROGRID.VALUE and AEROGRID.GRID as Excel runs them: dist/functions.js evaluated as a classic
// script in a fresh global scope with Excel's globals imitated (CustomFunctions, OfficeRuntime
// storage) and Node's real fetch, against a real `aerogrid dev` running the seed app.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { subscribe } from '../src/grpcweb.js';
import {
  ErrorCode,
  build,
  createRunningApp,
  describe as show,
  invocation,
  isError,
  loadFunctions,
  produce,
  readToken,
  serverUnavailable,
  startApp,
  startServer,
  waitFor,
} from '../testing/support.mjs';

await build();
const skip = await serverUnavailable();

/** Values from the functions' own global scope, as plain data (arrays of another realm). */
const plain = (value) => JSON.parse(JSON.stringify(value));
const subscribeRequests = (requests) => requests.filter((r) => r.url.endsWith('/aerogrid.v1.GridService/Subscribe'));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

describe('custom functions against aerogrid dev', { skip: skip || false }, () => {
  let server;
  let token; // a read token of team acme
  const loaded = []; // every loaded runtime, to cancel its cells at the end

  /** dist/functions.js in a fresh runtime, with the server's URL and `token` stored. */
  async function runtime(settings = {}) {
    const rt = await loadFunctions({
      settings: { 'aerogrid.url': server.url, 'aerogrid.token': token, ...settings },
    });
    rt.cells = [];
    rt.cell = (name, ...args) => {
      const cell = invocation();
      rt.cells.push(cell);
      rt.functions[name](...args, cell);
      return cell;
    };
    loaded.push(rt);
    return rt;
  }

  /** Waits until the grid has `key` at `units_sold` = `total` (seen by a subscriber of its own). */
  async function gridHas(key, total) {
    await waitFor(
      async () => {
        const controller = new AbortController();
        try {
          for await (const message of subscribe({
            url: server.url,
            token: server.adminToken,
            grid: { team: 'acme', app: 'orders', grid: 'product_sum' },
            rowKeys: [key],
            signal: controller.signal,
          })) {
            if (message.snapshot) return message.snapshot.rows[0]?.values[0] === total;
          }
        } finally {
          controller.abort();
        }
        return false;
      },
      { timeout: 60_000, interval: 250, what: `${key} = ${total} in acme/orders/product_sum` },
    );
  }

  before(async () => {
    server = await startServer('functions');
    await createRunningApp(server, 'acme', 'orders');
    token = await readToken(server, 'acme');
    // A second team, so that the admin token sees several.
    await server.api('POST', '/teams', { name: 'beta' });
    await produce(server, [['order-1', { product: 'apple', quantity: 3 }]]);
    await gridHas('apple', 3);
  });

  after(async () => {
    for (const rt of loaded) for (const cell of rt.cells) cell.cancel();
    if (server) await server.stop();
  });

  test('VALUE ticks as orders arrive', async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    assert.equal(await cell.until((v) => v === 3, { what: 'apple = 3' }), 3);
    await produce(server, [['order-2', { product: 'apple', quantity: 2 }]]);
    assert.equal(await cell.until((v) => v === 5, { what: 'apple = 5' }), 5);
    assert.deepEqual(
      cell.results.map((r) => r.value),
      [3, 5],
      'one result per change: no errors, no repeats',
    );
  });

  test('GRID gives a header row, then rows sorted by key', async () => {
    const rt = await runtime();
    const whole = rt.cell('GRID', 'acme/orders', 'product_sum', null);
    const some = rt.cell('GRID', 'acme/orders', 'product_sum', [['units_sold']]);
    const text = rt.cell('GRID', 'acme/orders', 'product_sum', 'units_sold');
    await produce(server, [
      ['order-3', { product: 'cherry', quantity: 7 }],
      ['order-4', { product: 'banana', quantity: 1 }],
    ]);
    const expected = [
      ['key', 'units_sold'],
      ['apple', 5],
      ['banana', 1],
      ['cherry', 7],
    ];
    const same = (v) => JSON.stringify(v) === JSON.stringify(expected);
    assert.deepEqual(plain(await whole.until(same, { what: 'the whole grid' })), expected);
    assert.deepEqual(plain(await some.until(same, { what: 'the grid with columns {"units_sold"}' })), expected);
    assert.deepEqual(plain(await text.until(same, { what: 'the grid with columns "units_sold"' })), expected);
    // The invocation object always comes last; an omitted optional argument may be absent.
    const cell = invocation();
    rt.cells.push(cell);
    rt.functions.GRID('acme/orders', 'product_sum', cell);
    assert.deepEqual(plain(await cell.until(same, { what: 'the grid, columns omitted' })), expected);
  });

  test('GRID with an unknown column is #N/A with a message', async () => {
    const rt = await runtime();
    const cell = rt.cell('GRID', 'acme/orders', 'product_sum', [['units_sold', 'price']]);
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /no column "price".*units_sold/);
  });

  test('cells on one grid share ONE subscription, ended when the last is cancelled', async () => {
    const rt = await runtime();
    const cells = [
      rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold'),
      rt.cell('VALUE', 'acme/orders', 'product_sum', 'banana', 'units_sold'),
      rt.cell('VALUE', 'acme/orders', 'product_sum', 'cherry', 'units_sold'),
      rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold'),
      rt.cell('GRID', 'acme/orders', 'product_sum', null),
    ];
    await Promise.all(cells.slice(0, 4).map((c) => c.until((v) => typeof v === 'number', { what: 'a number' })));
    await cells[4].until(Array.isArray, { what: 'the grid' });
    // A cell that arrives later joins the same subscription too.
    const late = rt.cell('VALUE', 'acme/orders', 'product_sum', 'cherry', 'units_sold');
    assert.equal(await late.until((v) => v === 7, { what: 'cherry = 7' }), 7);
    const subs = subscribeRequests(rt.requests);
    assert.equal(subs.length, 1, 'one Subscribe request for every cell of the grid');
    assert.equal(rt.AeroGrid.stats().feeds, 1);

    // Cancelling some keeps the stream; cancelling the last ends it.
    for (const c of [...cells, late].slice(0, 5)) c.cancel();
    await sleep(1500);
    assert.equal(subs[0].init.signal.aborted, false, 'a cell remains: still subscribed');
    late.cancel();
    await waitFor(() => subs[0].init.signal.aborted, { timeout: 5000, what: 'the fetch aborted' });
    assert.deepEqual(plain(rt.AeroGrid.stats()), { feeds: 0, cells: 0, subscriptions: 0 });
    assert.equal(subscribeRequests(rt.requests).length, 1, 'no reconnection after the end');
  });

  test('cells of other grids get their own subscription', async () => {
    const rt = await runtime();
    const a = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    const b = rt.cell('VALUE', 'acme/orders', 'no_such_grid', 'apple', 'units_sold');
    await a.until((v) => v === 5, { what: 'apple = 5' });
    const error = await b.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /^AeroGrid: .*no grid `no_such_grid`/);
    const grids = new Set(subscribeRequests(rt.requests).map((r) => r.init.body.length));
    assert.equal(grids.size, 2, 'one subscription per grid');
    assert.equal(rt.AeroGrid.stats().feeds, 2);
  });

  test('a bad token is #VALUE! saying so', async () => {
    const rt = await runtime({ 'aerogrid.token': 'agt_not-a-real-token' });
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.invalidValue);
    assert.match(error.message, /the token is unknown or revoked/);
    // The task pane stores a good token and says so: the cell recovers at once.
    rt.storage.set('aerogrid.token', token);
    rt.AeroGrid.settingsChanged();
    assert.equal(await cell.until((v) => v === 5, { timeout: 5000, what: 'apple = 5' }), 5);
  });

  test('no token is #VALUE! pointing at the task pane', async () => {
    const rt = await runtime();
    rt.storage.delete('aerogrid.token');
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.invalidValue);
    assert.match(error.message, /no token.*task pane/);
  });

  test("another team's grid is #N/A, told apart from no grid at all by nothing", async () => {
    const betaToken = await readToken(server, 'beta');
    const rt = await runtime({ 'aerogrid.token': betaToken });
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /there is no such grid, or you may not read it/);
    const missing = rt.cell('VALUE', 'acme/nothing', 'product_sum', 'apple', 'units_sold');
    const same = await missing.until((v) => isError(v), { what: 'an error' });
    assert.equal(same.message, error.message);
  });

  test('an unknown row is #N/A with a message, until the row appears', async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'durian', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /no row "durian"/);
    await produce(server, [['order-5', { product: 'durian', quantity: 4 }]]);
    assert.equal(await cell.until((v) => v === 4, { what: 'durian = 4' }), 4);
  });

  test('an unknown column is #N/A with a message', async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'price');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /no column "price"/);
  });

  test('an unknown app is #N/A with a message (the same as for a grid one may not read)', async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/nope', 'product_sum', 'apple', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /there is no such grid, or you may not read it/);
  });

  test('bad arguments are #VALUE! at once', async () => {
    const rt = await runtime();
    const cases = [
      [['', 'product_sum', 'apple', 'units_sold'], /name the app/],
      [['a/b/c', 'product_sum', 'apple', 'units_sold'], /"team\/app" or "app"/],
      [['acme/orders', '', 'apple', 'units_sold'], /name the grid/],
      [['acme/orders', 'product_sum', null, 'units_sold'], /name the row/],
      [['acme/orders', 'product_sum', 'apple', ''], /name the column/],
    ];
    for (const [args, message] of cases) {
      const cell = rt.cell('VALUE', ...args);
      assert.equal(cell.results.length, 1, `${JSON.stringify(args)}: answered at once`);
      assert.ok(isError(cell.last, ErrorCode.invalidValue), show(cell.last));
      assert.match(cell.last.message, message);
    }
    assert.equal(subscribeRequests(rt.requests).length, 0);
  });

  test('numbers as row keys are taken as text', async () => {
    await produce(server, [['order-6', { product: '42', quantity: 2 }]]);
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 42, 'units_sold');
    assert.equal(await cell.until((v) => v === 2, { what: '"42" = 2' }), 2);
  });

  test("an app without its team means the token's team", async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'orders', 'product_sum', 'apple', 'units_sold');
    const grid = rt.cell('GRID', 'orders', 'product_sum', null);
    const same = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    assert.equal(await cell.until((v) => v === 5, { what: 'apple = 5' }), 5);
    await grid.until(Array.isArray, { what: 'the grid' });
    await same.until((v) => v === 5, { what: 'apple = 5' });
    const teamLookups = rt.requests.filter((r) => r.url.endsWith('/api/v1/teams'));
    assert.equal(teamLookups.length, 1, 'the team is looked up once');
    assert.equal(subscribeRequests(rt.requests).length, 1, '"orders" and "acme/orders" share a subscription');
  });

  test('an app without its team, with a token of several teams, says to write team/app', async () => {
    const rt = await runtime({ 'aerogrid.token': server.adminToken });
    const cell = rt.cell('VALUE', 'orders', 'product_sum', 'apple', 'units_sold');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.invalidValue);
    assert.match(error.message, /several teams \(acme, beta\).*"team\/app"/);
  });

  test('setResult is called at most aerogrid.rate times a second per cell', async () => {
    const rt = await runtime({ 'aerogrid.rate': '4' });
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'elderberry', 'units_sold');
    const grid = rt.cell('GRID', 'acme/orders', 'product_sum', null);
    await cell.until((v) => isError(v), { what: 'no row yet' });
    // 60 orders over about 3 s, in 20 batches.
    for (let batch = 0; batch < 20; batch++) {
      const orders = [0, 1, 2].map((i) => [`fast-${batch}-${i}`, { product: 'elderberry', quantity: 1 }]);
      await Promise.all([produce(server, orders), sleep(150)]);
    }
    assert.equal(await cell.until((v) => v === 60, { what: 'elderberry = 60' }), 60);
    for (const c of [cell, grid]) {
      const times = c.results.map((r) => r.at);
      for (let i = 1; i < times.length; i++) {
        assert.ok(times[i] - times[i - 1] >= 250 - 1, `results ${i - 1} and ${i} ${times[i] - times[i - 1]} ms apart`);
      }
    }
    const rate = Buffer.from(subscribeRequests(rt.requests)[0].init.body).at(-1);
    assert.equal(rate, 4, 'the server is asked for 4 updates/s');
  });

  test('a stopped app is #N/A "not live", and the cells come back when it runs again', async () => {
    const rt = await runtime();
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    await cell.until((v) => v === 5, { what: 'apple = 5' });
    await server.api('POST', '/teams/acme/apps/orders/stop');
    const error = await cell.until((v) => isError(v), { what: 'an error' });
    assert.equal(error.code, ErrorCode.notAvailable);
    assert.match(error.message, /not live.*reconnecting/);
    await startApp(server, 'acme', 'orders');
    assert.equal(await cell.until((v) => v === 5, { timeout: 60_000, what: 'apple = 5 again' }), 5);
    assert.ok(subscribeRequests(rt.requests).length >= 2, 'it subscribed again by itself');
  });

  test('a live cell turns #VALUE! within 5 s of its token being revoked', async () => {
    const minted = await server.api('POST', '/teams/acme/tokens', { name: 'soon revoked', scope: 'read' });
    const rt = await runtime({ 'aerogrid.token': minted.token });
    const cell = rt.cell('VALUE', 'acme/orders', 'product_sum', 'apple', 'units_sold');
    await cell.until((v) => v === 5, { what: 'apple = 5' });
    const revoked = Date.now();
    await server.api('DELETE', `/teams/acme/tokens/${minted.id}`);
    const error = await cell.until((v) => isError(v), { timeout: 5000, what: 'an error within 5 s' });
    assert.equal(error.code, ErrorCode.invalidValue);
    assert.match(error.message, /unknown or revoked/);
    console.log(`Excel cell ended ${Date.now() - revoked} ms after its token was revoked`);
  });
});
