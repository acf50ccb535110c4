// Builds the console into ../dist (embedded by the Go binary) and writes
// ../build.json: the SHA-256 of every source and of every built file, so
// that a Go test can tell, without npm, whether dist/ is the build of the
// sources as they are. `make console` runs this after `npm ci`;
// `make console/check` rebuilds from scratch elsewhere and compares bytes.
//
//   node build.mjs [--out DIR] [--manifest FILE]
import * as esbuild from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? resolve(process.argv[i + 1]) : def;
};
const dest = arg('--out', join(here, '..', 'dist'));
// Built beside dest and swapped in at the end, so a Go build running
// meanwhile embeds the old build or the new one, never half of one.
const out = `${dest}.building`;
const manifest = arg('--manifest', join(here, '..', 'build.json'));

// SOURCES are what the build reads besides node_modules, which
// package-lock.json pins.
const SOURCES = ['build.mjs', 'icon.svg', 'index.html', 'package-lock.json', 'package.json', 'src'];

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? files(p) : [p];
  });
}

function hashes(root, paths) {
  const out = {};
  for (const p of paths.map((x) => relative(root, x).split(sep).join('/')).sort()) {
    out[p] = createHash('sha256').update(readFileSync(join(root, p))).digest('hex');
  }
  return out;
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
const uplot = JSON.parse(readFileSync(join(here, 'node_modules', 'uplot', 'package.json'), 'utf8'));
const common = { bundle: true, minify: true, charset: 'utf8', legalComments: 'eof', logLevel: 'warning', absWorkingDir: here };
// uPlot's copyright notice is a plain comment that minifying drops: say it
// in a banner and ship its licence beside the bundle.
const banner = `/*! Bulkhead console. Includes uPlot ${uplot.version} (c) Leon Sorokin, MIT License: see licenses.txt */`;
await esbuild.build({ ...common, entryPoints: ['src/main.js'], format: 'esm', target: 'es2022', banner: { js: banner },
  outfile: join(out, 'assets', 'console.js') });
await esbuild.build({ ...common, entryPoints: ['src/styles.css'], outfile: join(out, 'assets', 'console.css') });
copyFileSync(join(here, 'index.html'), join(out, 'index.html'));
copyFileSync(join(here, 'icon.svg'), join(out, 'assets', 'icon.svg'));
writeFileSync(join(out, 'assets', 'licenses.txt'),
  `uPlot ${uplot.version} (https://github.com/leeoniya/uPlot)\n\n${readFileSync(join(here, 'node_modules', 'uplot', 'LICENSE'), 'utf8')}`);

const outputs = hashes(out, files(out));
const old = `${dest}.old`;
rmSync(old, { recursive: true, force: true });
if (existsSync(dest)) renameSync(dest, old);
renameSync(out, dest);
rmSync(old, { recursive: true, force: true });

const sources = SOURCES.flatMap((s) => (s === 'src' ? files(join(here, s)) : [join(here, s)]));
const doc = {
  comment: 'Written by app/console/web/build.mjs (make console); checked by app/console tests. Do not edit.',
  esbuild: esbuild.version,
  uplot: uplot.version,
  sources: hashes(here, sources),
  outputs,
};
writeFileSync(manifest, `${JSON.stringify(doc, null, 2)}\n`);
console.log(`console: built ${Object.keys(doc.outputs).length} files into ${relative(process.cwd(), dest) || '.'}`);
