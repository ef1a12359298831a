#!/usr/bin/env node
// Builds the Excel add-in's served files into excel/dist/ (no dependencies: Node's standard
// library only).
//
// Why a build at all: Excel's runtime loads `functions.js` as a classic script (no ES modules), while
// the sources are ES modules so that they can be read, tested and reused on their own. This
// script bundles them: each module becomes a function scope returning its exports, and `import`
// lines become reads of those exports. It also draws the add-in's PNG icons (Office takes no SVG)
// and copies the pages, the metadata and the manifest.
//
// `node excel/build.mjs` (from anywhere); tests import `build()` from here.

import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import zlib from 'node:zlib';

export const excelDir = path.dirname(fileURLToPath(import.meta.url));
export const srcDir = path.join(excelDir, 'src');
export const distDir = path.join(excelDir, 'dist');

/** Files copied as they are: the task pane, the help page and the functions' metadata. */
const COPIED = ['functions.json', 'taskpane.html', 'taskpane.js', 'taskpane.css', 'help.html'];
/** Icon sizes: 16/32/80 for the ribbon, 32 and 64 for the add-in's own icons. */
export const ICON_SIZES = [16, 32, 64, 80];

/**
 * Bundles ES modules (given in dependency order) into one classic script.
 * @param {{name: string, file: string}[]} modules
 */
export async function bundle(modules, { banner = '' } = {}) {
  const known = new Map(); // module file name -> {variable, exports}
  const parts = [];
  for (const [i, { file }] of modules.entries()) {
    const source = await readFile(path.join(srcDir, file), 'utf8');
    const exports = [];
    const imports = [];
    let body = source.replace(
      /^import\s*\{([^}]*)\}\s*from\s*['"]\.\/([^'"]+)['"];?[ \t]*$/gm,
      (_, names, from) => {
        imports.push({ names: names.split(',').map((n) => n.trim()).filter(Boolean), from });
        return '';
      },
    );
    body = body.replace(
      /^export\s+((?:async\s+)?function\*?|class|const|let)\s+([A-Za-z_$][\w$]*)/gm,
      (_, kind, name) => {
        exports.push(name);
        return `${kind} ${name}`;
      },
    );
    const leftover = body.match(/^\s*(import|export)\b.*$/m);
    if (leftover) {
      throw new Error(`${file}: cannot bundle this statement: ${leftover[0].trim()}`);
    }
    const header = [];
    for (const { names, from } of imports) {
      const module = known.get(from);
      if (!module) throw new Error(`${file} imports ./${from}, which is not bundled before it`);
      for (const name of names) {
        if (!module.exports.includes(name)) {
          throw new Error(`${file} imports ${name} from ./${from}, which does not export it`);
        }
      }
      header.push(`const { ${names.join(', ')} } = ${module.variable};`);
    }
    const variable = `module${i}_${file.replace(/\W/g, '_')}`;
    known.set(file, { variable, exports });
    parts.push(
      `// ---- ${file} ----\nconst ${variable} = (function () {\n${header.join('\n')}\n${body.trim()}\nreturn { ${exports.join(', ')} };\n})();\n`,
    );
  }
  const script = `${banner}(function () {\n'use strict';\n${parts.join('\n')}})();\n`;
  // A syntax check, and a guard against module syntax slipping through.
  new vm.Script(script, { filename: 'functions.js' });
  return script;
}

