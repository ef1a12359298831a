// The gRPC-web client and grid model, offline: protobuf bytes written here by hand (not by the
// code under test), frames split every possible way, and a fetch that answers what a server
// would, errors included.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  Code,
  FrameParser,
  GrpcError,
  decodeListGridsResponse,
  decodeSubscribeResponse,
  encodeListGridsRequest,
  encodeSubscribeRequest,
  frame,
  listGrids,
  parseTrailers,
  subscribe,
} from '../src/grpcweb.js';
import { GridModel } from '../src/model.js';

// --- A tiny independent protobuf writer for the tests. -----------------------------------------

function varint(value) {
  let v = BigInt.asUintN(64, BigInt(value));
  const out = [];
  while (v > 0x7fn) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return out;
}
const tag = (field, wire) => varint((field << 3) | wire);
const bytesField = (field, bytes) => [...tag(field, 2), ...varint(bytes.length), ...bytes];
const str = (field, text) => bytesField(field, [...new TextEncoder().encode(text)]);
const uint = (field, value) => [...tag(field, 0), ...varint(value)];
const dbl = (field, value) => {
  const buffer = Buffer.alloc(8);
  buffer.writeDoubleLE(value);
  return [...tag(field, 1), ...buffer];
};
const value = (kind, v) => {
  switch (kind) {
    case 'null':
      return uint(1, 0);
    case 'bool':
      return uint(2, v ? 1 : 0);
    case 'int':
      return uint(3, v);
    case 'float':
      return dbl(4, v);
    case 'string':
      return str(5, v);
    default:
      return [];
  }
};
const row = (key, values) => [...str(1, key), ...values.flatMap((v) => bytesField(2, v))];
const snapshotMessage = (sequence, columns, rows) =>
  bytesField(1, [
    ...uint(1, sequence),
    ...columns.flatMap((c) => str(2, c)),
    ...rows.flatMap((r) => bytesField(3, r)),
  ]);

