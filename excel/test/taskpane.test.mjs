// The task pane against a real `aerogrid dev`: dist/functions.js and dist/taskpane.js run in one
// global scope (Excel's shared runtime), with the page's elements from taskpane.html imitated
// (testing/fakedom.mjs), Office and Excel.run imitated, and Node's real fetch.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import vm from 'node:vm';

import { fakeDocument } from '../testing/fakedom.mjs';
import {
  build,
  createRunningApp,
  distDir,
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

describe('the task pane against aerogrid dev', { skip: skip || false }, () => {
  let server;
  let token;
  const panes = [];

  /** Opens the pane: functions.js then taskpane.js in one scope, as taskpane.html loads them. */
  async function openPane(settings = {}) {
    const html = await readFile(path.join(distDir, 'taskpane.html'), 'utf8');
    const document = fakeDocument(html);
    const inserted = [];
    const rt = await loadFunctions({
      settings,
      globals: {
        document,
        location: new URL(`${server.url}/excel/taskpane.html`),
        Office: { onReady: (callback) => Promise.resolve().then(callback) },
        Excel: {
          async run(batch) {
            const range = {};
            const context = {
              workbook: { getSelectedRange: () => range },
              sync: async () => inserted.push(range.formulas),
            };
            return batch(context);
          },
        },
      },
    });
    const script = await readFile(path.join(distDir, 'taskpane.js'), 'utf8');
    vm.runInContext(script, rt.context, { filename: 'taskpane.js' });
    const $ = (id) => document.getElementById(id);
    const pane = { ...rt, document, $, inserted, cells: [] };
    pane.connect = (tokenValue) => {
      $('token').value = tokenValue;
      $('connect-form').dispatch('submit');
    };
    /** The grid list as "app / grid: live|not live" lines. */
    pane.list = () =>
      $('grids').children.map((item) => `${item.children[0].textContent}: ${item.children[1].textContent}`);
    panes.push(pane);
    // Started: it has said something (asked for settings, or is connecting with stored ones).
    await waitFor(() => $('status').textContent !== '', { what: 'the pane to start' });
    return pane;
  }

  before(async () => {
    server = await startServer('taskpane');
    await createRunningApp(server, 'acme', 'orders');
    await server.api('POST', '/teams', { name: 'beta' });
    token = await readToken(server, 'acme');
    await produce(server, [['order-1', { product: 'apple', quantity: 3 }]]);
  });

  after(async () => {
    for (const pane of panes) {
      for (const cell of pane.cells) cell.cancel();
      // Stop the 2 s refresh: a new connection attempt with nothing to connect.
      pane.$('url').value = '';
      pane.$('connect-form').dispatch('submit');
    }
    if (server) await server.stop();
  });

  test('connecting stores the settings, picks the team and lists its grids, live', async () => {
    const pane = await openPane();
    const { $ } = pane;
    await waitFor(() => $('status').textContent.includes('Enter the server'), { what: 'the first status' });
    assert.equal($('url').value, server.url, 'the server defaults to the page origin');
    assert.equal($('browse').hidden, true);

    pane.connect(token);
    await waitFor(() => !$('browse').hidden, { what: 'the grid browser', timeout: 10_000 });
    assert.equal(pane.storage.get('aerogrid.url'), server.url);
    assert.equal(pane.storage.get('aerogrid.token'), token);
    assert.equal($('team').value, 'acme');
    assert.equal($('team').disabled, true, 'a team token sees one team');
    assert.match($('status').textContent, /Connected to .*team acme/);
    await waitFor(() => pane.list().includes('orders / product_sum: live'), { what: 'the grid, live', timeout: 10_000 });
  });

  test('Insert puts a GRID or VALUE formula into the selected cell', async () => {
    const pane = await openPane({ 'aerogrid.url': server.url, 'aerogrid.token': token });
    const { $ } = pane;
    // Stored settings connect at once.
    await waitFor(() => pane.list().includes('orders / product_sum: live'), { what: 'the grid', timeout: 10_000 });
    $('grids').children[0].click();
    assert.equal($('details').hidden, false);
    assert.equal($('selected-name').textContent, 'acme/orders / product_sum');
    assert.deepEqual($('column').children.map((o) => o.value), ['units_sold']);
    assert.equal($('formula').textContent, '=AEROGRID.GRID("acme/orders","product_sum")');
    assert.equal($('insert-value').disabled, true, 'no row yet');

    $('insert-grid').click();
    await waitFor(() => pane.inserted.length === 1, { what: 'a formula inserted' });
    assert.deepEqual(JSON.parse(JSON.stringify(pane.inserted[0])), [['=AEROGRID.GRID("acme/orders","product_sum")']]);

    // The row field offers the grid's keys.
    await waitFor(() => $('row-keys').children.some((o) => o.value === 'apple'), { what: 'row suggestions' });
    $('row').value = 'ap"ple';
    $('row').dispatch('input');
    assert.equal($('formula').textContent, '=AEROGRID.VALUE("acme/orders","product_sum","ap""ple","units_sold")');
    $('row').value = 'apple';
    $('row').dispatch('input');
    $('insert-value').click();
    await waitFor(() => pane.inserted.length === 2, { what: 'a second formula inserted' });
    assert.deepEqual(JSON.parse(JSON.stringify(pane.inserted[1])), [
      ['=AEROGRID.VALUE("acme/orders","product_sum","apple","units_sold")'],
    ]);
  });

  test('the list follows apps as they stop and start (refreshed every 2 s)', async () => {
    const pane = await openPane({ 'aerogrid.url': server.url, 'aerogrid.token': token });
    await waitFor(() => pane.list().includes('orders / product_sum: live'), { what: 'live', timeout: 10_000 });
    await server.api('POST', '/teams/acme/apps/orders/stop');
    const stoppedAt = Date.now();
    await waitFor(() => pane.list().includes('orders / product_sum: not live'), { what: 'not live', timeout: 10_000 });
    assert.ok(Date.now() - stoppedAt < 5000, `noticed after ${Date.now() - stoppedAt} ms`);
    await startApp(server, 'acme', 'orders');
    await waitFor(() => pane.list().includes('orders / product_sum: live'), { what: 'live again', timeout: 10_000 });
  });

  test('a bad token says so, and cells waiting for a token recover once one is entered', async () => {
    const pane = await openPane();
    const { $ } = pane;
    const cell = invocation();
    pane.cells.push(cell);
    pane.functions.VALUE('orders', 'product_sum', 'apple', 'units_sold', cell);
    const error = await cell.until((v) => isError(v), { what: 'an error without a token' });
    assert.match(error.message, /no token/);

    pane.connect('agt_wrong');
    await waitFor(() => $('status').classList.contains('error'), { what: 'an error status', timeout: 10_000 });
    assert.equal($('status').textContent, 'The token is unknown or revoked.');
    assert.equal($('browse').hidden, true);

    pane.connect(token);
    await waitFor(() => !$('browse').hidden, { what: 'connected', timeout: 10_000 });
    assert.equal(await cell.until((v) => v === 3, { timeout: 10_000, what: 'apple = 3' }), 3);
  });

  test('a token of several teams offers a choice of team', async () => {
    const pane = await openPane({ 'aerogrid.url': server.url });
    const { $ } = pane;
    pane.connect(server.adminToken);
    await waitFor(() => !$('browse').hidden, { what: 'connected', timeout: 10_000 });
    assert.deepEqual($('team').children.map((o) => o.value), ['acme', 'beta']);
    assert.equal($('team').disabled, false);
    assert.match($('status').textContent, /2 teams/);
    await waitFor(() => pane.list().length === 1, { what: "acme's grids" });
    $('team').value = 'beta';
    $('team').dispatch('change');
    await waitFor(() => !$('no-grids').hidden, { what: 'no grids in beta' });
    assert.deepEqual(pane.list(), []);
    assert.equal(pane.storage.get('aerogrid.team'), 'beta');
  });
});
