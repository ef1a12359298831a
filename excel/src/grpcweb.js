// A dependency-free client for AeroGrid's grid API over gRPC-web, and a grid model.
//
// Why by hand: the Excel add-in runs in Office's shared runtime (a browser engine) and must stay
// small; the grid API needs only two calls and a handful of messages, so a minimal protobuf codec
// for exactly `proto/aerogrid/v1/grid.proto` is a few hundred lines where a generated client and
// its runtime would be a large bundle.
//
// This file is an ES module; `excel/build.mjs` strips its `export` keywords and bundles it into the
// classic script `dist/functions.js`, which exposes the exports as `globalThis.AeroGrid`.

/** gRPC status codes the add-in tells apart. */
export const Code = Object.freeze({
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
});

/** A failed call: `code` is the gRPC status code, `grpcMessage` the server's words. */
export class GrpcError extends Error {
  constructor(code, grpcMessage) {
    super(`gRPC status ${code}${grpcMessage ? `: ${grpcMessage}` : ''}`);
    this.name = 'GrpcError';
    this.code = code;
    this.grpcMessage = grpcMessage || '';
  }
}

// ---------------------------------------------------------------------------------------------
// Protobuf: the wire format, for the messages of grid.proto the client needs.

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8');

/** Appends protobuf fields to a growing byte array. */
class Writer {
  constructor() {
    this.bytes = [];
  }

  varint(value) {
    // uint32 and lengths only: below 2^32.
    let v = value >>> 0;
    while (v > 0x7f) {
      this.bytes.push((v & 0x7f) | 0x80);
      v >>>= 7;
    }
    this.bytes.push(v);
  }

  tag(field, wire) {
    this.varint((field << 3) | wire);
  }

  string(field, text) {
    const encoded = utf8Encoder.encode(text);
    this.tag(field, WIRE_LEN);
    this.varint(encoded.length);
    for (let i = 0; i < encoded.length; i++) this.bytes.push(encoded[i]);
  }

  message(field, writer) {
    this.tag(field, WIRE_LEN);
    this.varint(writer.bytes.length);
    for (let i = 0; i < writer.bytes.length; i++) this.bytes.push(writer.bytes[i]);
  }

  uint32(field, value) {
    this.tag(field, WIRE_VARINT);
    this.varint(value);
  }

  finish() {
    return Uint8Array.from(this.bytes);
  }
}

function writeGridRef(ref) {
  const w = new Writer();
  if (ref.team) w.string(1, String(ref.team));
  if (ref.app) w.string(2, String(ref.app));
  if (ref.grid) w.string(3, String(ref.grid));
  return w;
}

/**
 * Encodes a `SubscribeRequest`.
 * @param {{grid: {team: string, app: string, grid: string}, columns?: string[],
 *   rowKeys?: string[], maxUpdatesPerSecond?: number}} request
 * @returns {Uint8Array}
 */
export function encodeSubscribeRequest(request) {
  const w = new Writer();
  w.message(1, writeGridRef(request.grid || {}));
  for (const column of request.columns || []) w.string(2, String(column));
  for (const key of request.rowKeys || []) w.string(3, String(key));
  const rate = Math.floor(Number(request.maxUpdatesPerSecond) || 0);
  if (rate > 0) w.uint32(4, Math.min(rate, 0xffffffff));
  return w.finish();
}

/**
 * Encodes a `ListGridsRequest`.
 * @param {{team?: string}} request
 * @returns {Uint8Array}
 */
export function encodeListGridsRequest(request = {}) {
  const w = new Writer();
  if (request.team) w.string(1, String(request.team));
  return w.finish();
}

/** Reads protobuf fields from bytes. */
class Reader {
  constructor(bytes, start = 0, end = bytes.length) {
    this.bytes = bytes;
    this.pos = start;
    this.end = end;
  }

  done() {
    return this.pos >= this.end;
  }

  byte() {
    if (this.pos >= this.end) throw new GrpcError(Code.INTERNAL, 'truncated protobuf message');
    return this.bytes[this.pos++];
  }