function trailerFrame(text) {
  const data = new TextEncoder().encode(text);
  const out = new Uint8Array(5 + data.length);
  out[0] = 0x80;
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

// --- Encoding. ----------------------------------------------------------------------------------

test('SubscribeRequest encodes as protobuf does', () => {
  const bytes = encodeSubscribeRequest({
    grid: { team: 'a', app: 'b', grid: 'c' },
    columns: ['x'],
    rowKeys: ['k'],
    maxUpdatesPerSecond: 2,
  });
  const expected = [
    ...bytesField(1, [...str(1, 'a'), ...str(2, 'b'), ...str(3, 'c')]),
    ...str(2, 'x'),
    ...str(3, 'k'),
    ...uint(4, 2),
  ];
  assert.deepEqual([...bytes], expected);
  // Zero rate and empty lists are left out (proto3 defaults).
  assert.deepEqual(
    [...encodeSubscribeRequest({ grid: { team: 'é', app: 'b', grid: 'c' } })],
    bytesField(1, [...str(1, 'é'), ...str(2, 'b'), ...str(3, 'c')]),
  );
  assert.deepEqual([...encodeSubscribeRequest({ grid: { team: 't', app: 'a', grid: 'g' }, maxUpdatesPerSecond: 300 })].slice(-3), uint(4, 300));
});

test('ListGridsRequest encodes the team, or nothing', () => {
  assert.deepEqual([...encodeListGridsRequest({ team: 'acme' })], str(1, 'acme'));
  assert.deepEqual([...encodeListGridsRequest({})], []);
});

test('frames are flag, big-endian length, message', () => {
  assert.deepEqual([...frame(new Uint8Array([1, 2, 3]))], [0, 0, 0, 0, 3, 1, 2, 3]);
});

// --- Decoding. ----------------------------------------------------------------------------------

test('a snapshot decodes with every kind of value', () => {
  const bytes = snapshotMessage(
    7,
    ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'],
    [
      row('k1', [
        value('null'),
        value('bool', true),
        value('int', -5),
        value('int', 2 ** 40 + 3),
        value('float', 1.5),
        value('string', 'héllo ✓'),
        value('unset'),
        value('int', 0),
      ]),
    ],
  );
  const message = decodeSubscribeResponse(Uint8Array.from(bytes));
  assert.deepEqual(message, {
    snapshot: {
      sequence: 7,
      columns: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'],
      rows: [{ key: 'k1', values: [null, true, -5, 2 ** 40 + 3, 1.5, 'héllo ✓', null, 0] }],
    },
  });
});

test('int64 extremes decode to the nearest number', () => {
  const decodeInt = (n) =>
    decodeSubscribeResponse(Uint8Array.from(snapshotMessage(1, ['v'], [row('k', [value('int', n)])])))
      .snapshot.rows[0].values[0];
  assert.equal(decodeInt(-1), -1);
  assert.equal(decodeInt(-(2 ** 31)), -(2 ** 31));
  assert.equal(decodeInt(2 ** 31), 2 ** 31);
  assert.equal(decodeInt(2 ** 53 - 1), 2 ** 53 - 1);
  assert.equal(decodeInt(-(2 ** 53) + 1), -(2 ** 53) + 1);
  assert.equal(decodeInt(9223372036854775807n), 9223372036854775807);
  assert.equal(decodeInt(-9223372036854775808n), -9223372036854775808);
});

test('changes decode, packed and unpacked columns, updates and deletions', () => {
  const cells = [
    ...bytesField(1, [...varint(0), ...varint(2)]), // packed
    ...uint(1, 1), // unpacked too (a parser must take both)
    ...bytesField(2, value('int', 1)),
    ...bytesField(2, value('string', 'x')),
    ...bytesField(2, value('bool', false)),
  ];
  const bytes = bytesField(2, [
    ...uint(1, 2 ** 33),
    ...bytesField(2, [...str(1, 'k1'), ...bytesField(2, cells)]),
    ...bytesField(2, [...str(1, 'k2'), ...uint(3, 1)]),
  ]);
  assert.deepEqual(decodeSubscribeResponse(Uint8Array.from(bytes)), {
    changes: {
      sequence: 2 ** 33,
      rows: [
        { key: 'k1', updated: { columns: [0, 2, 1], values: [1, 'x', false] } },
        { key: 'k2', deleted: true },
      ],
    },
  });
});

test('heartbeats decode, and unknown fields are skipped', () => {
  const bytes = [
    ...uint(15, 99),
    ...bytesField(3, [...uint(1, 42), ...str(9, 'future'), ...dbl(10, 2.5)]),
    ...bytesField(16, [1, 2, 3]),
  ];
  assert.deepEqual(decodeSubscribeResponse(Uint8Array.from(bytes)), { heartbeat: { sequence: 42 } });
  assert.deepEqual(decodeSubscribeResponse(Uint8Array.from(bytesField(9, [1]))), {});
});

test('a truncated message is an INTERNAL error, not garbage', () => {
  const bytes = Uint8Array.from(snapshotMessage(1, ['a'], [row('k', [value('string', 'abc')])]));
  assert.throws(() => decodeSubscribeResponse(bytes.subarray(0, bytes.length - 2)), (error) => {
    return error instanceof GrpcError && error.code === Code.INTERNAL;
  });
});

test('ListGridsResponse decodes', () => {
  const info = (team, app, grid, columns, live) =>
    bytesField(1, [
      ...bytesField(1, [...str(1, team), ...str(2, app), ...str(3, grid)]),
      ...columns.flatMap((c) => str(2, c)),
      ...(live ? uint(3, 1) : []),
    ]);
  const bytes = [...info('acme', 'orders', 'product_sum', ['units_sold'], true), ...info('acme', 'x', 'g', [], false)];
  assert.deepEqual(decodeListGridsResponse(Uint8Array.from(bytes)), {
    grids: [
      { grid: { team: 'acme', app: 'orders', grid: 'product_sum' }, columns: ['units_sold'], live: true },
      { grid: { team: 'acme', app: 'x', grid: 'g' }, columns: [], live: false },
    ],
  });
});

// --- Framing. -----------------------------------------------------------------------------------

const messages = [
  Uint8Array.from(snapshotMessage(1, ['units_sold'], [row('apple', [value('int', 3)])])),
  new Uint8Array(0),
  Uint8Array.from(bytesField(3, uint(1, 2))),
];
const stream = Buffer.concat([
  ...messages.map((m) => frame(m)),
  trailerFrame('grpc-status: 0\r\ngrpc-message: \r\n'),
]);

test('frames come out whole however the bytes are split', () => {
  const expected = [...messages.map((m) => ({ trailer: false, data: [...m] })), { trailer: true }];
  const check = (chunks) => {
    const parser = new FrameParser();
    const frames = chunks.flatMap((c) => parser.push(c));
    assert.equal(parser.pending, 0);
    assert.deepEqual(
      frames.map((f) => (f.trailer ? { trailer: true } : { trailer: false, data: [...f.data] })),
      expected,
    );
  };
  check([stream]);
  // Every split into two, and every split into three around the first frame.
  for (let i = 0; i <= stream.length; i++) check([stream.subarray(0, i), stream.subarray(i)]);
  for (let i = 0; i < 12; i++) {
    for (let j = i; j < 20; j++) check([stream.subarray(0, i), stream.subarray(i, j), stream.subarray(j)]);
  }
  // One byte at a time.
  check([...stream].map((b) => Uint8Array.of(b)));
});

test('trailers parse, and messages are percent-decoded by the caller', () => {
  assert.deepEqual(parseTrailers(new TextEncoder().encode('grpc-status: 5\r\nGrpc-Message: no%20such%20app\r\n')), {
    'grpc-status': '5',
    'grpc-message': 'no%20such%20app',
  });
});

// --- Calls over a fake fetch. -------------------------------------------------------------------

/** A fetch that answers with `chunks` (a body streamed chunk by chunk) and `headers`. */
function fakeFetch({ chunks = [], headers = {}, status = 200, hang = false, calls = [] } = {}) {
  return async (url, init) => {
    calls.push({ url, init });
    let index = 0;
    const body = new ReadableStream({
      pull(controller) {
        if (index < chunks.length) {
          controller.enqueue(chunks[index++]);
        } else if (!hang) {
          controller.close();
        } else {
          return new Promise((_, reject) => {
            init.signal.addEventListener('abort', () => reject(init.signal.reason));
          });
        }
      },
    });
    return new Response(body, {
      status,
      headers: { 'content-type': 'application/grpc-web+proto', ...headers },
    });
  };
}

async function collect(iterable) {
  const out = [];
  for await (const item of iterable) out.push(item);
  return out;
}

const grid = { team: 'acme', app: 'orders', grid: 'product_sum' };

test('subscribe sends a gRPC-web request and yields the messages', async () => {
  const calls = [];
  const fetch = fakeFetch({ chunks: [stream.subarray(0, 7), stream.subarray(7)], calls });
  const got = await collect(subscribe({ url: 'http://h:1/', token: 't0k', grid, maxUpdatesPerSecond: 2, fetch }));
  assert.deepEqual(got, [
    { snapshot: { sequence: 1, columns: ['units_sold'], rows: [{ key: 'apple', values: [3] }] } },
    {},
    { heartbeat: { sequence: 2 } },
  ]);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, 'http://h:1/aerogrid.v1.GridService/Subscribe');
  assert.equal(calls[0].init.method, 'POST');
  assert.equal(calls[0].init.headers['content-type'], 'application/grpc-web+proto');
  assert.equal(calls[0].init.headers['x-grpc-web'], '1');
  assert.equal(calls[0].init.headers.authorization, 'Bearer t0k');
  assert.deepEqual([...calls[0].init.body], [...frame(encodeSubscribeRequest({ grid, maxUpdatesPerSecond: 2 }))]);
});

