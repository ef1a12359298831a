// Builds the browser code editor: Monaco (editor core, diff editor, Python tokenizer, no other
// languages or language services) plus AeroGrid's small API (editor.js), with esbuild.
//
//   node frontend/editor/build.mjs            (also run by Trunk as a pre_build hook, Trunk.toml)
//     --force    build even when no input changed     --quiet     print errors only
//     --api      print the aerogrid API (JSON) read from the stubs, and stop
//     --analyse  also print what the Monaco chunk is made of
//
// Output, in target/editor/ (generated, under the ignored /target; copied into the site at
// /editor/ by the copy-dir link in frontend/index.html):
//   editor.js             small loader: defines window.AeroGridEditor; imports the rest on first use
//   chunks/monaco-*.js    Monaco + the aerogrid completion/hover providers (monaco.js)
//   editor.css            Monaco's styles, linked by editor.js before it imports Monaco
//   editor.worker.js      Monaco's editor worker (classic worker script)
//   codicon-*.ttf         Monaco's icon font, referenced by editor.css
//
// The output is outside frontend/ on purpose: `trunk serve` watches frontend/, and a hook that
// writes into the watched tree would make every build trigger the next one.
//
// Offline: needs only node_modules (npm packages esbuild and monaco-editor, pinned in
// frontend/package.json). The aerogrid API for completion and hover is read from the type stubs
// connector/python/aerogrid/__init__.pyi at build time. Nothing is rebuilt when no input changed.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const frontend = resolve(here, '..');
const root = resolve(frontend, '..');
const outdir = join(root, 'target', 'editor');
const stampFile = join(root, 'target', 'editor.stamp');
const stubFile = join(root, 'connector', 'python', 'aerogrid', '__init__.pyi');

const require = createRequire(join(frontend, 'package.json'));
const monacoDir = join(frontend, 'node_modules', 'monaco-editor');
const editorMain = join(monacoDir, 'esm', 'vs', 'editor', 'editor.main.js');
if (!existsSync(editorMain) || !existsSync(join(frontend, 'node_modules', 'esbuild'))) {
  console.error('editor: esbuild or monaco-editor is missing: run `npm ci` in frontend/');
  process.exit(1);
}

const force = process.argv.includes('--force') || process.argv.includes('--api');
const quiet = process.argv.includes('--quiet');
const log = (...args) => { if (!quiet) console.log(...args); };

// ---------------------------------------------------------------------------------------------
// Skip the build when no input changed (Trunk runs this hook before every build).

function inputsHash() {
  const hash = createHash('sha256');
  const files = [
    ...readdirSync(here).filter((f) => /\.(m?js|json)$/.test(f)).sort().map((f) => join(here, f)),
    stubFile,
    join(frontend, 'package-lock.json'),
  ];
  for (const file of files) {
    hash.update(relative(root, file));
    hash.update(readFileSync(file));
  }
  return hash.digest('hex');
}

