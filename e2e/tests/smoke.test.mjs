// Smoke test of the whole product in a real browser: `aerogrid dev` serves the Trunk-built
// Leptos app, the wasm starts, reaches the backend, and sees the browser session.
//
// Run from the repo root: AEROGRID_BIN=target/debug/aerogrid node --test e2e/tests/
// (AEROGRID_WEB_DIR=$PWD/target/web if the binary does not find the built app by itself).

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { ensureArtifactsDir, startDevstack } from '../lib/devstack.mjs';

const CHROMIUM = process.env.AEROGRID_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// Time for the app to mount and answer; generous for a cold 2-core machine.
const UI_TIMEOUT_MS = 30_000;

describe('smoke', { timeout: 240_000 }, () => {
  let stack;
  let browser;
  let page;
  let artifacts;
  /** Every page error and console error, each as one line. */
  const problems = [];

  before(async () => {
    artifacts = await ensureArtifactsDir();
    stack = await startDevstack({ name: 'smoke-aerogrid-dev' });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    const context = await browser.newContext();
    page = await context.newPage();
    page.setDefaultTimeout(UI_TIMEOUT_MS);
    page.on('pageerror', (error) => problems.push(`page error: ${error.stack || error.message}`));
    page.on('console', (msg) => {
      if (msg.type() !== 'error' || isExpected(msg)) return;
      const where = msg.location().url;
      problems.push(`console error: ${msg.text()}${where ? ` (at ${where})` : ''}`);
    });
  });

  after(async () => {
    // Each step closes first, so a failing step does not hide the cleanup.
    await browser?.close().catch(() => {});
    await stack?.stop();
  });

  it('mounts the app, with the server healthy and nobody signed in', async () => {
    await page.goto(`${stack.baseUrl}/`);
    await expectMounted();
    assert.equal(await settledText('health'), 'Database: ok / Broker: ok');
    assert.equal(await settledText('me'), 'Not signed in');
    await screenshot('01-signed-out');
    assertNoProblems();
  });

  it('signs the admin in through the login link', async () => {
    await page.goto(stack.loginUrl);
    // The link sets the session cookie and redirects to the home page.
    await page.waitForURL(`${stack.baseUrl}/`);
    await expectMounted();
    const me = await settledText('me');
    assert.match(me, /^Signed in as admin\b/);
    assert.equal(await page.getAttribute('[data-testid="me"]', 'data-state'), 'ok');
    await screenshot('02-signed-in');
    assertNoProblems();
  });

  it('mounts on a deep SPA path', async () => {
    const response = await page.goto(`${stack.baseUrl}/teams/x/apps/y`);
    assert.equal(response?.status(), 200, 'the server answers SPA paths with index.html');
    await expectMounted();
    assert.equal(await settledText('health'), 'Database: ok / Broker: ok');
    // There is no team x: the app page says so.
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match((await alert.textContent()) ?? '', /no team `x`/);
    await screenshot('03-deep-path');
    assertNoProblems();
  });

  /** The header is rendered by the wasm, so seeing it proves the app started. */
  async function expectMounted() {
    const title = page.getByTestId('app-title');
    await title.waitFor({ state: 'visible' });
    assert.equal((await title.textContent())?.trim(), 'AeroGrid');
  }

  /** The text of a status line once it has stopped loading. */
  async function settledText(testId) {
    const selector = `[data-testid="${testId}"]:not([data-state="loading"])`;
    await page.waitForSelector(selector);
    return ((await page.textContent(selector)) ?? '').trim();
  }

  async function screenshot(name) {
    await page.screenshot({ path: path.join(artifacts, `smoke-${name}.png`), fullPage: true });
  }

  function assertNoProblems() {
    const found = problems.splice(0);
    assert.deepEqual(found, [], `the page reported errors:\n${found.join('\n')}`);
  }
});

/**
 * Chromium logs every non-2xx fetch as a console error. The 401 from /api/v1/me while
 * signed out, and the 404 for the app of a team that does not exist, are the expected answers,
 * not faults.
 */
function isExpected(msg) {
  const where = msg.location().url ?? '';
  return (/status of 401\b/.test(msg.text()) && where.endsWith('/api/v1/me'))
    || (/status of 404\b/.test(msg.text()) && where.includes('/api/v1/teams/x/'));
}