async function rejection(promise) {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  assert.fail('expected an error');
}

test('a status in the trailer is an error with its code and decoded message', async () => {
  const chunks = [frame(messages[0]), trailerFrame('grpc-status: 14\r\ngrpc-message: the%20app%20was%20stopped\r\n')];
  const got = [];
  const error = await rejection(
    (async () => {
      for await (const m of subscribe({ url: 'http://h', grid, fetch: fakeFetch({ chunks }) })) got.push(m);
    })(),
  );
  assert.equal(got.length, 1, 'messages before the error still arrive');
  assert.ok(error instanceof GrpcError);
  assert.equal(error.code, Code.UNAVAILABLE);
  assert.equal(error.grpcMessage, 'the app was stopped');
});

test('a status in the headers (trailers-only) is an error before any message', async () => {
  const fetch = fakeFetch({ headers: { 'grpc-status': '16', 'grpc-message': 'bad%20token' } });
  const error = await rejection(collect(subscribe({ url: 'http://h', grid, fetch })));
  assert.equal(error.code, Code.UNAUTHENTICATED);
  assert.equal(error.grpcMessage, 'bad token');
});

test('HTTP errors without a gRPC status map to gRPC codes', async () => {
  const cases = [
    [401, Code.UNAUTHENTICATED],
    [403, Code.PERMISSION_DENIED],
    [404, Code.UNIMPLEMENTED],
    [503, Code.UNAVAILABLE],
    [500, Code.UNKNOWN],
  ];
  for (const [status, code] of cases) {
    const error = await rejection(collect(subscribe({ url: 'http://h', grid, fetch: fakeFetch({ status }) })));
    assert.equal(error.code, code, `HTTP ${status}`);
  }
});

