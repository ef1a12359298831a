// The add-in's manifest and served files, offline: the manifest is well-formed XML with what
// Office requires, in the order its schema requires; every URL in it is under
// {{PUBLIC_URL}}/excel/ and names a file the build wrote; the functions' metadata matches what
// functions.js registers; the icons are PNGs of the sizes they claim; the pages load only files
// of their own (and Office.js from Microsoft's CDN).

import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import vm from 'node:vm';
import zlib from 'node:zlib';

import { build, distDir, loadFunctions } from '../testing/support.mjs';
import { XmlError, at, child, children, parseXml, walk } from '../testing/xml.mjs';

const written = await build();
const manifestText = await readFile(path.join(distDir, 'manifest.xml'), 'utf8');
const PUBLIC = '{{PUBLIC_URL}}/excel/';
const OFFICE_JS = 'https://appsforoffice.microsoft.com/lib/1/hosted/office.js';
const NS = {
  app: 'http://schemas.microsoft.com/office/appforoffice/1.1',
  overrides: 'http://schemas.microsoft.com/office/taskpaneappversionoverrides',
  bt: 'http://schemas.microsoft.com/office/officeappbasictypes/1.0',
  xsi: 'http://www.w3.org/2001/XMLSchema-instance',
};

test('the XML parser used here rejects what is not well-formed', () => {
  for (const bad of [
    '<a><b></a>',
    '<a x="1" x="2"/>',
    '<a x=1/>',
    '<a>&nbsp;</a>',
    '<a/><b/>',
    '<a>',
    'text<a/>',
    '<a><p:b/></a>',
    '<a><!-- a -- b --></a>',
  ]) {
    assert.throws(() => parseXml(bad), XmlError, bad);
  }
  const root = parseXml('<?xml version="1.0"?><a xmlns:p="u" k="&amp;&#65;"><p:b>t&lt;</p:b></a>');
  assert.equal(root.attrs.k, '&A');
  assert.equal(root.children[0].text, 't<');
});

test('the manifest is well-formed, with the namespaces Office expects', () => {
  const root = parseXml(manifestText);
  assert.equal(root.name, 'OfficeApp');
  assert.equal(root.attrs.xmlns, NS.app);
  assert.equal(root.attrs['xmlns:xsi'], NS.xsi);
  assert.equal(root.attrs['xmlns:bt'], NS.bt);
  assert.equal(root.attrs['xsi:type'], 'TaskPaneApp');
  assert.match(manifestText, /^<\?xml version="1\.0" encoding="UTF-8"/);
});