// The stamp holds the inputs' hash and then the output files, one a line.
const hash = inputsHash();
function upToDate() {
  if (force || !existsSync(stampFile)) return false;
  const [stamped, ...files] = readFileSync(stampFile, 'utf8').split('\n').filter(Boolean);
  return stamped === hash && files.length > 0 && files.every((f) => existsSync(join(outdir, f)));
}
if (upToDate()) {
  log('editor: up to date (target/editor)');
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// The aerogrid API, from the type stubs: top-level classes, functions and annotated names, and the
// methods and attributes of each class, with signatures and docstrings.

/** Splits Python source into logical lines ({indent, text, line}), without comments. */
function logicalLines(src) {
  const out = [];
  let buf = '';
  let depth = 0;
  let line = 1;
  let startLine = 1;
  let i = 0;
  const push = () => {
    const text = buf.trim();
    if (text) out.push({ indent: buf.length - buf.trimStart().length, text, line: startLine });
    buf = '';
  };
  while (i < src.length) {
    const c = src[i];
    if (c === '"' || c === "'") {
      const quote = src.startsWith(c.repeat(3), i) ? c.repeat(3) : c;
      let j = i + quote.length;
      while (j < src.length && !src.startsWith(quote, j)) {
        if (src[j] === '\\') j++;
        else if (quote.length === 1 && src[j] === '\n') break; // unterminated: stop at the line end
        j++;
      }
      j = Math.min(src.length, j + quote.length);
      const literal = src.slice(i, j);
      line += (literal.match(/\n/g) || []).length;
      buf += literal;
      i = j;
    } else if (c === '#') {
      while (i < src.length && src[i] !== '\n') i++;
    } else if (c === '\n') {
      line++;
      if (depth > 0) buf += ' ';
      else if (buf.endsWith('\\')) buf = buf.slice(0, -1) + ' ';
      else { push(); startLine = line; }
      i++;
    } else {
      if ('([{'.includes(c)) depth++;
      else if (')]}'.includes(c)) depth = Math.max(0, depth - 1);
      if (!buf.trim()) startLine = line;
      buf += c;
      i++;
    }
  }
  push();
  return out;
}

/** The value of a statement that is only a string literal (a docstring), else null. */
function docstring(text) {
  const m = /^[rRuU]?("""|'''|"|')([\s\S]*)\1$/.exec(text);
  if (!m || m[2].includes(m[1])) return null;
  let body = m[2];
  if (!/^[rR]/.test(text)) {
    body = body.replace(/\\(["'\\])/g, '$1').replace(/\\n/g, '\n').replace(/\\t/g, '\t');
  }
  return cleandoc(body);
}

/** Python's inspect.cleandoc: strip the first line, dedent the rest, drop blank edges. */
function cleandoc(doc) {
  const lines = doc.replace(/\t/g, '        ').split('\n');
  const rest = lines.slice(1).filter((l) => l.trim());
  const margin = rest.length ? Math.min(...rest.map((l) => l.length - l.trimStart().length)) : 0;
  const result = [lines[0].trim(), ...lines.slice(1).map((l) => l.slice(margin).trimEnd())];
  while (result.length && !result[0]) result.shift();
  while (result.length && !result[result.length - 1]) result.pop();
  return result.join('\n');
}

/** Index just after the bracket matching the one at `open`, skipping strings. */
function matchBracket(text, open) {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'") {
      const j = text.indexOf(c, i + 1);
      i = j < 0 ? text.length : j;
    } else if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c) && --depth === 0) return i + 1;
  }
  return text.length;
}

/** Index of the first `:` at bracket depth 0 from `from`, or -1. */
function headerColon(text, from) {
  let depth = 0;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    else if (c === ':' && depth === 0) return i;
  }
  return -1;
}

const tidy = (s) => s.replace(/\s+/g, ' ').replace(/([([{]) /g, '$1').replace(/ ([)\]}])/g, '$1')
  .replace(/,\s*([)\]}])/g, '$1').trim();

/** Splits at the commas at bracket depth 0. */
function splitTop(text) {
  const parts = [];
  let depth = 0;
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if ('([{'.includes(c)) depth++;
    else if (')]}'.includes(c)) depth--;
    else if (c === ',' && depth === 0) { parts.push(text.slice(from, i)); from = i + 1; }
  }
  parts.push(text.slice(from));
  return parts;
}

/** Drops a method's first parameter (self or cls) from its parameter list text "(...)". */
function dropReceiver(params) {
  return `(${splitTop(params.slice(1, -1)).slice(1).join(',').trim()})`;
}

function parseBlock(stmts, start, indent, inClass) {
  const items = [];
  let decorators = [];
  let i = start;
  // Statements deeper than the header's body, e.g. inside a def body, belong to that header.
  const body = (header) => {
    const block = [];
    let j = header + 1;
    while (j < stmts.length && stmts[j].indent > stmts[header].indent) block.push(stmts[j++]);
    return { block, next: j };
  };
  while (i < stmts.length && stmts[i].indent >= indent) {
    const s = stmts[i];
    if (s.indent > indent) { i++; continue; }
    const text = s.text;
    if (text.startsWith('@')) { decorators.push(text.slice(1).trim()); i++; continue; }

    let m;
    if ((m = /^class\s+([A-Za-z_]\w*)\s*/.exec(text))) {
      const name = m[1];
      let pos = m[0].length;
      let bases = [];
      if (text[pos] === '(') {
        const end = matchBracket(text, pos);
        bases = splitTop(text.slice(pos + 1, end - 1)).map(tidy).filter(Boolean);
        pos = end;
      }
      const colon = headerColon(text, pos);
      const inline = colon >= 0 ? text.slice(colon + 1).trim() : '';
      const { block, next } = body(i);
      let doc = inline ? docstring(inline) : null;
      let members = [];
      if (block.length) {
        if (!doc) doc = docstring(block[0].text);
        members = parseBlock(block, 0, block[0].indent, true);
      }
      items.push({ kind: 'class', name, bases, doc: doc || '', members, line: s.line });
      i = next;
    } else if ((m = /^(async\s+)?def\s+([A-Za-z_]\w*)\s*\(/.exec(text))) {
      const name = m[2];
      const open = m[0].length - 1;
      const end = matchBracket(text, open);
      let params = text.slice(open, end);
      const colon = headerColon(text, end);
      const arrow = text.slice(end, colon < 0 ? undefined : colon).trim();
      const returns = arrow.startsWith('->') ? tidy(arrow.slice(2)) : '';
      const inline = colon >= 0 ? text.slice(colon + 1).trim() : '';
      const { block, next } = body(i);
      const doc = (inline && docstring(inline)) || (block.length && docstring(block[0].text)) || '';
      const isStatic = decorators.includes('staticmethod');
      const isProperty = decorators.includes('property');
      if (inClass && !isStatic) params = dropReceiver(params);
      const signature = `${name}${tidy(params)}${returns ? ` -> ${returns}` : ''}`;
      const kind = inClass ? (isProperty ? 'property' : 'method') : 'function';
      const previous = items.find((it) => it.name === name && it.kind === kind);
      if (previous && decorators.includes('overload')) {
        previous.signatures.push(signature);
        previous.doc = previous.doc || doc;
      } else if (previous) {
        // The implementation after @overload variants: keep the overloads, take its doc.
        previous.doc = previous.doc || doc;
      } else {
        items.push({
          kind, name, async: Boolean(m[1]), signatures: [signature], returns, doc, line: s.line,
          ...(isProperty ? { type: returns } : {}),
        });
      }
      i = next;
    } else if ((m = /^([A-Za-z_]\w*)\s*:\s*(.+?)(?:\s*=\s*(.*))?$/.exec(text))) {
      const name = m[1];
      const type = tidy(m[2]);
      const next = stmts[i + 1];
      const doc = next && next.indent === indent ? docstring(next.text) : null;
      items.push({ kind: inClass ? 'attribute' : 'variable', name, type, doc: doc || '', line: s.line });
      i += doc !== null ? 2 : 1;
    } else if ((m = /^([A-Za-z_]\w*)\s*=\s*(.+)$/.exec(text))) {
      const next = stmts[i + 1];
      const doc = next && next.indent === indent ? docstring(next.text) : null;
      items.push({ kind: 'alias', name: m[1], value: tidy(m[2]), doc: doc || '', line: s.line });
      i += doc !== null ? 2 : 1;
    } else {
      i++;
    }
    decorators = [];
  }
  return items;
}

/** The JSON module imported by the editor: { module: {doc}, names: {Name: entry} }. */
function stubApi(src) {
  const stmts = logicalLines(src);
  const top = parseBlock(stmts, 0, 0, false);
  const isPublic = (n) => !n.startsWith('_');
  const names = {};
  const classNames = new Set(top.filter((t) => t.kind === 'class').map((t) => t.name));
  for (const item of top) {
    // Type aliases (`Scalar = ...`) and TypeVars are not names a program uses from the module.
    if (!isPublic(item.name) || item.kind === 'alias') continue;
    if (item.kind === 'class') {
      const init = item.members.find((m) => m.name === '__init__');
      const params = init ? init.signatures[0].replace(/^__init__/, '').replace(/ -> None$/, '') : '';
      const members = {};
      // Members of base classes in the stubs come first, then the class's own.
      const own = [];
      for (const base of item.bases) {
        const b = top.find((t) => t.kind === 'class' && t.name === base);
        if (b) own.push(...b.members);
      }
      own.push(...item.members);
      for (const mem of own) {
        if (!isPublic(mem.name) || mem.kind === 'alias') continue;
        const entry = { kind: mem.kind, doc: mem.doc };
        if (mem.signatures) { entry.signatures = mem.signatures; entry.returns = mem.returns; }
        if (mem.type !== undefined) entry.type = mem.type;
        members[mem.name] = entry;
      }
      names[item.name] = {
        kind: 'class',
        signature: `class ${item.name}${params}`,
        bases: item.bases,
        doc: item.doc,
        members,
      };
    } else if (item.kind === 'function') {
      names[item.name] = { kind: 'function', signatures: item.signatures, returns: item.returns, doc: item.doc };
    } else {
      names[item.name] = { kind: 'variable', type: item.type, doc: item.doc };
    }
  }
  // Return types that name a class of the module, so the editor can follow `app.Grid(...)`.
  for (const entry of Object.values(names)) {
    for (const mem of Object.values(entry.members || {})) {
      const ret = (mem.returns || mem.type || '').replace(/^aerogrid\./, '');
      if (classNames.has(ret)) mem.returnsClass = ret;
    }
  }
  const moduleDoc = src.split('\n').filter((l) => l.startsWith('#')).slice(0, 1)
    .map((l) => l.replace(/^#\s?/, '')).join('\n');
  return { module: { name: 'aerogrid', doc: moduleDoc }, names };
}

const api = stubApi(readFileSync(stubFile, 'utf8'));
if (!api.names.App || !api.names.App.members.topic) {
  throw new Error(`editor: no App.topic found in ${relative(root, stubFile)}: the stub parser needs a look`);
}
if (process.argv.includes('--api')) {
  console.log(JSON.stringify(api, null, 2));
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------
// Monaco's editor core: editor.main.js without its language registrations, the JSON/CSS/HTML/
// TypeScript language services, the LSP client and the DROP list below. Python is imported by
// monaco.js.

// Editor contributions left out too: inline completions (ghost text; no provider here, 260 KB).
const DROP = [
  '/contrib/inlineCompletions/browser/inlineCompletions.contribution.js',
  '/contrib/suggest/browser/suggestInlineCompletions.js',
];
function monacoCore() {
  const src = readFileSync(editorMain, 'utf8');
  const dropped = new Set();
  const kept = [];
  for (const line of src.split('\n')) {
    const imp = /^import (?:\* as (\w+) from )?'([^']+)';$/.exec(line);
    const exp = /^export \{ (\w+) as \w+ \};$/.exec(line);
    if (imp && (/(^|\/)languages\/|monaco-lsp-client/.test(imp[2]) || DROP.some((d) => imp[2].includes(d)))) {
      if (imp[1]) dropped.add(imp[1]);
    } else if (exp && dropped.has(exp[1])) {
      // re-export of a dropped language service
    } else {
      kept.push(line);
    }
  }
  for (const d of DROP) {
    if (!src.includes(d)) throw new Error(`editor: ${d} is not in ${editorMain} (monaco-editor changed?)`);
  }
  const contribs = kept.filter((l) => l.startsWith("import '")).length;
  if (contribs < 40 || !kept.some((l) => /^export \{.*\beditor\b.*\} from '\.\/editor\.api\.js';$/.test(l))) {
    throw new Error(`editor: unexpected layout of ${editorMain} (monaco-editor changed?)`);
  }
  return kept.join('\n');
}

const virtualModules = {
  name: 'aerogrid-virtual',
  setup(build) {
    build.onResolve({ filter: /^aerogrid:(monaco-core|api)$/ }, (args) => ({
      path: args.path.slice('aerogrid:'.length),
      namespace: 'aerogrid',
    }));
    build.onLoad({ filter: /^monaco-core$/, namespace: 'aerogrid' }, () => ({
      contents: monacoCore(),
      resolveDir: dirname(editorMain),
      loader: 'js',
    }));
    build.onLoad({ filter: /^api$/, namespace: 'aerogrid' }, () => ({
      contents: JSON.stringify(api),
      loader: 'json',
    }));
  },
};

// ---------------------------------------------------------------------------------------------
// Bundle.

const esbuild = require('esbuild');

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  legalComments: 'none',
  target: ['es2022'],
  logLevel: quiet ? 'error' : 'warning',
  absWorkingDir: here,
  nodePaths: [join(frontend, 'node_modules')],
};

// editor.js is the entry; its dynamic import of monaco.js becomes chunks/monaco-<hash>.js. esbuild
// puts the CSS of everything editor.js imports, dynamically too, into editor.css, which editor.js
// links before it imports Monaco.
const result = await esbuild.build({
  ...common,
  entryPoints: [join(here, 'editor.js')],
  outdir,
  format: 'esm',
  splitting: true,
  platform: 'browser',
  entryNames: '[name]',
  chunkNames: 'chunks/[name]-[hash]',
  assetNames: '[name]-[hash]',
  loader: { '.ttf': 'file' },
  plugins: [virtualModules],
  metafile: true,
});
const css = join(outdir, 'editor.css');
if (!existsSync(css) || !readFileSync(css, 'utf8').includes('.monaco-editor')) {
  throw new Error('editor: esbuild wrote no editor.css with Monaco\'s styles');
}
// esbuild also writes the same styles as chunks/monaco-*.css, which nothing loads.
for (const f of readdirSync(join(outdir, 'chunks'))) {
  if (f.endsWith('.css')) rmSync(join(outdir, 'chunks', f));
}
if (process.argv.includes('--analyse')) {
  console.log(await esbuild.analyzeMetafile(result.metafile, { verbose: false }));
}

// The worker is its own classic script (no imports): works wherever `new Worker(url)` does.
await esbuild.build({
  ...common,
  entryPoints: [join(monacoDir, 'esm', 'vs', 'editor', 'editor.worker.js')],
  outfile: join(outdir, 'editor.worker.js'),
  format: 'iife',
  platform: 'browser',
});

// ---------------------------------------------------------------------------------------------
// Report sizes.

function walk(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const outputs = walk(outdir).map((f) => relative(outdir, f)).sort();
writeFileSync(stampFile, [hash, ...outputs].join('\n') + '\n');

if (!quiet) {
  const kb = (n) => `${(n / 1024).toFixed(1)} KB`.padStart(10);
  let raw = 0;
  let gz = 0;
  const rows = outputs.map((f) => join(outdir, f)).map((file) => {
    const data = readFileSync(file);
    const z = gzipSync(data, { level: 9 }).length;
    raw += data.length;
    gz += z;
    return `  ${kb(data.length)} ${kb(z)} gz  ${relative(outdir, file)}`;
  });
  log(`editor: built ${relative(root, outdir)}/`);
  log(rows.join('\n'));
  log(`  ${kb(raw)} ${kb(gz)} gz  total`);
}
