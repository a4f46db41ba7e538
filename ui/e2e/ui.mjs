// End-to-end checks of the web UI in a real headless Chromium (Debian's, driven by
// playwright-core; no browser download). Started by tests/ui.rs against a real gateway with
// simulated tags:  node e2e/ui.mjs <gateway base URL> <screenshot dir>
// Every check that fails throws; the exit status tells the Rust test.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [base, out] = process.argv.slice(2);
if (!base || !out) {
  console.error('usage: node e2e/ui.mjs <base URL> <screenshot dir>');
  process.exit(2);
}
mkdirSync(out, { recursive: true });
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
  console.log(`ok - ${message}`);
}

const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));

  // Overview: the simulated tags appear as tiles, and their values change live.
  const started = Date.now();
  await page.goto(base);
  await page.waitForSelector('[data-testid=tile]', { timeout: 15_000 });
  console.log(`first tile after ${Date.now() - started} ms`);
  const tiles = await page.locator('[data-testid=tile]').count();
  check(tiles >= 5, `the overview shows the simulated tags (${tiles} tiles)`);
  const firstDevice = await page.locator('[data-testid=tile]').first().getAttribute('data-device');
  const values = async () => page.locator('[data-testid=tile] [data-field]').allInnerTexts();
  const before = (await values()).join('|');
  let changed = false;
  for (let i = 0; i < 40 && !changed; i++) {
    await page.waitForTimeout(250);
    changed = (await values()).join('|') !== before;
  }
  check(changed, 'tile values change live over the WebSocket');
  const status = await page.locator('[data-testid=status]').innerText();
  check(/online/.test(status) && /BLE disabled/.test(status), `the header shows gateway and Bluetooth status (${status.replace(/\n/g, ' ')})`);
  await page.screenshot({ path: `${out}/overview.png`, fullPage: true });

  // The same at the Raspberry Pi touchscreen's size, in the dark theme.
  await page.setViewportSize({ width: 800, height: 480 });
  await page.selectOption('select[aria-label=Theme]', 'dark');
  await page.screenshot({ path: `${out}/overview-800x480-dark.png` });
  await page.selectOption('select[aria-label=Theme]', 'light');
  await page.setViewportSize({ width: 1280, height: 800 });

  // Device page: the live chart fills, the history chart renders from the downsampled API.
  await page.goto(`${base}/#/device/${encodeURIComponent(firstDevice)}`);
  await page.waitForSelector('h1');
  await page.getByRole('button', { name: '1 h' }).click();
  await page.waitForSelector('section:nth-of-type(2) [data-testid=chart] canvas', { timeout: 15_000 });
  check(true, 'a history chart renders');
  await page.waitForSelector('section:nth-of-type(1) [data-testid=chart] canvas', { timeout: 20_000 });
  check(true, 'the live chart scrolls with new readings');
  const receivers = await page.locator('[data-testid=receiver]').allInnerTexts();
  check(receivers.some((r) => r.includes('simulator')), `the receivers table lists the simulator (${receivers.length})`);
  const download = page.waitForEvent('download');
  await page.getByRole('button', { name: 'Export CSV' }).click();
  const csv = await download;
  check(csv.suggestedFilename().endsWith('.csv'), 'CSV export offers a file');
  await page.screenshot({ path: `${out}/device.png`, fullPage: true });

  // Devices list: search narrows the list.
  await page.goto(`${base}/#/devices`);
  await page.waitForSelector('[data-testid=device-row]');
  const all = await page.locator('[data-testid=device-row]').count();
  await page.fill('input[type=search]', firstDevice);
  const filtered = await page.locator('[data-testid=device-row]').count();
  check(all >= 5 && filtered === 1, `search narrows ${all} devices to ${filtered}`);
  await page.screenshot({ path: `${out}/devices.png`, fullPage: true });

  check(errors.length === 0, `no errors in the browser console (${errors.join('; ')})`);
} finally {
  await browser.close();
}