test('a page that is not gRPC-web is a clear error', async () => {
  const fetch = async () => new Response('<html>', { headers: { 'content-type': 'text/html' } });
  const error = await rejection(collect(subscribe({ url: 'http://h', grid, fetch })));
  assert.match(error.grpcMessage, /not gRPC-web/);
});

test('a stream that ends without a status is UNAVAILABLE', async () => {
  const error = await rejection(collect(subscribe({ url: 'http://h', grid, fetch: fakeFetch({ chunks: [frame(messages[0])] }) })));
  assert.equal(error.code, Code.UNAVAILABLE);
});

test('a network failure is UNAVAILABLE, marked as such', async () => {
  const fetch = async () => {
    throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
  };
  const error = await rejection(collect(subscribe({ url: 'http://h:9', grid, fetch })));
  assert.equal(error.code, Code.UNAVAILABLE);
  assert.equal(error.network, true);
  assert.match(error.grpcMessage, /cannot reach http:\/\/h:9 \(ECONNREFUSED\)/);
});

test('aborting the signal ends the call and aborts the fetch', async () => {
  const calls = [];
  const fetch = fakeFetch({ chunks: [frame(messages[0])], hang: true, calls });
  const controller = new AbortController();
  const got = [];
  const done = rejection(
    (async () => {
      for await (const m of subscribe({ url: 'http://h', grid, fetch, signal: controller.signal })) {
        got.push(m);
        controller.abort();
      }
    })(),
  );
  const error = await done;
  assert.equal(error.code, Code.CANCELLED);
  assert.equal(got.length, 1);
  assert.equal(calls[0].init.signal.aborted, true);
});

test('breaking out of the loop aborts the fetch', async () => {
  const calls = [];
  const fetch = fakeFetch({ chunks: [frame(messages[0])], hang: true, calls });
  for await (const m of subscribe({ url: 'http://h', grid, fetch })) {
    assert.ok(m.snapshot);
    break;
  }
  assert.equal(calls[0].init.signal.aborted, true);
});

