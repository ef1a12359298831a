// The add-in's settings in `OfficeRuntime.storage`, shared with the task pane: the server's URL,
// the token and the rate, read afresh by every feed that (re)connects.

/** Storage keys, shared with the task pane. */
export const URL_KEY = 'aerogrid.url';
export const TOKEN_KEY = 'aerogrid.token';
export const RATE_KEY = 'aerogrid.rate';
/** Updates per second per cell (and asked of the server) unless `aerogrid.rate` says otherwise. */
export const DEFAULT_RATE = 2;
const MAX_RATE = 100;

function storage() {
  return globalThis.OfficeRuntime && globalThis.OfficeRuntime.storage;
}

export async function getItem(key) {
  const store = storage();
  if (!store) return null;
  try {
    const value = await store.getItem(key);
    return value === undefined || value === null ? null : String(value);
  } catch {
    return null;
  }
}

/** Stores a setting (the task pane's); does nothing where there is no storage. */
export async function setItem(key, value) {
  const store = storage();
  if (!store) return;
  await store.setItem(key, value);
}

/**
 * The server this page came from: the add-in's files are served at `<server>/excel/...`, so that
 * is the default server URL.
 */
export function defaultUrl() {
  const location = globalThis.location;
  if (!location || !/^https?:$/.test(location.protocol || '')) return '';
  const path = String(location.pathname || '/');
  const at = path.lastIndexOf('/excel/');
  const prefix = at >= 0 ? path.slice(0, at) : '';
  return `${location.origin}${prefix}`;
}

function parseRate(text) {
  const rate = Number(text);
  if (!Number.isFinite(rate) || rate <= 0) return DEFAULT_RATE;
  return Math.min(MAX_RATE, rate);
}

/** The server URL (no trailing slash), token and rate, as stored now. */
export async function readSettings() {
  const [url, token, rate] = await Promise.all([
    getItem(URL_KEY),
    getItem(TOKEN_KEY),
    getItem(RATE_KEY),
  ]);
  return {
    url: (url && url.trim() ? url.trim() : defaultUrl()).replace(/\/+$/, ''),
    token: token ? token.trim() : '',
    rate: parseRate(rate),
  };
}