  /** Reads a varint into `this.lo` and `this.hi` (its low and high 32 bits, unsigned). */
  varint64() {
    let lo = 0;
    let hi = 0;
    let b;
    for (let i = 0; i < 4; i++) {
      b = this.byte();
      lo |= (b & 0x7f) << (i * 7);
      if (!(b & 0x80)) return this.setHalves(lo, 0);
    }
    b = this.byte();
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    if (!(b & 0x80)) return this.setHalves(lo, hi);
    for (let i = 0; i < 5; i++) {
      b = this.byte();
      hi |= (b & 0x7f) << (i * 7 + 3);
      if (!(b & 0x80)) return this.setHalves(lo, hi);
    }
    throw new GrpcError(Code.INTERNAL, 'malformed protobuf varint');
  }

  setHalves(lo, hi) {
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  /** An unsigned varint (uint32, uint64, lengths, tags) as a Number (exact below 2^53). */
  varint() {
    this.varint64();
    return this.hi * 4294967296 + this.lo;
  }

  /** A varint read as a signed 64-bit integer (`int64`), as a Number (exact below 2^53). */
  int64() {
    this.varint64();
    if (this.hi & 0x80000000) {
      // Two's complement: -(~x + 1).
      return -((~this.hi >>> 0) * 4294967296 + (~this.lo >>> 0) + 1);
    }
    return this.hi * 4294967296 + this.lo;
  }

  double() {
    if (this.pos + 8 > this.end) throw new GrpcError(Code.INTERNAL, 'truncated protobuf double');
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, 8);
    this.pos += 8;
    return view.getFloat64(0, true);
  }

  /** The bounds of a length-delimited field's contents, skipped over. */
  lengthDelimited() {
    const length = this.varint();
    const start = this.pos;
    const end = start + length;
    if (end > this.end) throw new GrpcError(Code.INTERNAL, 'truncated protobuf field');
    this.pos = end;
    return [start, end];
  }

  string() {
    const [start, end] = this.lengthDelimited();
    return utf8Decoder.decode(this.bytes.subarray(start, end));
  }

  sub() {
    const [start, end] = this.lengthDelimited();
    return new Reader(this.bytes, start, end);
  }

  skip(wire) {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        break;
      case WIRE_I64:
        this.pos += 8;
        break;
      case WIRE_LEN:
        this.lengthDelimited();
        break;
      case WIRE_I32:
        this.pos += 4;
        break;
      default:
        throw new GrpcError(Code.INTERNAL, `unsupported protobuf wire type ${wire}`);
    }
    if (this.pos > this.end) throw new GrpcError(Code.INTERNAL, 'truncated protobuf message');
  }

  /** Calls `onField(field, wire)` for each field; it must consume the field or return false. */
  fields(onField) {
    while (!this.done()) {
      const key = this.varint();
      const field = key >>> 3;
      const wire = key & 7;
      if (!onField(field, wire)) this.skip(wire);
    }
  }
}

/** A `Value`: null, boolean, number or string (an unset oneof is null). */
function readValue(r) {
  let value = null;
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_VARINT) {
      r.varint();
      value = null;
    } else if (field === 2 && wire === WIRE_VARINT) {
      value = r.varint() !== 0;
    } else if (field === 3 && wire === WIRE_VARINT) {
      value = r.int64();
    } else if (field === 4 && wire === WIRE_I64) {
      value = r.double();
    } else if (field === 5 && wire === WIRE_LEN) {
      value = r.string();
    } else {
      return false;
    }
    return true;
  });
  return value;
}

function readRow(r) {
  const row = { key: '', values: [] };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_LEN) row.key = r.string();
    else if (field === 2 && wire === WIRE_LEN) row.values.push(readValue(r.sub()));
    else return false;
    return true;
  });
  return row;
}

function readPackedOrSingleUint32(r, wire, into) {
  if (wire === WIRE_LEN) {
    const sub = r.sub();
    while (!sub.done()) into.push(sub.varint());
  } else {
    into.push(r.varint());
  }
}

function readCellUpdates(r) {
  const cells = { columns: [], values: [] };
  r.fields((field, wire) => {
    if (field === 1 && (wire === WIRE_LEN || wire === WIRE_VARINT)) {
      readPackedOrSingleUint32(r, wire, cells.columns);
    } else if (field === 2 && wire === WIRE_LEN) {
      cells.values.push(readValue(r.sub()));
    } else {
      return false;
    }
    return true;
  });
  return cells;
}

