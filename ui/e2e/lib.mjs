// What the browser scripts share: launching Debian's Chromium (CHROMIUM overrides the path; no
// browser is ever downloaded) and a check that prints `ok - …` or throws.
import { chromium } from 'playwright-core';

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', args: ['--no-sandbox'] });
}

export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}
