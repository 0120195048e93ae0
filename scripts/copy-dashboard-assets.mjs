// Build step: copy the dashboard's browser files and uPlot (MIT, from node_modules) into
// dist/dashboard/assets, so the installed package serves them offline, with no CDN.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'dashboard', 'assets');
fs.mkdirSync(out, { recursive: true });
const src = path.join(root, 'src', 'dashboard', 'assets');
for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(out, f));
const require = createRequire(import.meta.url);
const uplotDir = path.dirname(require.resolve('uplot/package.json'));
fs.copyFileSync(path.join(uplotDir, 'dist', 'uPlot.iife.min.js'), path.join(out, 'uPlot.iife.min.js'));
fs.copyFileSync(path.join(uplotDir, 'dist', 'uPlot.min.css'), path.join(out, 'uPlot.min.css'));
fs.copyFileSync(path.join(uplotDir, 'LICENSE'), path.join(out, 'uPlot.LICENSE.txt'));