// ---------------------------------------------------------------------------------------------
// PNG icons.

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Encodes RGBA pixels (size x size) as a PNG. */
export function encodePng(size, rgba) {
  const raw = Buffer.alloc(size * (size * 4 + 1));
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0; // filter: none
    rgba.copy(raw, y * (size * 4 + 1) + 1, y * size * 4, (y + 1) * size * 4);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 6; // RGBA
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * The AeroGrid mark: a rounded blue tile with a white 3x3 grid whose top-right cell is lit
 * green (a live value). Drawn with 4x4 supersampling for smooth edges.
 */
export function drawIcon(size) {
  const rgba = Buffer.alloc(size * size * 4);
  const s = 4;
  const radius = size * 0.18;
  const inset = size * 0.2;
  const cell = (size - 2 * inset) / 3;
  const line = Math.max(1, size / 16);
  const inTile = (x, y) => {
    const cx = Math.min(Math.max(x, radius), size - radius);
    const cy = Math.min(Math.max(y, radius), size - radius);
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2;
  };
  const colorAt = (x, y) => {
    if (!inTile(x, y)) return null;
    const gx = (x - inset) / cell;
    const gy = (y - inset) / cell;
    if (gx >= 0 && gx < 3 && gy >= 0 && gy < 3) {
      const onLine =
        Math.min(Math.abs(x - inset - Math.round(gx) * cell), Math.abs(y - inset - Math.round(gy) * cell)) <
        line / 2;
      if (onLine) return [255, 255, 255];
      if (Math.floor(gx) === 2 && Math.floor(gy) === 0) return [52, 211, 153];
      return [37, 99, 235];
    }
    const onBorder =
      ((Math.abs(x - inset) < line / 2 || Math.abs(x - (size - inset)) < line / 2) && y > inset - line / 2 && y < size - inset + line / 2) ||
      ((Math.abs(y - inset) < line / 2 || Math.abs(y - (size - inset)) < line / 2) && x > inset - line / 2 && x < size - inset + line / 2);
    return onBorder ? [255, 255, 255] : [37, 99, 235];
  };
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let r = 0;
      let g = 0;
      let b = 0;
      let a = 0;
      for (let sy = 0; sy < s; sy++) {
        for (let sx = 0; sx < s; sx++) {
          const color = colorAt(px + (sx + 0.5) / s, py + (sy + 0.5) / s);
          if (!color) continue;
          r += color[0];
          g += color[1];
          b += color[2];
          a++;
        }
      }
      const o = (py * size + px) * 4;
      if (a > 0) {
        rgba[o] = Math.round(r / a);
        rgba[o + 1] = Math.round(g / a);
        rgba[o + 2] = Math.round(b / a);
      }
      rgba[o + 3] = Math.round((a / (s * s)) * 255);
    }
  }
  return encodePng(size, rgba);
}

// ---------------------------------------------------------------------------------------------

/**
 * Writes every served file into `excel/dist/`; returns the names written. Each file is written
 * whole and renamed into place, so builds running at once (test files run in parallel) never
 * show a reader a half-written file.
 */
export async function build({ quiet = true } = {}) {
  await mkdir(distDir, { recursive: true });
  const written = [];
  const write = async (name, data) => {
    const temp = path.join(distDir, `.${name}.${process.pid}.tmp`);
    await writeFile(temp, data);
    await rename(temp, path.join(distDir, name));
    written.push(name);
  };

  const functions = await bundle(
    [
      { name: 'grpcweb', file: 'grpcweb.js' },
      { name: 'model', file: 'model.js' },
      { name: 'settings', file: 'settings.js' },
      { name: 'problems', file: 'problems.js' },
      { name: 'functions', file: 'functions.js' },
    ],
    {
      banner:
        '// AeroGrid Excel add-in: custom functions AEROGRID.VALUE and AEROGRID.GRID, and the gRPC-web\n' +
        '// client (globalThis.AeroGrid). Built by excel/build.mjs from excel/src/; do not edit.\n',
    },
  );
  await write('functions.js', functions);

  for (const name of COPIED) {
    const data = await readFile(path.join(srcDir, name));
    if (name.endsWith('.json')) JSON.parse(data.toString('utf8'));
    if (name.endsWith('.js')) new vm.Script(data.toString('utf8'), { filename: name });
    await write(name, data);
  }
  await write('manifest.xml', await readFile(path.join(excelDir, 'manifest.xml')));
  for (const size of ICON_SIZES) await write(`icon-${size}.png`, drawIcon(size));
  // Files of older builds that are no longer produced.
  for (const name of await readdir(distDir)) {
    if (!written.includes(name) && !name.endsWith('.tmp')) {
      await rm(path.join(distDir, name), { recursive: true, force: true });
    }
  }

  if (!quiet) {
    for (const name of written) console.log(`excel/dist/${name}`);
  }
  return written;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  build({ quiet: false }).catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
