// Completion and hover for the `aerogrid` module in Python editors.
//
// The API comes from connector/python/aerogrid/__init__.pyi, as aerogrid-api.json (generated
// by the backend's stub reader, backend/src/validate/stubs.rs). Names are
// resolved with a few regular expressions over the model text (no Python parser, no scopes):
//   import aerogrid [as ag]              `aerogrid.` / `ag.` offers the module's names
//   from aerogrid import App [as A]      `App` is known
//   app = aerogrid.App(...)              `app.` offers App's members (same for any class)
//   grid = app.Grid(...)                 methods returning a class of the module are followed
//   def f(s: aerogrid.Stream)            annotations
//   @app.stream(...) async def f(s)      the first parameter of a stream function is a Stream

import API from 'aerogrid:api';

const NAMES = API.names;
const IDENT = '[A-Za-z_][A-Za-z0-9_]*';

let registered = false;

/** What the names of `text` are bound to: {modules: Set, classes: Map(name → class)}. */
export function analyse(text) {
  const modules = new Set();
  const classes = new Map(); // variable or imported name -> class name in NAMES
  let m;

  const importRe = new RegExp(`^[ \\t]*import[ \\t]+([^#\\n]+)`, 'gm');
  while ((m = importRe.exec(text))) {
    for (const part of m[1].split(',')) {
      const im = new RegExp(`^\\s*aerogrid\\s*(?:as\\s+(${IDENT}))?\\s*$`).exec(part);
      if (im) modules.add(im[1] || 'aerogrid');
    }
  }
  const fromRe = new RegExp(`^[ \\t]*from[ \\t]+aerogrid[ \\t]+import[ \\t]+(\\([^)]*\\)|[^#\\n]+)`, 'gm');
  const imported = new Map(); // local name -> module name (class, function or variable)
  while ((m = fromRe.exec(text))) {
    for (const part of m[1].replace(/[()\\]/g, ' ').split(',')) {
      const im = new RegExp(`^\\s*(${IDENT})\\s*(?:as\\s+(${IDENT}))?\\s*$`).exec(part);
      if (im && NAMES[im[1]]) imported.set(im[2] || im[1], im[1]);
    }
  }

  const moduleAlt = [...modules].map((x) => `${x}\\s*\\.\\s*`).join('|');
  const qualified = `(?:(?:${moduleAlt || '(?!)'})(${IDENT})|(${IDENT}))`;
  // The class a (possibly module-qualified) name refers to, or undefined.
  const classOf = (q, bare) => {
    if (q) return NAMES[q]?.kind === 'class' ? q : undefined;
    const target = imported.get(bare);
    return target && NAMES[target].kind === 'class' ? target : undefined;
  };

  // Annotations: `x: aerogrid.Stream`, `def f(x: Stream)`.
  const annRe = new RegExp(`(${IDENT})\\s*:\\s*${qualified}\\b(?!\\s*[.(\\[])`, 'g');
  while ((m = annRe.exec(text))) {
    const cls = classOf(m[2], m[3]);
    if (cls) classes.set(m[1], cls);
  }
  // Stream functions: the first parameter of a function decorated with `@<app>.stream(...)`.
  const streamFns = [];
  const streamRe = new RegExp(`^[ \\t]*@(${IDENT})\\.stream\\b[^\\n]*\\n(?:[ \\t]*@[^\\n]*\\n)*[ \\t]*(?:async[ \\t]+)?def[ \\t]+${IDENT}\\s*\\(\\s*(${IDENT})`, 'gm');
  while ((m = streamRe.exec(text))) streamFns.push([m[1], m[2]]);

  // Assignments, followed a few times so `grid = app.Grid(...)` works after `app = App(...)`.
  const assignRe = new RegExp(`^[ \\t]*(${IDENT})[ \\t]*(?::[^=\\n]*)?=[ \\t]*(?:${qualified}|(${IDENT})\\s*\\.\\s*(${IDENT}))\\s*\\(`, 'gm');
  for (let pass = 0; pass < 3; pass++) {
    let changed = false;
    assignRe.lastIndex = 0;
    while ((m = assignRe.exec(text))) {
      const [, name, q, bare, recv, method] = m;
      let cls;
      if (recv !== undefined) {
        const recvClass = classes.get(recv);
        cls = recvClass ? NAMES[recvClass].members[method]?.returnsClass : undefined;
      } else {
        cls = classOf(q, bare);
      }
      if (cls && classes.get(name) !== cls) { classes.set(name, cls); changed = true; }
    }
    for (const [app, param] of streamFns) {
      if (classes.get(app) === 'App' && classes.get(param) !== 'Stream' && NAMES.Stream) {
        classes.set(param, 'Stream');
        changed = true;
      }
    }
    if (!changed) break;
  }
  return { modules, imported, classes };
}

const md = (code) => `\`\`\`python\n${code}\n\`\`\``;

