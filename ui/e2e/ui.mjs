// End-to-end checks of the web UI in a real headless Chromium (Debian's, driven by
// playwright-core; no browser download). Started by tests/ui.rs against a real gateway with
// simulated tags:  node e2e/ui.mjs <gateway base URL> <screenshot dir>
// Every check that fails throws; the exit status tells the Rust test.

import { check, launch } from './lib.mjs';
import { mkdirSync, readFileSync, statSync } from 'node:fs';

const [base, out, claimCode] = process.argv.slice(2);
if (!base || !out) {
  console.error('usage: node e2e/ui.mjs <base URL> <screenshot dir> [claim code of a pending device]');
  process.exit(2);
}
mkdirSync(out, { recursive: true });


const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Failed requests are judged by URL below; the wrong claim code is meant to be refused.
  page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && errors.push(m.text()));
  // A device with no configuration yet answers 404 no_config; the page shows "nothing yet".
  // A wrong claim code and a bad setting are refused on purpose below.
  const expected = (r) =>
    r.url().endsWith('/api/claims') || (r.status() === 404 && r.url().endsWith('/config')) || (r.status() === 400 && r.url().endsWith('/api/settings'));
  page.on('response', (r) => r.status() >= 400 && !expected(r) && errors.push(`${r.status()} ${r.url()}`));

  // Overview: the simulated tags appear as tiles, and their values change live.
  const started = Date.now();
  await page.goto(base);
  await page.waitForSelector('[data-testid=tile]', { timeout: 15_000 });
  console.log(`first tile after ${Date.now() - started} ms`);
  const tiles = await page.locator('[data-testid=tile]').count();
  check(tiles >= 5, `the overview shows the simulated tags (${tiles} tiles)`);
  const firstDevice = await page.locator('[data-testid=tile][data-device^=ruuvi-]').first().getAttribute('data-device');
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

  // Keyboard only: Tab reaches a tile, Enter opens its device page.
  let onTile = false;
  for (let i = 0; i < 20 && !onTile; i++) {
    await page.keyboard.press('Tab');
    onTile = await page.evaluate(() => document.activeElement?.getAttribute('data-testid') === 'tile');
  }
  check(onTile, 'Tab reaches the device tiles');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => location.hash.startsWith('#/device/'));
  check(true, 'Enter on a tile opens the device page');
  await page.goto(base);
  await page.waitForSelector('[data-testid=tile]');

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
  const panned = page.waitForRequest((r) => r.url().includes('/readings?') && !r.url().includes('to=now'));
  await page.click('[data-testid=pan-earlier]');
  check(new URL((await panned).url()).searchParams.get('to') !== 'now', 'panning asks the gateway for an earlier window');
  await page.getByRole('button', { name: '1 h' }).click();
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

  if (claimCode) {
    // Claim: the pending device is in the inbox; bad input is explained as it is typed; a wrong
    // code is refused with the gateway's message; the right one activates the device.
    await page.goto(`${base}/#/claim`);
    await page.waitForSelector('[data-testid=pending-device]', { timeout: 15_000 });
    check((await page.locator('[data-testid=pending-device]').innerText()).includes('ui-demo'), 'the inbox lists the pending device');
    await page.fill('[data-testid=claim-code]', 'ABC');
    check(await page.locator('[data-testid=claim-submit]').isDisabled(), 'an incomplete code cannot be sent');
    check((await page.locator('#code-help').innerText()).includes('more characters'), 'the form says what is missing');
    const wrong = claimCode.startsWith('Z') ? 'Y' + claimCode.slice(1) : 'Z' + claimCode.slice(1);
    await page.fill('[data-testid=claim-code]', wrong);
    await page.click('[data-testid=claim-submit]');
    await page.waitForSelector('[data-testid=claim-result].bad');
    check(/attempt/i.test(await page.locator('[data-testid=claim-result]').innerText()), 'a wrong code is refused with the attempts left');
    await page.fill('[data-testid=claim-code]', claimCode.toLowerCase());
    await page.click('[data-testid=claim-submit]');
    await page.waitForSelector('[data-testid=claim-result].ok');
    check((await page.locator('[data-testid=claim-result]').innerText()).includes('now active'), 'the right code activates the device');
    await page.screenshot({ path: `${out}/claim.png`, fullPage: true });
    await page.goto(`${base}/#/`);
    await page.waitForSelector('[data-testid=tile][data-device=ui-demo] [data-field=temperature]', { timeout: 20_000 });
    check(!(await page.locator('[data-testid=tile][data-device=ui-demo]').getAttribute('class')).includes('offline'), 'the claimed LAN device is online on the overview with its telemetry');

    // Commands: the form generated from the device's schema sends a task; the timeline shows it
    // reach succeeded, transition by transition.
    await page.goto(`${base}/#/device/ui-demo`);
    const form = page.locator('[data-testid=command-set_interval]');
    await form.waitFor({ timeout: 15_000 });
    await form.locator('input[data-param=seconds]').fill('0');
    await form.getByRole('button', { name: 'Send' }).click();
    check((await form.locator('[role=alert]').innerText()).includes('at least 1'), 'the form checks the schema before sending');
    await form.locator('input[data-param=seconds]').fill('5');
    await form.getByRole('button', { name: 'Send' }).click();
    await page.waitForSelector('[data-testid=task][data-state=succeeded]', { timeout: 20_000 });
    const timeline = await page.locator('[data-testid=task][data-state=succeeded] .timeline li').allInnerTexts();
    check(timeline.some((t) => t.includes('delivered')) && timeline.some((t) => t.includes('succeeded')), `the timeline shows every transition (${timeline.length})`);
    await page.screenshot({ path: `${out}/commands.png`, fullPage: true });

    // Configuration: desired next to reported; the device applies it and it shows "in sync".
    await page.fill('[data-config=interval]', '30');
    await page.fill('[data-config=label]', 'hall');
    await page.locator('[data-testid=config-form]').getByRole('button', { name: 'Save' }).click();
    await page.waitForFunction(() => document.querySelector('[data-testid=config-sync]')?.textContent === 'in sync', null, { timeout: 20_000 });
    check((await page.locator('[data-testid=config-state]').innerText()).includes('applied'), 'the device reports the configuration applied; desired and reported are shown');

    // Alerts: a rule made in the editor fires on the simulated tags and the alert can be acknowledged.
    await page.goto(`${base}/#/alerts`);
    await page.fill('[data-testid=rule-name]', 'UI test: any temperature');
    await page.fill('[data-testid=rule-threshold]', '-100');
    await page.fill('[data-testid=rule-clear]', '-101');
    await page.fill('[data-testid=rule-for]', '1s');
    await page.click('[data-testid=rule-create]');
    await page.waitForSelector('[data-testid=rule]');
    await page.waitForSelector('[data-testid=alert]', { timeout: 20_000 });
    check((await page.locator('[data-testid=alert]').count()) >= 1, 'the rule fires and the alert appears live');
    check(Number(await page.locator('[data-testid=alert-count]').innerText()) >= 1, 'the header counts open alerts');
    await page.locator('[data-testid=alert]').first().getByRole('button', { name: 'Acknowledge' }).click();
    await page.waitForFunction(() => document.body.innerText.includes('acknowledged'));
    check(true, 'an alert is acknowledged');
    await page.goto(`${base}/#/`);
    await page.waitForSelector('[data-testid=tile-alerts]', { timeout: 15_000 });
    check(true, 'tiles of devices with open alerts carry a badge');
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: `${out}/overview-phone.png`, fullPage: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.screenshot({ path: `${out}/alerts.png`, fullPage: true });
  }

  // Manage a tag: adopt it with a name and a temperature offset; the overview shows the name.
  await page.goto(`${base}/#/device/${encodeURIComponent(firstDevice)}`);
  await page.waitForSelector('[data-testid=manage]');
  await page.fill('[data-testid=manage-name]', 'Freezer door');
  await page.getByLabel('Temperature offset (°C)').fill('1.5');
  await page.locator('[data-testid=manage]').getByRole('button', { name: /Adopt|Save/ }).click();
  await page.waitForSelector('[data-testid=manage-result]');
  check((await page.locator('[data-testid=manage-result]').innerText()) === 'Saved.', 'a tag is adopted with a name and an offset');
  await page.reload();
  await page.waitForSelector('[data-testid=manage]');
  check((await page.getByLabel('Temperature offset (°C)').inputValue()) === '1.5', 'the offset is shown again after a reload');
  await page.goto(`${base}/#/`);
  await page.waitForSelector(`[data-testid=tile][data-device="${firstDevice}"]`);
  check((await page.locator(`[data-testid=tile][data-device="${firstDevice}"]`).innerText()).includes('Freezer door'), 'the overview shows the new name');

  // Broker: connected clients, a new account's secret shown once, provisioning credentials.
  await page.goto(`${base}/#/broker`);
  await page.waitForSelector('[data-testid=account]');
  await page.fill('[data-testid=account-name]', 'kitchen-gw');
  await page.selectOption('[data-testid=account-role]', 'receiver');
  await page.click('[data-testid=account-create]');
  await page.waitForSelector('[data-testid=account-secret]');
  check(/[0-9a-f]{20,}/.test(await page.locator('[data-testid=account-secret] code').innerText()), 'a new account\'s password is shown once');
  check((await page.locator('[data-testid=account]').allInnerTexts()).some((t) => t.includes('kitchen-gw')), 'the account is listed');
  if (claimCode) check((await page.locator('[data-testid=client]').allInnerTexts()).some((t) => t.includes('ui-demo')), 'the claimed device is among the connected clients');
  await page.screenshot({ path: `${out}/broker.png`, fullPage: true });

  // Settings: the running configuration, and the whole database as a download.
  await page.goto(`${base}/#/settings`);
  await page.waitForSelector('[data-testid=settings]');
  check((await page.locator('[data-testid=settings]').innerText()).includes('home'), 'the settings page shows the site');
  const exported = page.waitForEvent('download');
  await page.click('[data-testid=export]');
  const file = await (await exported).path();
  check(statSync(file).size > 4096 && readFileSync(file).subarray(0, 15).toString() === 'SQLite format 3', 'the data export downloads an SQLite database');
  await page.fill('[data-testid=settings-retention]', 'soon');
  await page.locator('[data-testid=settings-form]').getByRole('button', { name: 'Save' }).click();
  await page.waitForSelector('[data-testid=settings-result].bad');
  check((await page.locator('[data-testid=settings-result]').innerText()).includes('retention'), 'a bad setting is refused, naming it');
  await page.fill('[data-testid=settings-retention]', '30d');
  await page.locator('[data-testid=settings-form]').getByRole('button', { name: 'Save' }).click();
  await page.waitForSelector('[data-testid=settings-result].ok');
  check((await page.locator('[data-testid=settings-pending]').innerText()).includes('30d'), 'a saved setting waits for the next start and says so');
  await page.screenshot({ path: `${out}/settings.png`, fullPage: true });

  check(errors.length === 0, `no errors in the browser console (${errors.join('; ')})`);
} finally {
  await browser.close();
}