function readRowChange(r) {
  const change = { key: '' };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_LEN) change.key = r.string();
    else if (field === 2 && wire === WIRE_LEN) {
      change.updated = readCellUpdates(r.sub());
      delete change.deleted;
    } else if (field === 3 && wire === WIRE_VARINT) {
      change.deleted = r.varint() !== 0;
      delete change.updated;
    } else return false;
    return true;
  });
  return change;
}

function readSnapshot(r) {
  const snapshot = { sequence: 0, columns: [], rows: [] };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_VARINT) snapshot.sequence = r.varint();
    else if (field === 2 && wire === WIRE_LEN) snapshot.columns.push(r.string());
    else if (field === 3 && wire === WIRE_LEN) snapshot.rows.push(readRow(r.sub()));
    else return false;
    return true;
  });
  return snapshot;
}

function readChanges(r) {
  const changes = { sequence: 0, rows: [] };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_VARINT) changes.sequence = r.varint();
    else if (field === 2 && wire === WIRE_LEN) changes.rows.push(readRowChange(r.sub()));
    else return false;
    return true;
  });
  return changes;
}

function readHeartbeat(r) {
  const heartbeat = { sequence: 0 };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_VARINT) heartbeat.sequence = r.varint();
    else return false;
    return true;
  });
  return heartbeat;
}

/**
 * Decodes a `SubscribeResponse` into `{snapshot}`, `{changes}` or `{heartbeat}` (or `{}` for an
 * event this client does not know).
 * @param {Uint8Array} bytes
 */
export function decodeSubscribeResponse(bytes) {
  const r = new Reader(bytes);
  const message = {};
  r.fields((field, wire) => {
    if (wire !== WIRE_LEN || field < 1 || field > 3) return false;
    delete message.snapshot;
    delete message.changes;
    delete message.heartbeat;
    if (field === 1) message.snapshot = readSnapshot(r.sub());
    else if (field === 2) message.changes = readChanges(r.sub());
    else message.heartbeat = readHeartbeat(r.sub());
    return true;
  });
  return message;
}

function readGridRef(r) {
  const ref = { team: '', app: '', grid: '' };
  r.fields((field, wire) => {
    if (wire !== WIRE_LEN) return false;
    if (field === 1) ref.team = r.string();
    else if (field === 2) ref.app = r.string();
    else if (field === 3) ref.grid = r.string();
    else return false;
    return true;
  });
  return ref;
}

function readGridInfo(r) {
  const info = { grid: { team: '', app: '', grid: '' }, columns: [], live: false };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_LEN) info.grid = readGridRef(r.sub());
    else if (field === 2 && wire === WIRE_LEN) info.columns.push(r.string());
    else if (field === 3 && wire === WIRE_VARINT) info.live = r.varint() !== 0;
    else return false;
    return true;
  });
  return info;
}

/**
 * Decodes a `ListGridsResponse`.
 * @param {Uint8Array} bytes
 * @returns {{grids: {grid: {team: string, app: string, grid: string}, columns: string[],
 *   live: boolean}[]}}
 */
export function decodeListGridsResponse(bytes) {
  const r = new Reader(bytes);
  const response = { grids: [] };
  r.fields((field, wire) => {
    if (field === 1 && wire === WIRE_LEN) response.grids.push(readGridInfo(r.sub()));
    else return false;
    return true;
  });
  return response;
}

// ---------------------------------------------------------------------------------------------
// gRPC-web framing.

const FRAME_TRAILER = 0x80;
const FRAME_COMPRESSED = 0x01;

/** Wraps one message in a gRPC frame: flag 0, 4-byte big-endian length, the message. */
export function frame(message) {
  const out = new Uint8Array(5 + message.length);
  const length = message.length;
  out[1] = (length >>> 24) & 0xff;
  out[2] = (length >>> 16) & 0xff;
  out[3] = (length >>> 8) & 0xff;
  out[4] = length & 0xff;
  out.set(message, 5);
  return out;
}

