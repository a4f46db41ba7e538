// Prints the built UI's size, raw and gzipped, against the budget (300 KB gzipped JS + CSS).
// Run after `npm run build`:  npm run size
import { readdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET = 300 * 1024;
const dir = new URL('../dist/assets/', import.meta.url);
let raw = 0;
let gzip = 0;
for (const name of readdirSync(dir).filter((n) => /\.(js|css)$/.test(n))) {
  const bytes = readFileSync(new URL(name, dir));
  const zipped = gzipSync(bytes, { level: 9 }).length;
  raw += bytes.length;
  gzip += zipped;
  console.log(`${name}\t${(bytes.length / 1024).toFixed(1)} KB\t${(zipped / 1024).toFixed(1)} KB gzipped`);
}
console.log(`total\t${(raw / 1024).toFixed(1)} KB\t${(gzip / 1024).toFixed(1)} KB gzipped (budget ${BUDGET / 1024} KB)`);
process.exit(gzip <= BUDGET ? 0 : 1);