test('listGrids returns the grids', async () => {
  const body = bytesField(1, [...bytesField(1, [...str(1, 'acme'), ...str(2, 'orders'), ...str(3, 'g')]), ...uint(3, 1)]);
  const calls = [];
  const fetch = fakeFetch({ chunks: [frame(Uint8Array.from(body)), trailerFrame('grpc-status:0\r\n')], calls });
  const grids = await listGrids({ url: 'http://h', token: 't', team: 'acme', fetch });
  assert.deepEqual(grids, [{ grid: { team: 'acme', app: 'orders', grid: 'g' }, columns: [], live: true }]);
  assert.equal(calls[0].url, 'http://h/aerogrid.v1.GridService/ListGrids');
});

// --- The grid model. ----------------------------------------------------------------------------

test('the grid model applies snapshots and changes', () => {
  const model = new GridModel();
  assert.equal(model.ready, false);
  assert.deepEqual(
    model.apply({ snapshot: { sequence: 1, columns: ['a', 'b'], rows: [{ key: 'y', values: [1, 2] }, { key: 'x', values: [3] }] } }),
    { snapshot: true },
  );
  assert.equal(model.ready, true);
  assert.deepEqual(model.rows.get('x'), [3, null]);
  const changed = model.apply({
    changes: {
      sequence: 2,
      rows: [
        { key: 'y', updated: { columns: [1], values: [20] } },
        { key: 'z', updated: { columns: [0, 1], values: ['new', true] } },
        { key: 'x', deleted: true },
        { key: 'w', updated: { columns: [5], values: [1] } },
      ],
    },
  });
  assert.deepEqual([...changed.keys].sort(), ['w', 'x', 'y', 'z']);
  assert.deepEqual(model.rows.get('y'), [1, 20]);
  assert.deepEqual(model.rows.get('z'), ['new', true]);
  assert.equal(model.rows.has('x'), false);
  assert.deepEqual(model.rows.get('w'), [null, null], 'a column beyond the snapshot is ignored');
  assert.equal(model.get('y', 'b'), 20);
  assert.equal(model.get('y', 'nope'), undefined);
  assert.deepEqual(model.sortedKeys(), ['w', 'y', 'z']);
  assert.equal(model.apply({ heartbeat: { sequence: 3 } }), null);
  assert.equal(model.sequence, 3);
  model.apply({ snapshot: { sequence: 4, columns: ['c'], rows: [] } });
  assert.equal(model.rows.size, 0, 'a new snapshot replaces everything');
  assert.deepEqual(model.columns, ['c']);
});

// --- Against the Rust side. ---------------------------------------------------------------------

test('the model makes of bytes the Rust side encoded what the Rust model makes of them', () => {
  // Written by aerogrid-proto's model test (`UPDATE_EXPECT=1 cargo test -p aerogrid-proto`),
  // which checks that they are its encoding and its grid: prost's bytes, not this file's writer.
  const fixtures = new URL('./fixtures/', import.meta.url);
  const bytes = new Uint8Array(readFileSync(new URL('grid-stream.bin', fixtures)));
  const expected = JSON.parse(readFileSync(new URL('grid-stream.json', fixtures), 'utf8'));
  const model = new GridModel();
  // Fed in chunks of every size from 1 to 7 bytes, as a network might split them.
  const parser = new FrameParser();
  let messages = 0;
  for (let at = 0, size = 1; at < bytes.length; at += size, size = (size % 7) + 1) {
    for (const { trailer, data } of parser.push(bytes.subarray(at, at + size))) {
      assert.equal(trailer, false);
      model.apply(decodeSubscribeResponse(data));
      messages++;
    }
  }
  assert.equal(messages, 4);
  assert.equal(parser.pending, 0);
  assert.deepEqual(model.columns, expected.columns);
  assert.deepEqual(Object.fromEntries(model.rows), expected.rows);
  assert.equal(model.sequence, expected.sequence);
});