/**
 * Splits a byte stream into gRPC-web frames, whatever the chunking: a frame split across chunks
 * waits for the rest, and a chunk holding several frames gives them all.
 */
export class FrameParser {
  constructor() {
    this.buffer = new Uint8Array(0);
  }

  /**
   * Adds a chunk and returns the frames it completes, as `{trailer: boolean, data: Uint8Array}`.
   * @param {Uint8Array} chunk
   */
  push(chunk) {
    let buffer;
    if (this.buffer.length === 0) {
      buffer = chunk;
    } else {
      buffer = new Uint8Array(this.buffer.length + chunk.length);
      buffer.set(this.buffer, 0);
      buffer.set(chunk, this.buffer.length);
    }
    const frames = [];
    let pos = 0;
    while (buffer.length - pos >= 5) {
      const flag = buffer[pos];
      const length =
        ((buffer[pos + 1] << 24) >>> 0) +
        (buffer[pos + 2] << 16) +
        (buffer[pos + 3] << 8) +
        buffer[pos + 4];
      if (buffer.length - pos - 5 < length) break;
      if (flag & FRAME_COMPRESSED) {
        throw new GrpcError(Code.INTERNAL, 'the server sent a compressed message');
      }
      // A copy, so a message never pins the (possibly large) chunk it came in.
      const data = buffer.slice(pos + 5, pos + 5 + length);
      frames.push({ trailer: (flag & FRAME_TRAILER) !== 0, data });
      pos += 5 + length;
    }
    this.buffer = pos === buffer.length ? new Uint8Array(0) : buffer.slice(pos);
    return frames;
  }

  /** Whether bytes of an unfinished frame are waiting. */
  get pending() {
    return this.buffer.length;
  }
}

