// Starts a real `aerogrid dev` for a browser test, in a fresh data folder, and stops it after.
//
// Why a helper: every e2e test needs the whole product running (database, broker, backend
// serving the built web app) exactly as a user would start it, and must never leave a server,
// PostgreSQL or broker process behind, whatever happens to the test.

import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, constants, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is e2e/lib/devstack.mjs). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where tests leave screenshots and logs for a person to look at. */
export const artifactsDir = path.join(repoRoot, 'target', 'e2e-artifacts');

/** Creates the artifacts folder and returns its path. */
export async function ensureArtifactsDir() {
  await mkdir(artifactsDir, { recursive: true });
  return artifactsDir;
}

const READY_TIMEOUT_MS = 90_000;
const STOP_GRACE_MS = 30_000;

/**
 * Starts `$AEROGRID_BIN dev --addr 127.0.0.1:0 --data-dir <fresh temp dir>` and waits until it
 * has written `<data-dir>/url`.
 *
 * Environment: AEROGRID_BIN (required) is the built binary; everything else, AEROGRID_WEB_DIR
 * included, is passed through to it unchanged.
 *
 * @param {{ name?: string, args?: string[], bin?: string }} [options] name labels the log file
 *   in the artifacts folder; args go to `aerogrid dev` after the defaults; bin overrides
 *   AEROGRID_BIN.
 * @returns {Promise<{ baseUrl: string, loginUrl: string, dataDir: string, logFile: string,
 *   pid: number, stop: () => Promise<void> }>}
 */
export async function startDevstack({ name = 'devstack', args: extra = [], bin: given } = {}) {
  const bin = await resolveBinary(given);
  await ensureArtifactsDir();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'aerogrid-e2e-'));
  const logFile = path.join(artifactsDir, `${name}.log`);
  const log = createWriteStream(logFile);

  const args = ['dev', '--addr', '127.0.0.1:0', '--data-dir', dataDir, ...extra];
  log.write(`$ ${bin} ${args.join(' ')}\n`);
  if (process.env.AEROGRID_WEB_DIR) log.write(`AEROGRID_WEB_DIR=${process.env.AEROGRID_WEB_DIR}\n`);
  // A process group of its own, so an emergency kill also reaches PostgreSQL and the broker.
  const child = spawn(bin, args, {
    cwd: repoRoot,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  let exitInfo = null;
  exited.then((info) => {
    exitInfo = info;
  });
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });

  // If the test runner dies without calling stop(), take the whole group down with it.
  const killGroup = () => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  process.once('exit', killGroup);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (exitInfo === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        log.write(`\n[e2e] no exit ${STOP_GRACE_MS / 1000} s after SIGTERM: SIGKILL\n`);
        killGroup();
      }, STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    }
    process.removeListener('exit', killGroup);
    const info = await exited;
    log.write(`\n[e2e] exited: code=${info.code} signal=${info.signal}\n`);
    await new Promise((resolve) => log.end(resolve));
    if (!process.env.AEROGRID_E2E_KEEP_DATA) {
      await rm(dataDir, { recursive: true, force: true });
    }
  };

  try {
    const baseUrl = await waitForFile(path.join(dataDir, 'url'), READY_TIMEOUT_MS, () => exitInfo);
    const loginUrl = await waitForFile(path.join(dataDir, 'login-url'), 10_000, () => exitInfo);
    return { baseUrl: baseUrl.replace(/\/+$/, ''), loginUrl, dataDir, logFile, pid: child.pid, stop };
  } catch (error) {
    await stop();
    const tail = (await readFile(logFile, 'utf8').catch(() => '')).split('\n').slice(-40).join('\n');
    error.message += `\n--- last lines of ${logFile} ---\n${tail}`;
    throw error;
  }
}

async function resolveBinary(given) {
  const value = given || process.env.AEROGRID_BIN;
  if (!value) {
    throw new Error(
      'AEROGRID_BIN is not set: point it at the built aerogrid binary, ' +
        'e.g. AEROGRID_BIN=target/debug/aerogrid node --test e2e/tests/',
    );
  }
  const bin = path.resolve(value);
  try {
    await access(bin, constants.X_OK);
  } catch {
    throw new Error(`AEROGRID_BIN=${value}: no executable file at ${bin}`);
  }
  return bin;
}

/**
 * Waits for a file holding a whole http(s) URL and returns it trimmed (a half-written file does
 * not parse yet); fails early if the server exits.
 */
async function waitForFile(file, timeoutMs, getExit) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = (await readFile(file, 'utf8').catch(() => '')).trim();
    if (isHttpUrl(text)) return text;
    const exit = getExit();
    if (exit) {
      const how = exit.error ? exit.error.message : `code=${exit.code} signal=${exit.signal}`;
      throw new Error(`aerogrid dev exited (${how}) before writing ${path.basename(file)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`aerogrid dev wrote no ${path.basename(file)} within ${timeoutMs / 1000} s`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

function isHttpUrl(text) {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.host !== '';
  } catch {
    return false;
  }
}
