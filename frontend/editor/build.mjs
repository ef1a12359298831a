// Builds the browser code editor: Monaco (editor core, diff editor, Python tokenizer, no other
// languages or language services) plus AeroGrid's small API (editor.js), with esbuild.
//
//   node frontend/editor/build.mjs            (also run by Trunk as a pre_build hook, Trunk.toml)
//     --force    build even when no input changed     --quiet     print errors only
//     --api      print the aerogrid API (JSON) the editor completes from, and stop
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
// frontend/package.json). The aerogrid API for completion and hover is aerogrid-api.json, which the
// backend generates from the type stubs connector/python/aerogrid/__init__.pyi with the parser its
// validator uses (a backend test checks it is current: `UPDATE_EXPECT=1 cargo test -p
// aerogrid-backend stubs` writes it). Nothing is rebuilt when no input changed.

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
const apiFile = join(here, 'aerogrid-api.json');

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
// The aerogrid API, generated from the type stubs: top-level classes, functions and annotated
// names, and the methods and attributes of each class, with signatures and docstrings.

const api = JSON.parse(readFileSync(apiFile, 'utf8'));
if (!api.names.App || !api.names.App.members.topic) {
  throw new Error(`editor: no App.topic in ${relative(root, apiFile)}: regenerate it from the stubs`);
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
