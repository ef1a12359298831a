// window.AeroGridEditor: the code editor API that the Rust app calls (wasm-bindgen,
// `js_namespace = AeroGridEditor`). This file is small and loaded on every page; Monaco itself
// (chunks/monaco-*.js, editor.css, editor.worker.js next to this file) is loaded on first use.
//
//   ready                                  Promise, resolves (to the monaco namespace) once
//                                          Monaco is loaded; call preload() to start loading
//   preload()                              Promise: starts loading Monaco now (same as ready)
//   create(element, code, options)         Promise<handle>; options: {onChange(code), onSave(),
//                                          readOnly, ariaLabel, language: "python" (default) |
//                                          "plaintext"}, all optional
//   createDiff(element, original, modified, options)
//                                          Promise<handle>: read-only side-by-side diff
//                                          (options: ariaLabel, language)
//   setValue(handle, code)                 replaces the text, keeps cursor and scroll; does not
//                                          call onChange
//   getValue(handle)                       string (the modified side for a diff)
//   setReadOnly(handle, readOnly)
//   setMarkers(handle, diagnostics)        [{line, column, end_line, end_column, severity:
//                                          "error"|"warning", message}], 1-based, UTF-16 columns;
//                                          [] clears
//   focus(handle)
//   dispose(handle)                        editor or diff; safe to call twice
//
// The synchronous functions never throw: on something that is not a live handle they do nothing
// (getValue returns "") and log a warning.

const moduleUrl = import.meta.url;
let loading = null;
let resolveReady;
const ready = new Promise((resolve) => { resolveReady = resolve; });

function loadCss(href) {
  const existing = document.querySelector(`link[data-aerogrid-editor-css]`);
  if (existing) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const link = document.createElement('link');
    link.rel = 'stylesheet';
    link.href = href;
    link.dataset.aerogridEditorCss = '';
    link.onload = () => resolve();
    link.onerror = () => { link.remove(); reject(new Error(`AeroGridEditor: could not load ${href}`)); };
    document.head.appendChild(link);
  });
}

function load() {
  if (!loading) {
    // Monaco's workers: the bundled editor worker, from next to this file, never a CDN or blob.
    const env = self.MonacoEnvironment || {};
    self.MonacoEnvironment = {
      ...env,
      getWorker(_workerId, label) {
        return new Worker(new URL('./editor.worker.js', moduleUrl), { name: label });
      },
    };
    loading = Promise.all([loadCss(new URL('./editor.css', moduleUrl).href), import('./monaco.js')])
      .then(([, lazy]) => {
        resolveReady(lazy.monaco);
        return lazy;
      })
      .catch((err) => {
        loading = null; // a later call tries again
        throw err;
      });
  }
  return loading;
}

function live(handle, fn) {
  if (!handle || typeof handle !== 'object' || typeof handle.getValue !== 'function') {
    console.warn(`AeroGridEditor.${fn}: not an editor handle`, handle);
    return false;
  }
  return !handle.disposed;
}

const AeroGridEditor = {
  ready,
  preload() {
    return load().then((lazy) => lazy.monaco);
  },
  async create(element, code, options) {
    const lazy = await load();
    return lazy.create(element, code, options);
  },
  async createDiff(element, original, modified, options) {
    const lazy = await load();
    return lazy.createDiff(element, original, modified, options);
  },
  setValue(handle, code) {
    if (live(handle, 'setValue')) handle.setValue(code);
  },
  getValue(handle) {
    return live(handle, 'getValue') ? handle.getValue() : '';
  },
  setReadOnly(handle, readOnly) {
    if (live(handle, 'setReadOnly')) handle.setReadOnly(readOnly);
  },
  setMarkers(handle, diagnostics) {
    if (live(handle, 'setMarkers')) handle.setMarkers(diagnostics);
  },
  focus(handle) {
    if (live(handle, 'focus')) handle.focus();
  },
  dispose(handle) {
    if (live(handle, 'dispose')) handle.dispose();
  },
};

// Wrap the synchronous calls: an exception thrown into wasm would unwind through Rust frames.
for (const name of ['setValue', 'getValue', 'setReadOnly', 'setMarkers', 'focus', 'dispose']) {
  const fn = AeroGridEditor[name];
  AeroGridEditor[name] = (...args) => {
    try {
      return fn(...args);
    } catch (err) {
      console.error(`AeroGridEditor.${name}:`, err);
      return name === 'getValue' ? '' : undefined;
    }
  };
}

window.AeroGridEditor = Object.freeze(AeroGridEditor);
