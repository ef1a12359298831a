// The IDE journey in a real browser against a real `aerogrid dev`: sign in with a password,
// create an app from the seed template, start it, produce orders to the broker and see the
// values tick in the live preview, make a syntax error and see its marker on the right line,
// fix it and save, stop; then tenancy: a viewer can look but not edit or start, and a topic the
// team may not read is an error an administrator clears with one click; and packages: an
// import of numpy is an error until the requirements editor declares it, then the app runs it.
//
// Run from the repo root: AEROGRID_BIN=target/debug/aerogrid node --test e2e/tests/

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { ensureArtifactsDir, startDevstack } from '../lib/devstack.mjs';

const CHROMIUM = process.env.AEROGRID_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const UI_TIMEOUT_MS = 30_000;
const PASSWORD = 'correct horse battery';

describe('IDE', { timeout: 300_000 }, () => {
  let stack;
  let browser;
  let page;
  let artifacts;
  let admin;
  const problems = [];

  /** A REST call as the dev admin. */
  async function api(method, route, body) {
    const response = await fetch(`${stack.baseUrl}/api/v1${route}`, {
      method,
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) assert.fail(`${method} ${route}: ${response.status} ${await response.text()}`);
    return response.status === 204 ? null : response.json();
  }

  /** Sends `KEY<TAB>VALUE` lines to a topic with `aerogrid produce`. */
  async function produce(topic, lines) {
    const broker = (await readFile(path.join(stack.dataDir, 'broker'), 'utf8')).trim();
    const child = spawn(process.env.AEROGRID_BIN, ['produce', topic, '--brokers', broker],
      { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    child.stdin.end(lines.map((line) => `${line}\n`).join(''));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(code, 0, `aerogrid produce failed: ${stderr}`);
  }

  async function signIn(name) {
    await page.goto(`${stack.baseUrl}/`);
    await page.getByTestId('sign-in-name').fill(name);
    await page.getByTestId('sign-in-password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('teams').waitFor();
  }

  async function screenshot(name) {
    await page.screenshot({ path: path.join(artifacts, `ide-${name}.png`) });
  }

  /** The text of the live grid's cell in row `key`, column index `column` (0 is the key). */
  async function cell(key, column) {
    return (await page.locator(`[role="row"][data-key="${key}"] > *`).nth(column).textContent())?.trim();
  }

  before(async () => {
    artifacts = await ensureArtifactsDir();
    stack = await startDevstack({ name: 'ide-aerogrid-dev' });
    admin = (await readFile(path.join(stack.dataDir, 'admin-token'), 'utf8')).trim();
    await api('POST', '/users', { name: 'ada', password: PASSWORD });
    await api('POST', '/users', { name: 'vic', password: PASSWORD });
    await api('POST', '/teams', { name: 'acme' });
    await api('PUT', '/teams/acme/topics/orders');
    await api('PUT', '/teams/acme/members/ada', { role: 'editor' });
    await api('PUT', '/teams/acme/members/vic', { role: 'viewer' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on('pageerror', (error) => problems.push(`page error: ${error.stack || error.message}`));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await stack?.stop();
  });

  it('creates, starts and watches an app, shows a syntax error on its line, saves and stops', async () => {
    await signIn('ada');
    await page.getByRole('link', { name: 'acme' }).click();
    await page.getByTestId('no-apps').waitFor();
    await page.getByTestId('new-app-name').fill('orders');
    await page.getByTestId('new-app-template').selectOption('seed');
    await page.getByRole('button', { name: 'Create' }).click();
    await page.waitForURL(`${stack.baseUrl}/teams/acme/apps/orders`);
    await page.locator('[data-testid="editor"] .monaco-editor .view-lines').waitFor();
    assert.match(await page.locator('[data-testid="editor"] .monaco-editor .view-lines').innerText(), /product_sum/);
    assert.equal(await page.getByTestId('problems').locator('li').count(), 0);
    await screenshot('01-created');

    await page.getByTestId('start').click();
    await page.locator('[data-testid="state"][data-state="running"]').waitFor({ timeout: 60_000 });
    await produce('orders', [
      'order-1\t{"product": "apple", "quantity": 3}',
      'order-2\t{"product": "pear", "quantity": 1}',
    ]);
    await page.getByTestId('grid-tab-product_sum').waitFor({ timeout: 60_000 });
    await page.locator('[data-testid="connection"][data-state="live"]').waitFor();
    await page.locator('[role="row"][data-key="apple"]').waitFor();
    assert.equal(await cell('apple', 1), '3');
    await produce('orders', ['order-3\t{"product": "apple", "quantity": 2}']);
    await page.waitForFunction(() => {
      const row = document.querySelector('[role="row"][data-key="apple"]');
      return row && row.children[1].textContent.trim() === '5';
    });
    assert.equal(await page.locator('[role="row"][data-key="apple"] .flash').count(), 1, 'the changed cell flashes');
    assert.equal((await page.getByTestId('row-count').textContent()).trim(), '2 rows');
    await screenshot('02-running-with-values');

    // A syntax error on a new last line: its marker and its problem are on that line.
    const lines = (await page.locator('[data-testid="editor"] .monaco-editor .view-line').count());
    await page.locator('[data-testid="editor"] .monaco-editor .view-lines').click();
    await page.keyboard.press('Control+End');
    await page.keyboard.press('Enter');
    await page.keyboard.type('total = 1 +');
    const problem = page.getByTestId('problems').locator('li.error');
    await problem.waitFor();
    const errorLine = Number(await problem.getAttribute('data-line'));
    assert.ok(errorLine >= lines, `the error is on the new last line (${errorLine} of ${lines}+)`);
    await page.locator('[data-testid="editor"] .monaco-editor .squiggly-error').first().waitFor();
    assert.match(await page.getByTestId('dirty').textContent(), /unsaved/);
    await screenshot('03-syntax-error');

    // Fixed: the problem goes; Ctrl+S saves version 2.
    await page.keyboard.press('Backspace');
    await page.keyboard.press('Backspace');
    await problem.waitFor({ state: 'detached' });
    await page.keyboard.press('Control+S');
    await page.locator('[data-testid="message"]', { hasText: 'Saved version 2' }).waitFor();
    assert.equal((await page.getByTestId('version').textContent()).trim(), 'v2');

    // A message that is not an order: a bad record with its reason and raw value.
    await produce('orders', ['order-4\tnot json at all']);
    await page.getByTestId('tab-bad-records').click();
    await page.getByTestId('bad-records').waitFor({ timeout: 30_000 });
    assert.match(await page.getByTestId('bad-records').textContent(), /not json at all/);

    // Versions: compare version 1 with the editor, then roll back to it (version 3).
    await page.getByTestId('tab-versions').click();
    await page.getByTestId('compare-1').click();
    await page.locator('[data-testid="diff"] .monaco-diff-editor').waitFor();
    await screenshot('04-diff');
    await page.getByTestId('rollback-1').click();
    await page.getByTestId('confirm-rollback').click();
    await page.locator('[data-testid="version"]', { hasText: 'v3' }).waitFor();
    assert.doesNotMatch(await page.locator('[data-testid="editor"] .monaco-editor .view-lines').first().innerText(), /total = 1/);

    // Use in Excel: a read-only token, shown once, and the formulas of the app's grid.
    await page.getByTestId('tab-use-in-excel').click();
    await page.locator('[data-testid="formulas"]', { hasText: '=AEROGRID.GRID("acme/orders", "product_sum")' }).waitFor();
    await page.getByTestId('mint-token').click();
    assert.match((await page.getByTestId('token').textContent()).trim(), /^agt_/);

    await page.getByTestId('stop').click();
    await page.locator('[data-testid="state"][data-state="stopped"]').waitFor({ timeout: 60_000 });
    await screenshot('05-saved-and-stopped');
    assert.deepEqual(problems.splice(0), []);
  });

  it('lets a viewer look but not edit or start', async () => {
    await page.getByTestId('sign-out').click();
    await signIn('vic');
    await page.goto(`${stack.baseUrl}/teams/acme/apps/orders`);
    await page.getByTestId('read-only').waitFor();
    assert.equal(await page.getByTestId('start').count(), 0);
    assert.equal(await page.getByTestId('save').count(), 0);
    await page.locator('[data-testid="editor"] .monaco-editor .view-lines').click();
    await page.keyboard.type('hello');
    assert.equal((await page.getByTestId('dirty').textContent()).trim(), '', 'the code cannot change');
    // Tabs by keyboard: arrows move the selection and the focus.
    await page.getByTestId('tab-preview').click();
    await page.keyboard.press('ArrowRight');
    await page.locator('[data-testid="tab-log"][aria-selected="true"]').waitFor();
    assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'tab-log');
    await page.getByTestId('tab-versions').click();
    await page.locator('[data-version="2"]').waitFor();
    assert.equal(await page.getByTestId('rollback-1').count(), 0, 'no rollback for viewers');
    await screenshot('06-viewer');
    assert.deepEqual(problems.splice(0), []);
  });

  it('declares a package in the requirements editor, and the app runs with it', async () => {
    const code = [
      'import aerogrid',
      'import numpy',
      '',
      "app = aerogrid.App('stats', broker=BROKER_URI)",
      '',
      'class Order(aerogrid.Record):',
      '    product: str',
      '    quantity: int',
      '',
      "orders_topic = app.topic('orders', key_type=str, value_type=Order)",
      "stats = app.Grid('stats', columns=['median'])",
      'seen = {}',
      '',
      '@app.stream(orders_topic)',
      'async def on_order(orders):',
      '    async for order in orders:',
      '        seen.setdefault(order.product, []).append(order.quantity)',
      "        stats[order.product] = {'median': float(numpy.median(seen[order.product]))}",
      '',
    ].join('\n');
    await api('POST', '/teams/acme/apps', { name: 'stats', code });
    await page.goto(`${stack.baseUrl}/`);
    const signOut = page.getByTestId('sign-out');
    await Promise.race([signOut.waitFor(), page.getByTestId('sign-in-name').waitFor()]);
    if (await signOut.count()) await signOut.click();
    await signIn('ada');
    await page.goto(`${stack.baseUrl}/teams/acme/apps/stats`);
    const undeclared = page.getByTestId('problems').locator('li[data-file="code"][data-line="2"]');
    await undeclared.waitFor();
    assert.match(await undeclared.textContent(), /add `numpy` to the app's requirements/);
    await screenshot('08-undeclared-import');

    // Declared in the requirements editor: the error goes as the text is checked.
    await page.getByTestId('file-requirements').click();
    await page.locator('[data-testid="requirements-editor"] .monaco-editor .view-lines').click();
    await page.keyboard.type('numpy');
    await undeclared.waitFor({ state: 'detached' });
    // A line that is not a requirement is an error on its line of the requirements.
    await page.keyboard.press('Enter');
    await page.keyboard.type('--pre');
    const option = page.getByTestId('problems').locator('li[data-file="requirements"][data-line="2"]');
    await option.waitFor();
    assert.match(await option.textContent(), /requirements name packages only/);
    await page.locator('[data-testid="requirements-editor"] .squiggly-error').first().waitFor();
    await screenshot('09-requirements-error');
    for (let i = 0; i < '--pre'.length + 1; i += 1) await page.keyboard.press('Backspace');
    await option.waitFor({ state: 'detached' });
    await page.keyboard.press('Control+S');
    await page.locator('[data-testid="message"]', { hasText: 'Saved version 2' }).waitFor({ timeout: 60_000 });
    assert.equal(await page.getByTestId('problems').locator('li').count(), 0);

    await page.getByTestId('start').click();
    await page.locator('[data-testid="state"][data-state="running"]').waitFor({ timeout: 240_000 });
    await produce('orders', ['s-1\t{"product": "fig", "quantity": 1}', 's-2\t{"product": "fig", "quantity": 4}',
      's-3\t{"product": "fig", "quantity": 9}']);
    await page.getByTestId('tab-preview').click();
    await page.waitForFunction(() => {
      const row = document.querySelector('[role="row"][data-key="fig"]');
      return row && row.children[1].textContent.trim() === '4';
    }, null, { timeout: 60_000 });
    await screenshot('10-numpy-running');

    // The versions show the requirements' change beside the code's.
    await page.getByTestId('tab-versions').click();
    await page.getByTestId('compare-1').click();
    await page.locator('[data-testid="requirements-diff"] .monaco-diff-editor').waitFor();
    await page.getByTestId('stop').click();
    await page.locator('[data-testid="state"][data-state="stopped"]').waitFor({ timeout: 60_000 });
    assert.deepEqual(problems.splice(0), []);
  });

  it('shows a topic the team may not read on its line, and an administrator grants it in one click', async () => {
    const seed = await readFile(path.join('connector', 'python', 'tests', 'seed.py'), 'utf8');
    await api('POST', '/teams/acme/apps', { name: 'prices', code: seed.replace("app.topic('orders'", "app.topic('prices'") });
    // The editor `ada` sees the error, with no way to grant it.
    await page.getByTestId('sign-out').click();
    await signIn('ada');
    await page.goto(`${stack.baseUrl}/teams/acme/apps/prices`);
    const refused = page.getByTestId('problems').locator('li[data-line="9"]');
    await refused.waitFor();
    assert.match(await refused.textContent(), /team `acme` may not read topic `prices`; an administrator can grant it/);
    assert.equal(await page.getByTestId('grant-topic').count(), 0, 'only administrators grant');
    // The dev admin, signed in with its one-time link, grants it from the diagnostic.
    await page.getByTestId('sign-out').click();
    const link = (await readFile(path.join(stack.dataDir, 'login-url'), 'utf8')).trim();
    await page.goto(link);
    await page.getByTestId('teams').waitFor();
    await page.goto(`${stack.baseUrl}/teams/acme/apps/prices`);
    await page.getByTestId('grant-topic').click();
    await page.getByTestId('message').filter({ hasText: 'may now read `prices`' }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="problems"] li').length === 0);
    const grants = await api('GET', '/teams/acme/topics');
    assert.ok(grants.some((grant) => grant.pattern === 'prices'), JSON.stringify(grants));
    await screenshot('07-granted');
    assert.deepEqual(problems.splice(0), []);
  });
});
