// The Python native-client sample (excel/native-sample/watch_grid.py: grpcio over HTTP/2) against
// a real `aerogrid dev`: it prints the grid as it ticks, and a bad token ends it with a clear
// message. Needs a Python with the pinned requirements: $AEROGRID_NATIVE_PYTHON, or
// target/excel-native-venv/bin/python (see the sample's requirements.txt); skipped without one,
// since tests must not download, but never when $AEROGRID_NATIVE_PYTHON names one (CI does).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  createRunningApp,
  excelDir,
  produce,
  readToken,
  repoRoot,
  serverUnavailable,
  startServer,
  waitFor,
} from '../testing/support.mjs';

const SAMPLE = path.join(excelDir, 'native-sample', 'watch_grid.py');

function findPython() {
  const candidates = [
    process.env.AEROGRID_NATIVE_PYTHON,
    path.join(repoRoot, 'target', 'excel-native-venv', 'bin', 'python'),
  ].filter(Boolean);
  // Named (as `cargo xtask test` does): it must work, never a silent skip.
  const required = process.env.AEROGRID_NATIVE_PYTHON;
  for (const python of candidates) {
    if (!existsSync(python) && python.includes('/')) {
      if (python === required) throw new Error(`AEROGRID_NATIVE_PYTHON=${python}: no such file`);
      continue;
    }
    const check = spawnSync(python, ['-c', 'import grpc, grpc_tools'], { encoding: 'utf8' });
    if (check.status === 0) return { python };
    if (python === required) {
      throw new Error(`AEROGRID_NATIVE_PYTHON=${python} cannot import grpc and grpc_tools: ${check.stderr}`);
    }
  }
  return {
    skip: 'no Python with grpcio: python3 -m venv target/excel-native-venv && target/excel-native-venv/bin/pip install -r excel/native-sample/requirements.txt',
  };
}

const serverSkip = await serverUnavailable();
const { python, skip: pythonSkip } = findPython();

/** Runs the sample; collects its stdout lines (parsed JSON) and stderr. */
function runSample(args) {
  const child = spawn(python, [SAMPLE, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { lines: [], stderr: '', child };
  let pending = '';
  child.stdout.on('data', (data) => {
    pending += data;
    const parts = pending.split('\n');
    pending = parts.pop();
    for (const line of parts) if (line.trim()) run.lines.push(JSON.parse(line));
  });
  child.stderr.on('data', (data) => (run.stderr += data));
  run.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return run;
}

describe('the Python gRPC sample against aerogrid dev', { skip: serverSkip || pythonSkip || false }, () => {
  let server;
  let token;
  const runs = [];

  before(async () => {
    server = await startServer('native-sample');
    await createRunningApp(server, 'acme', 'orders');
    token = await readToken(server, 'acme');
    await produce(server, [['order-1', { product: 'apple', quantity: 3 }]]);
  });

  after(async () => {
    for (const run of runs) run.child.kill('SIGTERM');
    await Promise.all(runs.map((run) => run.exited));
    if (server) await server.stop();
  });

  test('it prints the grid as it ticks', async () => {
    const run = runSample(['--url', server.url, '--token', token, '--rate', '10', 'acme/orders/product_sum']);
    runs.push(run);
    const apple = (n) => run.lines.some((line) => line.rows?.apple?.units_sold === n);
    await waitFor(() => apple(3), { timeout: 60_000, what: `apple = 3 (stderr: ${run.stderr})` });
    assert.deepEqual(run.lines.find((line) => line.columns).columns, ['units_sold']);
    await produce(server, [['order-2', { product: 'apple', quantity: 2 }]]);
    await waitFor(() => apple(5), { timeout: 30_000, what: 'apple = 5' });
  });

  test('a bad token ends it with a clear message', async () => {
    const run = runSample(['--url', server.url, '--token', 'agt_wrong', 'acme/orders/product_sum']);
    runs.push(run);
    assert.equal(await run.exited, 2);
    assert.match(run.stderr, /the token is unknown or revoked \(UNAUTHENTICATED/);
  });
});