function moduleEntryDocs(name) {
  const e = NAMES[name];
  if (e.kind === 'class') return { detail: e.signature, sigs: [e.signature], doc: e.doc };
  if (e.kind === 'function') {
    const sigs = e.signatures.map((s) => `def ${s}`);
    return { detail: sigs[0] + (sigs.length > 1 ? ` (+${sigs.length - 1} overloads)` : ''), sigs, doc: e.doc };
  }
  const sig = `${name}: ${e.type}`;
  return { detail: sig, sigs: [sig], doc: e.doc };
}

function memberDocs(cls, name) {
  const e = NAMES[cls].members[name];
  if (e.signatures) {
    const sigs = e.signatures.map((s) => `def ${cls}.${s}`);
    const detail = `${cls}.${e.signatures[0]}` + (sigs.length > 1 ? ` (+${sigs.length - 1} overload)` : '');
    return { detail, sigs, doc: e.doc };
  }
  const sig = `${cls}.${name}: ${e.type}`;
  return { detail: sig, sigs: [sig], doc: e.doc };
}

/** The name before `.<word>` ending at `column` (1-based, the start of the word) on `line`. */
function receiverBefore(line, column) {
  const before = line.slice(0, column - 1);
  const m = new RegExp(`(?:^|[^A-Za-z0-9_.])(${IDENT})\\s*\\.\\s*$`).exec(before);
  return m ? m[1] : null;
}

/** True when the position is inside a comment or a string (single-line check, good enough). */
function inCommentOrString(line, column) {
  let quote = null;
  for (let i = 0; i < column - 1 && i < line.length; i++) {
    const c = line[i];
    if (quote) {
      if (c === '\\') i++;
      else if (c === quote) quote = null;
    } else if (c === '#') return true;
    else if (c === '"' || c === "'") quote = c;
  }
  return quote !== null;
}

export function registerAerogridPython(monaco) {
  if (registered) return;
  registered = true;
  const { CompletionItemKind } = monaco.languages;
  const kindOf = (kind) => ({
    class: CompletionItemKind.Class,
    function: CompletionItemKind.Function,
    method: CompletionItemKind.Method,
    property: CompletionItemKind.Property,
    attribute: CompletionItemKind.Field,
    variable: CompletionItemKind.Constant,
  })[kind] ?? CompletionItemKind.Variable;

  monaco.languages.registerCompletionItemProvider('python', {
    triggerCharacters: ['.'],
    provideCompletionItems(model, position) {
      const line = model.getLineContent(position.lineNumber);
      const word = model.getWordUntilPosition(position);
      const recv = receiverBefore(line, word.startColumn);
      if (!recv || inCommentOrString(line, position.column)) return { suggestions: [] };
      const { modules, classes } = analyse(model.getValue());
      const range = {
        startLineNumber: position.lineNumber,
        endLineNumber: position.lineNumber,
        startColumn: word.startColumn,
        endColumn: word.endColumn,
      };
      const item = (label, kind, docs, order) => ({
        label,
        kind: kindOf(kind),
        detail: docs.detail,
        documentation: docs.doc ? { value: docs.doc } : undefined,
        insertText: label,
        range,
        sortText: String(order).padStart(4, '0'),
      });
      if (modules.has(recv)) {
        return {
          suggestions: Object.keys(NAMES).map((name, i) => item(name, NAMES[name].kind, moduleEntryDocs(name), i)),
        };
      }
      const cls = classes.get(recv);
      if (cls) {
        const members = NAMES[cls].members;
        return {
          suggestions: Object.keys(members).map((name, i) => item(name, members[name].kind, memberDocs(cls, name), i)),
        };
      }
      return { suggestions: [] };
    },
  });

  monaco.languages.registerHoverProvider('python', {
    provideHover(model, position) {
      const word = model.getWordAtPosition(position);
      if (!word) return null;
      const line = model.getLineContent(position.lineNumber);
      if (inCommentOrString(line, word.startColumn)) return null;
      const { modules, imported, classes } = analyse(model.getValue());
      const recv = receiverBefore(line, word.startColumn);
      let docs = null;
      if (recv && modules.has(recv) && NAMES[word.word]) {
        docs = moduleEntryDocs(word.word);
      } else if (recv && classes.has(recv) && NAMES[classes.get(recv)].members[word.word]) {
        docs = memberDocs(classes.get(recv), word.word);
      } else if (!recv && imported.has(word.word)) {
        docs = moduleEntryDocs(imported.get(word.word));
      } else if (!recv && modules.has(word.word)) {
        docs = { sigs: [`module ${API.module.name}`], doc: API.module.doc };
      } else if (!recv && classes.has(word.word)) {
        const cls = classes.get(word.word);
        docs = { sigs: [`${word.word}: ${cls}`], doc: NAMES[cls].doc };
      }
      if (!docs) return null;
      const contents = [{ value: md(docs.sigs.join('\n')) }];
      if (docs.doc) contents.push({ value: docs.doc });
      return {
        range: new monaco.Range(position.lineNumber, word.startColumn, position.lineNumber, word.endColumn),
        contents,
      };
    },
  });
}
