// The lazily loaded half of the editor: Monaco (core editor, diff editor, Python tokenizer), the
// AeroGrid theme, the aerogrid completion and hover providers, and the editor handles.
// editor.js imports this module on first use; see editor.js for the API.

// Monaco's editor.main.js without other languages and language services (see build.mjs).
import * as monaco from 'aerogrid:monaco-core';
// Python's tokenizer, registered eagerly (Monaco's register.js would load it as one more chunk).
import { conf as pythonConf, language as pythonLanguage } from 'monaco-editor/languages/definitions/python/python.js';
import { registerAerogridPython } from './aerogrid-python.js';

export { monaco };

const THEME = 'aerogrid-light';
const OWNER = 'aerogrid';

// A calm light theme: soft background, muted token colours.
monaco.editor.defineTheme(THEME, {
  base: 'vs',
  inherit: true,
  rules: [
    { token: '', foreground: '24292f' },
    { token: 'keyword', foreground: '3d5a99' },
    { token: 'string', foreground: '2f7a4a' },
    { token: 'string.escape', foreground: '6a8f3a' },
    { token: 'number', foreground: '9a5b1f' },
    { token: 'comment', foreground: '8b929b', fontStyle: 'italic' },
    { token: 'tag', foreground: '8a5aa8' }, // decorators
    { token: 'delimiter', foreground: '57606a' },
  ],
  colors: {
    'editor.background': '#fbfbfa',
    'editor.foreground': '#24292f',
    'editorGutter.background': '#fbfbfa',
    'editor.lineHighlightBackground': '#f1f3f5',
    'editor.lineHighlightBorder': '#00000000',
    'editorLineNumber.foreground': '#a3a9b1',
    'editorLineNumber.activeForeground': '#57606a',
    'editor.selectionBackground': '#d6e2f5',
    'editor.inactiveSelectionBackground': '#e6ecf5',
    'editorIndentGuide.background1': '#eceef1',
    'editorIndentGuide.activeBackground1': '#d0d5db',
    'editorCursor.foreground': '#3d5a99',
    'editorWhitespace.foreground': '#d8dce1',
  },
});

monaco.languages.register({
  id: 'python',
  extensions: ['.py', '.pyi'],
  aliases: ['Python', 'py'],
  firstLine: '^#!/.*\\bpython[0-9.-]*\\b',
});
monaco.languages.setLanguageConfiguration('python', pythonConf);
monaco.languages.setMonarchTokensProvider('python', pythonLanguage);
registerAerogridPython(monaco);

const BASE_OPTIONS = {
  theme: THEME,
  fontSize: 14,
  automaticLayout: true,
  minimap: { enabled: false },
  scrollBeyondLastLine: false,
  fixedOverflowWidgets: true,
  bracketPairColorization: { enabled: false },
  renderLineHighlight: 'line',
  padding: { top: 8, bottom: 8 },
};

let modelCount = 0;
// `python` (the app's code) or `plaintext` (its requirements, pip's format).
function newModel(code, role, language) {
  modelCount += 1;
  const plain = language === 'plaintext';
  const uri = monaco.Uri.parse(`inmemory://aerogrid/${role}-${modelCount}.${plain ? 'txt' : 'py'}`);
  const model = monaco.editor.createModel(String(code ?? ''), plain ? 'plaintext' : 'python', uri);
  model.updateOptions({ tabSize: 4, insertSpaces: true });
  return model;
}

const SEVERITY = {
  error: monaco.MarkerSeverity.Error,
  warning: monaco.MarkerSeverity.Warning,
  info: monaco.MarkerSeverity.Info,
  information: monaco.MarkerSeverity.Info,
  hint: monaco.MarkerSeverity.Hint,
};

const int = (v, fallback) => (v !== null && v !== '' && Number.isFinite(Number(v)) ? Math.trunc(Number(v)) : fallback);