/** Decodes `grpc-message`'s percent-encoding (invalid escapes are kept as they are). */
export function decodeGrpcMessage(text) {
  if (!text) return '';
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Parses a trailer frame (`key: value\r\n` lines) into a lowercase-keyed object. */
export function parseTrailers(bytes) {
  const text = utf8Decoder.decode(bytes);
  const trailers = {};
  for (const line of text.split(/\r?\n/)) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

/** The error a status code and message stand for, or null for OK. */
function statusError(status, message) {
  const code = Number(status);
  if (code === Code.OK) return null;
  return new GrpcError(Number.isInteger(code) ? code : Code.UNKNOWN, decodeGrpcMessage(message));
}

/** The gRPC code an HTTP status maps to when a response has no `grpc-status` (gRPC's table). */
function httpStatusToCode(status) {
  switch (status) {
    case 400:
      return Code.INTERNAL;
    case 401:
      return Code.UNAUTHENTICATED;
    case 403:
      return Code.PERMISSION_DENIED;
    case 404:
      return Code.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Code.UNAVAILABLE;
    default:
      return Code.UNKNOWN;
  }
}

function trimUrl(url) {
  return String(url || '').replace(/\/+$/, '');
}

function abortError(signal) {
  const reason = signal && signal.reason;
  const error = new GrpcError(Code.CANCELLED, 'the call was cancelled');
  if (reason !== undefined) error.cause = reason;
  return error;
}

/**
 * Makes one gRPC-web call and yields its response messages (as bytes) as they arrive; ends after
 * an OK status, throws a `GrpcError` otherwise (UNAVAILABLE for network failures and streams that
 * end without a status; CANCELLED when `signal` aborts).
 *
 * @param {{url: string, token?: string, method: string, request: Uint8Array,
 *   signal?: AbortSignal, fetch?: typeof fetch}} options `method` is `Service/Method`, e.g.
 *   `aerogrid.v1.GridService/Subscribe`.
 * @returns {AsyncGenerator<Uint8Array>}
 */
export async function* call({ url, token, method, request, signal, fetch: fetchFn }) {
  const doFetch = fetchFn || ((...args) => globalThis.fetch(...args));
  // Our own controller: ending the iteration early (break, return) must stop the download too.
  const controller = new AbortController();
  const onAbort = () => controller.abort(signal.reason);
  if (signal) {
    if (signal.aborted) throw abortError(signal);
    signal.addEventListener('abort', onAbort, { once: true });
  }
  const headers = {
    'content-type': 'application/grpc-web+proto',
    accept: 'application/grpc-web+proto',
    'x-grpc-web': '1',
    'x-user-agent': 'aerogrid-excel/1',
  };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  let reader;
  let finished = false;
  try {
    try {
      response = await doFetch(`${trimUrl(url)}/${method}`, {
        method: 'POST',
        headers,
        body: frame(request),
        signal: controller.signal,
        cache: 'no-store',
      });
    } catch (error) {
      if (controller.signal.aborted) throw abortError(signal);
      throw networkError(url, error);
    }
    // Errors before any message: in headers (a "trailers-only" response).
    const headerStatus = response.headers.get('grpc-status');
    if (headerStatus !== null) {
      const error = statusError(headerStatus, response.headers.get('grpc-message'));
      if (error) throw error;
    }
    if (!response.ok) {
      throw new GrpcError(
        httpStatusToCode(response.status),
        `HTTP ${response.status} ${response.statusText || ''}`.trim(),
      );
    }
    const contentType = response.headers.get('content-type') || '';
    if (!contentType.startsWith('application/grpc-web')) {
      throw new GrpcError(
        Code.UNKNOWN,
        `${trimUrl(url)} answered with ${contentType || 'no content type'}, not gRPC-web: is it an AeroGrid server?`,
      );
    }
    if (headerStatus !== null) {
      // An OK status in the headers: no messages follow.
      finished = true;
      return;
    }
    if (!response.body) throw new GrpcError(Code.INTERNAL, 'the response has no body');
    reader = response.body.getReader();
    const parser = new FrameParser();
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (error) {
        if (controller.signal.aborted) throw abortError(signal);
        throw networkError(url, error);
      }
      if (chunk.done) break;
      for (const f of parser.push(chunk.value)) {
        if (f.trailer) {
          const trailers = parseTrailers(f.data);
          const error = statusError(trailers['grpc-status'] ?? Code.UNKNOWN, trailers['grpc-message']);
          finished = true;
          if (error) throw error;
          return;
        }
        yield f.data;
      }
    }
    throw new GrpcError(Code.UNAVAILABLE, 'the stream ended without a status (connection lost)');
  } finally {
    if (signal) signal.removeEventListener('abort', onAbort);
    if (!finished) {
      // Stopped early, failed, or aborted: close the download.
      controller.abort();
      if (reader) reader.cancel().catch(() => {});
    }
  }
}

function networkError(url, error) {
  const detail = error && error.cause && error.cause.code ? ` (${error.cause.code})` : '';
  const wrapped = new GrpcError(Code.UNAVAILABLE, `cannot reach ${trimUrl(url)}${detail}`);
  wrapped.cause = error;
  /** The server was not reached (or the connection broke), as opposed to an answer. */
  wrapped.network = true;
  return wrapped;
}

/**
 * Subscribes to a grid: yields decoded `SubscribeResponse`s (`{snapshot}`, `{changes}`,
 * `{heartbeat}`) until the stream ends or `signal` aborts. Breaking out of the loop cancels it.
 *
 * @param {{url: string, token?: string, grid: {team: string, app: string, grid: string},
 *   columns?: string[], rowKeys?: string[], maxUpdatesPerSecond?: number, signal?: AbortSignal,
 *   fetch?: typeof fetch}} options
 */
export async function* subscribe(options) {
  const request = encodeSubscribeRequest(options);
  for await (const bytes of call({ ...options, method: 'aerogrid.v1.GridService/Subscribe', request })) {
    yield decodeSubscribeResponse(bytes);
  }
}

/**
 * Lists the grids the token may read (of `team`, or all when empty).
 * @param {{url: string, token?: string, team?: string, signal?: AbortSignal,
 *   fetch?: typeof fetch}} options
 */
export async function listGrids(options) {
  const request = encodeListGridsRequest({ team: options.team });
  let result = { grids: [] };
  for await (const bytes of call({ ...options, method: 'aerogrid.v1.GridService/ListGrids', request })) {
    result = decodeListGridsResponse(bytes);
  }
  return result.grids;
}