test('the manifest has the required elements, in the schema order', () => {
  const root = parseXml(manifestText);
  const order = [
    'Id',
    'Version',
    'ProviderName',
    'DefaultLocale',
    'DisplayName',
    'Description',
    'IconUrl',
    'HighResolutionIconUrl',
    'SupportUrl',
    'AppDomains',
    'Hosts',
    'Requirements',
    'DefaultSettings',
    'Permissions',
    'VersionOverrides',
  ];
  const names = root.children.map((c) => c.name);
  for (const name of names) assert.ok(order.includes(name), `unexpected <${name}>`);
  const positions = names.map((name) => order.indexOf(name));
  assert.deepEqual(positions, [...positions].sort((a, b) => a - b), `order: ${names.join(', ')}`);
  for (const required of ['Id', 'Version', 'ProviderName', 'DefaultLocale', 'DisplayName', 'Description', 'Hosts', 'DefaultSettings', 'Permissions', 'VersionOverrides']) {
    assert.equal(children(root, required).length, 1, `<${required}>`);
  }

  assert.match(child(root, 'Id').text, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.match(child(root, 'Version').text, /^\d+\.\d+\.\d+\.\d+$/);
  assert.ok(child(root, 'ProviderName').text.trim());
  assert.equal(child(root, 'DefaultLocale').text, 'en-US');
  const displayName = child(root, 'DisplayName').attrs.DefaultValue;
  assert.ok(displayName && displayName.length <= 125);
  const description = child(root, 'Description').attrs.DefaultValue;
  assert.ok(description && description.length <= 250);
  const hosts = children(at(root, 'Hosts'), 'Host');
  assert.deepEqual(hosts.map((h) => h.attrs.Name), ['Workbook']);
  assert.ok(at(root, 'DefaultSettings', 'SourceLocation').attrs.DefaultValue);
  assert.ok(['Restricted', 'ReadDocument', 'ReadAllDocument', 'WriteDocument', 'ReadWriteDocument'].includes(child(root, 'Permissions').text));
  const sets = children(at(root, 'Requirements', 'Sets'), 'Set').map((s) => s.attrs.Name);
  assert.ok(sets.includes('SharedRuntime'));
});

/** The resources of VersionOverrides by id, with their kind. */
function resources(overrides) {
  const out = new Map();
  const res = child(overrides, 'Resources');
  for (const [group, item, kind] of [
    ['bt:Images', 'bt:Image', 'image'],
    ['bt:Urls', 'bt:Url', 'url'],
    ['bt:ShortStrings', 'bt:String', 'short'],
    ['bt:LongStrings', 'bt:String', 'long'],
  ]) {
    for (const list of children(res, group)) {
      for (const entry of children(list, item)) {
        assert.ok(!out.has(entry.attrs.id), `resource id ${entry.attrs.id} repeated`);
        out.set(entry.attrs.id, { kind, value: entry.attrs.DefaultValue });
        if (kind === 'short') assert.ok(entry.attrs.DefaultValue.length <= 125, entry.attrs.id);
        if (kind === 'long') assert.ok(entry.attrs.DefaultValue.length <= 250, entry.attrs.id);
      }
    }
  }
  return out;
}

test('VersionOverrides declare custom functions in a shared runtime, and a task pane button', () => {
  const root = parseXml(manifestText);
  const overrides = child(root, 'VersionOverrides');
  assert.equal(overrides.attrs.xmlns, NS.overrides);
  assert.equal(overrides.attrs['xsi:type'], 'VersionOverridesV1_0');
  const res = resources(overrides);
  const resolve = (resid, kind) => {
    const entry = res.get(resid);
    assert.ok(entry, `resid ${resid} is defined`);
    assert.equal(entry.kind, kind, `resid ${resid} is a ${kind}`);
    return entry.value;
  };
  // Every resid anywhere resolves.
  for (const element of walk(overrides)) {
    if (element.attrs.resid) assert.ok(res.has(element.attrs.resid), `resid ${element.attrs.resid} on <${element.name}>`);
  }

  const host = at(overrides, 'Hosts', 'Host');
  assert.equal(host.attrs['xsi:type'], 'Workbook');
  const runtime = at(host, 'Runtimes', 'Runtime');
  assert.equal(runtime.attrs.lifetime, 'long');
  const runtimeUrl = resolve(runtime.attrs.resid, 'url');

  const points = children(at(host, 'AllFormFactors'), 'ExtensionPoint');
  const cf = points.find((p) => p.attrs['xsi:type'] === 'CustomFunctions');
  assert.ok(cf, 'a CustomFunctions extension point');
  const script = resolve(at(cf, 'Script', 'SourceLocation').attrs.resid, 'url');
  const page = resolve(at(cf, 'Page', 'SourceLocation').attrs.resid, 'url');
  const metadata = resolve(at(cf, 'Metadata', 'SourceLocation').attrs.resid, 'url');
  const namespace = resolve(child(cf, 'Namespace').attrs.resid, 'short');
  assert.equal(script, `${PUBLIC}functions.js`);
  assert.equal(metadata, `${PUBLIC}functions.json`);
  assert.equal(namespace, 'AEROGRID');
  // The shared runtime: the functions' page, the runtime and the task pane are one page.
  const taskpane = at(root, 'DefaultSettings', 'SourceLocation').attrs.DefaultValue;
  assert.equal(page, runtimeUrl);
  assert.equal(taskpane, runtimeUrl);
  assert.equal(runtimeUrl, `${PUBLIC}taskpane.html`);

  const desktop = child(host, 'DesktopFormFactor');
  assert.equal(resolve(child(desktop, 'FunctionFile').attrs.resid, 'url'), runtimeUrl);
  const surface = children(desktop, 'ExtensionPoint').find((p) => p.attrs['xsi:type'] === 'PrimaryCommandSurface');
  assert.ok(surface, 'a ribbon');
  const button = at(surface, 'OfficeTab', 'Group', 'Control');
  assert.equal(button.attrs['xsi:type'], 'Button');
  const action = child(button, 'Action');
  assert.equal(action.attrs['xsi:type'], 'ShowTaskpane');
  assert.equal(resolve(at(action, 'SourceLocation').attrs.resid, 'url'), runtimeUrl);
  const sizes = children(child(button, 'Icon'), 'bt:Image').map((i) => [i.attrs.size, resolve(i.attrs.resid, 'image')]);
  assert.deepEqual(sizes.map(([size]) => size), ['16', '32', '80']);
  for (const [size, url] of sizes) assert.equal(url, `${PUBLIC}icon-${size}.png`);
});

/** Every URL the manifest names: URL-valued attributes and resources. */
function manifestUrls(root) {
  const urls = [];
  for (const element of walk(root)) {
    for (const [name, value] of Object.entries(element.attrs)) {
      if (name === 'xmlns' || name.startsWith('xmlns:')) continue;
      const urlElement = /Url$/.test(element.name) || ['bt:Url', 'bt:Image', 'SourceLocation'].includes(element.name);
      if (/^(https?:|\{\{)/.test(value) || (name === 'DefaultValue' && urlElement)) {
        urls.push(value);
      }
    }
    if (/^(https?:|\{\{)/.test(element.text.trim())) urls.push(element.text.trim());
  }
  return urls;
}

test('every URL in the manifest is under {{PUBLIC_URL}}/excel/ and names a built file', async () => {
  const root = parseXml(manifestText);
  const urls = manifestUrls(root);
  assert.ok(urls.length >= 8, `found ${urls.length} URLs`);
  const files = new Set(await readdir(distDir));
  for (const url of urls) {
    assert.ok(url.startsWith(PUBLIC), `${url} starts with ${PUBLIC}`);
    const file = url.slice(PUBLIC.length);
    assert.ok(files.has(file), `${url}: excel/dist/${file} exists`);
  }
  // Nothing else in the file looks like an address (namespace names aside).
  const withoutNamespaces = manifestText.replace(/xmlns(:\w+)?="[^"]*"/g, '').replace(/<!--[\s\S]*?-->/g, '');
  for (const match of withoutNamespaces.matchAll(/https?:\/\/[^"\s<]+/g)) {
    assert.fail(`an address outside {{PUBLIC_URL}}: ${match[0]}`);
  }
});

test('the build writes the files the Rust server serves', () => {
  for (const name of ['manifest.xml', 'functions.js', 'functions.json', 'taskpane.html', 'taskpane.js', 'taskpane.css', 'help.html', 'icon-16.png', 'icon-32.png', 'icon-64.png', 'icon-80.png']) {
    assert.ok(written.includes(name), name);
  }
});

test('functions.json matches what functions.js registers', async () => {
  const metadata = JSON.parse(await readFile(path.join(distDir, 'functions.json'), 'utf8'));
  const ids = metadata.functions.map((f) => f.id);
  assert.deepEqual(ids, ['VALUE', 'GRID']);
  for (const f of metadata.functions) {
    assert.equal(f.name, f.id);
    assert.match(f.id, /^[A-Za-z0-9.]+$/);
    assert.deepEqual(f.options, { stream: true, cancelable: true });
    assert.ok(f.description);
    for (const p of f.parameters) {
      assert.ok(p.name && p.description, `${f.id}.${p.name} is described`);
      assert.ok(['string', 'number', 'boolean', 'any'].includes(p.type));
      assert.ok(['scalar', 'matrix'].includes(p.dimensionality));
    }
    // Optional parameters only at the end.
    const optional = f.parameters.map((p) => Boolean(p.optional));
    assert.deepEqual(optional, [...optional].sort((a, b) => a - b), `${f.id}: optional parameters last`);
  }
  const [value, grid] = metadata.functions;
  assert.deepEqual(value.parameters.map((p) => p.name), ['app', 'grid', 'row', 'column']);
  assert.equal(value.result.dimensionality, 'scalar');
  assert.deepEqual(grid.parameters.map((p) => p.name), ['app', 'grid', 'columns']);
  assert.equal(grid.result.dimensionality, 'matrix');

  const { functions, AeroGrid } = await loadFunctions();
  assert.deepEqual(Object.keys(functions).sort(), [...ids].sort());
  // The declared parameters, then the invocation.
  assert.equal(functions.VALUE.length, value.parameters.length + 1);
  assert.equal(functions.GRID.length, grid.parameters.length + 1);
  assert.deepEqual(Object.keys(AeroGrid.storageKeys).sort(), ['rate', 'token', 'url']);
  assert.equal(AeroGrid.storageKeys.url, 'aerogrid.url');
  assert.equal(AeroGrid.storageKeys.token, 'aerogrid.token');
});

test('functions.js is a classic script that runs without modules or Office present', async () => {
  const source = await readFile(path.join(distDir, 'functions.js'), 'utf8');
  // Compiles as a script (module syntax would throw here).
  new vm.Script(source);
  assert.doesNotMatch(source, /^\s*(import|export)\s/m);
  // In a bare browser-like scope (no CustomFunctions, no OfficeRuntime) it defines AeroGrid.
  const context = vm.createContext({ TextEncoder, TextDecoder, AbortController, setTimeout, clearTimeout });
  vm.runInContext(source, context);
  assert.equal(typeof context.AeroGrid.listGrids, 'function');
});

/** Width, height and validity of a PNG. */
function pngInfo(bytes) {
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  let pos = 8;
  let width;
  let height;
  const idat = [];
  let ended = false;
  while (pos < bytes.length) {
    const length = bytes.readUInt32BE(pos);
    const type = bytes.toString('ascii', pos + 4, pos + 8);
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    const crc = bytes.readUInt32BE(pos + 8 + length);
    assert.equal(crc, zlib.crc32 ? zlib.crc32(bytes.subarray(pos + 4, pos + 8 + length)) : crc, `${type} CRC`);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
    }
    if (type === 'IDAT') idat.push(data);
    if (type === 'IEND') ended = true;
    pos += 12 + length;
  }
  assert.ok(ended, 'IEND');
  const raw = zlib.inflateSync(Buffer.concat(idat));
  assert.equal(raw.length, height * (width * 4 + 1), 'pixel data of the right size');
  return { width, height };
}

test('the icons are PNGs of the sizes their names say', async () => {
  for (const size of [16, 32, 64, 80]) {
    const info = pngInfo(await readFile(path.join(distDir, `icon-${size}.png`)));
    assert.deepEqual(info, { width: size, height: size });
  }
});

test('the pages load only their own files, and Office.js from Microsoft', async () => {
  const files = new Set(await readdir(distDir));
  for (const page of ['taskpane.html', 'help.html']) {
    const html = await readFile(path.join(distDir, page), 'utf8');
    const refs = [...html.matchAll(/\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
    assert.ok(refs.length > 0);
    for (const ref of refs) {
      if (ref === OFFICE_JS) continue;
      assert.doesNotMatch(ref, /^[a-z]+:|^\/\//, `${page}: ${ref} is relative`);
      assert.ok(files.has(ref), `${page}: ${ref} is built`);
    }
  }
  const taskpane = await readFile(path.join(distDir, 'taskpane.html'), 'utf8');
  const scripts = [...taskpane.matchAll(/<script src="([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(scripts, [OFFICE_JS, 'functions.js', 'taskpane.js'], 'Office.js, then the functions, then the pane');
});
