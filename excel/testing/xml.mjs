// A small, strict XML 1.0 parser for the manifest test: well-formedness (one root, matching
// tags, quoted and unique attributes, known entities, no stray text outside the root, declared
// namespace prefixes) and a tree to query. Not a validating parser.

const NAME = /[A-Za-z_:][\w.:-]*/y;

export class XmlError extends Error {}

/**
 * @typedef {{name: string, attrs: Record<string, string>, children: XmlElement[], text: string,
 *   parent: XmlElement | null, ns: Record<string, string>}} XmlElement
 */

function decodeEntities(text, where) {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z]+);|&/g, (match, entity) => {
    if (!entity) throw new XmlError(`a bare "&" in ${where}`);
    if (entity[0] === '#') {
      const code = entity[1] === 'x' ? parseInt(entity.slice(2), 16) : parseInt(entity.slice(1), 10);
      return String.fromCodePoint(code);
    }
    const named = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[entity];
    if (named === undefined) throw new XmlError(`unknown entity &${entity}; in ${where}`);
    return named;
  });
}

/** Parses a document; returns its root element. Throws XmlError when not well-formed. */
export function parseXml(source) {
  let pos = 0;
  const line = () => source.slice(0, pos).split('\n').length;
  const fail = (message) => {
    throw new XmlError(`line ${line()}: ${message}`);
  };
  const skipSpace = () => {
    while (pos < source.length && /\s/.test(source[pos])) pos++;
  };
  const name = () => {
    NAME.lastIndex = pos;
    const match = NAME.exec(source);
    if (!match) fail('expected a name');
    pos += match[0].length;
    return match[0];
  };

  if (source.charCodeAt(0) === 0xfeff) pos = 1;
  if (source.startsWith('<?xml', pos)) {
    const end = source.indexOf('?>', pos);
    if (end < 0) fail('unterminated XML declaration');
    const declaration = source.slice(pos, end);
    if (!/^<\?xml\s+version="1\.[0-9]"/.test(declaration)) fail('the XML declaration needs version="1.x" first');
    pos = end + 2;
  }

  let root = null;
  const stack = [];
  while (pos < source.length) {
    const current = stack[stack.length - 1];
    if (source.startsWith('<!--', pos)) {
      const end = source.indexOf('-->', pos + 4);
      if (end < 0) fail('unterminated comment');
      if (source.slice(pos + 4, end).includes('--')) fail('"--" inside a comment');
      pos = end + 3;
    } else if (source.startsWith('<![CDATA[', pos)) {
      if (!current) fail('CDATA outside the root element');
      const end = source.indexOf(']]>', pos);
      if (end < 0) fail('unterminated CDATA');
      current.text += source.slice(pos + 9, end);
      pos = end + 3;
    } else if (source.startsWith('<?', pos)) {
      const end = source.indexOf('?>', pos);
      if (end < 0) fail('unterminated processing instruction');
      pos = end + 2;
    } else if (source.startsWith('<!', pos)) {
      fail('DOCTYPE and declarations are not expected in a manifest');
    } else if (source.startsWith('</', pos)) {
      pos += 2;
      const closing = name();
      skipSpace();
      if (source[pos] !== '>') fail(`expected ">" after </${closing}`);
      pos++;
      const open = stack.pop();
      if (!open) fail(`</${closing}> closes nothing`);
      if (open.name !== closing) fail(`</${closing}> closes <${open.name}>`);
    } else if (source[pos] === '<') {
      pos++;
      if (!current && root) fail('a second root element');
      const element = { name: name(), attrs: {}, children: [], text: '', parent: current || null, ns: {} };
      for (;;) {
        const before = pos;
        skipSpace();
        if (source.startsWith('/>', pos) || source[pos] === '>') break;
        if (pos === before) fail(`expected whitespace between attributes of <${element.name}>`);
        const attr = name();
        skipSpace();
        if (source[pos] !== '=') fail(`attribute ${attr} of <${element.name}> has no value`);
        pos++;
        skipSpace();
        const quote = source[pos];
        if (quote !== '"' && quote !== "'") fail(`attribute ${attr} of <${element.name}> is not quoted`);
        const end = source.indexOf(quote, pos + 1);
        if (end < 0) fail(`unterminated attribute ${attr}`);
        const raw = source.slice(pos + 1, end);
        if (raw.includes('<')) fail(`"<" in attribute ${attr}`);
        if (attr in element.attrs) fail(`attribute ${attr} repeated on <${element.name}>`);
        element.attrs[attr] = decodeEntities(raw, `attribute ${attr}`);
        pos = end + 1;
      }
      // Namespaces: declared here or above.
      const inherited = current ? current.ns : { xml: 'http://www.w3.org/XML/1998/namespace' };
      element.ns = { ...inherited };
      for (const [attr, value] of Object.entries(element.attrs)) {
        if (attr === 'xmlns') element.ns[''] = value;
        else if (attr.startsWith('xmlns:')) element.ns[attr.slice(6)] = value;
      }
      const prefixOf = (qualified) => (qualified.includes(':') ? qualified.split(':')[0] : null);
      for (const qualified of [element.name, ...Object.keys(element.attrs)]) {
        const prefix = prefixOf(qualified);
        if (prefix && prefix !== 'xmlns' && !(prefix in element.ns)) fail(`undeclared namespace prefix "${prefix}" in ${qualified}`);
      }
      if (current) current.children.push(element);
      else root = element;
      if (source.startsWith('/>', pos)) {
        pos += 2;
      } else {
        pos++;
        stack.push(element);
      }
    } else {
      const end = source.indexOf('<', pos);
      const text = source.slice(pos, end < 0 ? source.length : end);
      if (!current) {
        if (text.trim()) fail(`text outside the root element: ${JSON.stringify(text.trim().slice(0, 20))}`);
      } else {
        current.text += decodeEntities(text, `<${current.name}>`);
      }
      pos = end < 0 ? source.length : end;
    }
  }
  if (stack.length) fail(`<${stack[stack.length - 1].name}> is never closed`);
  if (!root) fail('no root element');
  return root;
}

/** Children of `element` named `name` (a qualified name as written). */
export function children(element, name) {
  return element.children.filter((child) => child.name === name);
}

/** The one child named `name`; throws when there is none or several. */
export function child(element, name) {
  const found = children(element, name);
  if (found.length !== 1) {
    throw new XmlError(`<${element.name}> has ${found.length} <${name}> (expected 1)`);
  }
  return found[0];
}

/** Follows a path of child names from `element`, e.g. `['Hosts', 'Host']`. */
export function at(element, ...path) {
  return path.reduce((node, name) => child(node, name), element);
}

/** Every element below (and including) `element`. */
export function* walk(element) {
  yield element;
  for (const c of element.children) yield* walk(c);
}