/** Backend diagnostics (1-based, UTF-16 columns) to Monaco markers on `model`. */
export function toMarkers(model, diagnostics) {
  const lines = model.getLineCount();
  const markers = [];
  for (const d of Array.isArray(diagnostics) ? diagnostics : []) {
    if (!d || typeof d !== 'object') continue;
    let startLine = Math.min(Math.max(int(d.line, 1), 1), lines);
    let startCol = Math.min(Math.max(int(d.column, 1), 1), model.getLineMaxColumn(startLine));
    let endLine = Math.min(Math.max(int(d.end_line ?? d.endLine, startLine), 1), lines);
    let endCol = Math.max(int(d.end_column ?? d.endColumn, startCol), 1);
    if (endLine < startLine || (endLine === startLine && endCol < startCol)) {
      endLine = startLine;
      endCol = startCol;
    }
    endCol = Math.min(endCol, model.getLineMaxColumn(endLine));
    if (endLine === startLine && endCol <= startCol) {
      // An empty range: widen to the word at the position, else to one character.
      const word = model.getWordAtPosition({ lineNumber: startLine, column: startCol });
      const max = model.getLineMaxColumn(startLine);
      if (word && word.endColumn > startCol) {
        endCol = word.endColumn;
      } else if (startCol < max) {
        endCol = startCol + 1;
      } else if (startCol > 1) {
        // At the end of a line: mark its last character.
        startCol -= 1;
      } else {
        endCol = startCol + 1; // empty line: Monaco draws a short squiggle
      }
    }
    const severity = SEVERITY[String(d.severity ?? 'error').toLowerCase()] ?? monaco.MarkerSeverity.Error;
    markers.push({
      severity,
      message: String(d.message ?? ''),
      startLineNumber: startLine,
      startColumn: startCol,
      endLineNumber: endLine,
      endColumn: endCol,
      source: 'aerogrid',
    });
  }
  return markers;
}

/** Replaces the text of `model` by `code` with one minimal edit, so cursors and scroll stay put. */
function replaceText(model, code, editorForSelections) {
  const old = model.getValue();
  code = code.replace(/\r\n?|\n/g, model.getEOL());
  if (old === code) return false;
  let start = 0;
  const max = Math.min(old.length, code.length);
  while (start < max && old.charCodeAt(start) === code.charCodeAt(start)) start++;
  let end = 0;
  while (end < max - start
    && old.charCodeAt(old.length - 1 - end) === code.charCodeAt(code.length - 1 - end)) end++;
  // Do not split a surrogate pair or a \r\n.
  const splits = (i) => i > 0 && i < old.length
    && ((/[\uD800-\uDBFF]/.test(old[i - 1]) && /[\uDC00-\uDFFF]/.test(old[i]))
      || (old[i - 1] === '\r' && old[i] === '\n'));
  if (splits(start)) start--;
  if (splits(old.length - end)) end--;
  const range = monaco.Range.fromPositions(
    model.getPositionAt(start),
    model.getPositionAt(old.length - end),
  );
  const text = code.slice(start, code.length - end);
  const before = editorForSelections ? editorForSelections.getSelections() : null;
  model.pushStackElement();
  model.pushEditOperations(before ?? [], [{ range, text, forceMoveMarkers: false }], () => null);
  model.pushStackElement();
  return true;
}

