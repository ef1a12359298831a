// Just enough of a DOM to run the task pane's script in Node: the elements of taskpane.html (by
// id, found in the real file), createElement, events, classes and attributes. The pane's code
// touches nothing else, which this keeps honest: anything more fails loudly.

class FakeClassList {
  constructor(element) {
    this.element = element;
  }

  get set() {
    return new Set(this.element.className.split(/\s+/).filter(Boolean));
  }

  contains(name) {
    return this.set.has(name);
  }

  add(...names) {
    const set = this.set;
    for (const name of names) set.add(name);
    this.element.className = [...set].join(' ');
  }

  remove(...names) {
    const set = this.set;
    for (const name of names) set.delete(name);
    this.element.className = [...set].join(' ');
  }

  toggle(name, force) {
    const on = force === undefined ? !this.contains(name) : Boolean(force);
    if (on) this.add(name);
    else this.remove(name);
    return on;
  }
}

export class FakeElement {
  constructor(tagName, attrs = {}) {
    this.tagName = tagName.toUpperCase();
    this.attributes = { ...attrs };
    this.id = attrs.id || '';
    this.children = [];
    this.parentNode = null;
    this.listeners = {};
    this.className = attrs.class || '';
    this.classList = new FakeClassList(this);
    this.hidden = 'hidden' in attrs;
    this.disabled = 'disabled' in attrs;
    this.value = attrs.value || '';
    this._text = '';
  }

  get textContent() {
    return this._text + this.children.map((c) => c.textContent).join('');
  }

  set textContent(text) {
    this.children = [];
    this._text = String(text);
  }

  setAttribute(name, value) {
    this.attributes[name] = String(value);
  }

  getAttribute(name) {
    return name in this.attributes ? this.attributes[name] : null;
  }

  appendChild(child) {
    child.parentNode = this;
    this.children.push(child);
    return child;
  }

  replaceChildren(...nodes) {
    this._text = '';
    this.children = [];
    for (const node of nodes) this.appendChild(node);
  }

  addEventListener(type, listener) {
    (this.listeners[type] ||= []).push(listener);
  }

  /** Fires an event at this element; returns the event. */
  dispatch(type, extra = {}) {
    const event = {
      type,
      target: this,
      defaultPrevented: false,
      preventDefault() {
        event.defaultPrevented = true;
      },
      ...extra,
    };
    for (const listener of this.listeners[type] || []) listener(event);
    return event;
  }

  click() {
    if (!this.disabled) this.dispatch('click');
  }

  /** Descendants matching `test`. */
  findAll(test) {
    const out = [];
    for (const child of this.children) {
      if (test(child)) out.push(child);
      out.push(...child.findAll(test));
    }
    return out;
  }
}

/** A document holding one element per `id="..."` of `html`, with its tag and attributes. */
export function fakeDocument(html) {
  const byId = new Map();
  for (const match of html.matchAll(/<([a-z0-9]+)\b([^>]*)>/gi)) {
    const attrs = {};
    for (const a of match[2].matchAll(/([\w-]+)(?:="([^"]*)")?/g)) attrs[a[1]] = a[2] ?? '';
    if (attrs.id) byId.set(attrs.id, new FakeElement(match[1], attrs));
  }
  return {
    readyState: 'complete',
    getElementById(id) {
      const element = byId.get(id);
      if (!element) throw new Error(`the pane asked for #${id}, which taskpane.html does not have`);
      return element;
    },
    createElement(tag) {
      return new FakeElement(tag);
    },
    addEventListener() {},
  };
}