class EditorHandle {
  constructor(element, code, options) {
    const opts = options ?? {};
    this.kind = 'editor';
    this.disposed = false;
    this.muted = false;
    this.onChange = typeof opts.onChange === 'function' ? opts.onChange : null;
    this.onSave = typeof opts.onSave === 'function' ? opts.onSave : null;
    this.model = newModel(code, 'editor', opts.language);
    this.editor = monaco.editor.create(element, {
      ...BASE_OPTIONS,
      model: this.model,
      readOnly: Boolean(opts.readOnly),
      ariaLabel: opts.ariaLabel ? String(opts.ariaLabel) : 'Python code editor',
    });
    this.subscriptions = [
      this.editor.onDidChangeModelContent(() => {
        if (this.muted || !this.onChange) return;
        try { this.onChange(this.model.getValue()); } catch (e) { console.error('AeroGridEditor onChange:', e); }
      }),
    ];
    // An action, not addCommand: addCommand keybindings are global and the last editor would win.
    this.subscriptions.push(this.editor.addAction({
      id: 'aerogrid.save',
      label: 'Save',
      keybindings: [monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS],
      run: () => {
        if (!this.onSave) return;
        try { this.onSave(); } catch (e) { console.error('AeroGridEditor onSave:', e); }
      },
    }));
    // Keep the browser's "Save page" dialog away even where Monaco does not see the key
    // (e.g. a focused widget inside the editor).
    this.element = element;
    this.keydown = (e) => {
      if ((e.ctrlKey || e.metaKey) && !e.altKey && (e.key === 's' || e.key === 'S')) e.preventDefault();
    };
    element.addEventListener('keydown', this.keydown);
  }

  setValue(code) {
    if (this.disposed) return;
    this.muted = true;
    try { replaceText(this.model, String(code ?? ''), this.editor); } finally { this.muted = false; }
  }

  getValue() { return this.disposed ? '' : this.model.getValue(); }

  setReadOnly(readOnly) { if (!this.disposed) this.editor.updateOptions({ readOnly: Boolean(readOnly) }); }

  setMarkers(diagnostics) {
    if (!this.disposed) monaco.editor.setModelMarkers(this.model, OWNER, toMarkers(this.model, diagnostics));
  }

  focus() { if (!this.disposed) this.editor.focus(); }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this.element.removeEventListener('keydown', this.keydown);
    for (const s of this.subscriptions) s.dispose();
    monaco.editor.setModelMarkers(this.model, OWNER, []);
    this.editor.dispose();
    this.model.dispose();
    this.onChange = null;
    this.onSave = null;
  }
}

class DiffHandle {
  constructor(element, original, modified, options) {
    const opts = options ?? {};
    this.kind = 'diff';
    this.disposed = false;
    this.original = newModel(original, 'original', opts.language);
    this.model = newModel(modified, 'modified', opts.language);
    this.editor = monaco.editor.createDiffEditor(element, {
      ...BASE_OPTIONS,
      readOnly: true,
      originalEditable: false,
      renderSideBySide: opts.sideBySide !== false,
      // Side by side as asked; a narrow container (under 900px) shows the changes inline.
      useInlineViewWhenSpaceIsLimited: opts.inlineWhenNarrow !== false,
      renderOverviewRuler: true,
      ariaLabel: opts.ariaLabel ? String(opts.ariaLabel) : 'Python code changes',
      originalAriaLabel: 'Original Python code',
      modifiedAriaLabel: 'Changed Python code',
    });
    this.editor.setModel({ original: this.original, modified: this.model });
  }

  setValue(code) { if (!this.disposed) replaceText(this.model, String(code ?? ''), null); }

  getValue() { return this.disposed ? '' : this.model.getValue(); }

  setReadOnly(readOnly) { if (!this.disposed) this.editor.updateOptions({ readOnly: Boolean(readOnly) }); }

  setMarkers(diagnostics) {
    if (!this.disposed) monaco.editor.setModelMarkers(this.model, OWNER, toMarkers(this.model, diagnostics));
  }

  focus() { if (!this.disposed) this.editor.getModifiedEditor().focus(); }

  dispose() {
    if (this.disposed) return;
    this.disposed = true;
    this.editor.dispose();
    this.original.dispose();
    this.model.dispose();
  }
}

export function create(element, code, options) {
  if (!(element instanceof HTMLElement)) throw new TypeError('AeroGridEditor.create: element must be an HTMLElement');
  return new EditorHandle(element, code, options);
}

export function createDiff(element, original, modified, options) {
  if (!(element instanceof HTMLElement)) throw new TypeError('AeroGridEditor.createDiff: element must be an HTMLElement');
  return new DiffHandle(element, original, modified, options);
}
