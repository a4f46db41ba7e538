// The settings page: an unreachable upstream broker shows its state and the failing stage, and
// "Test connection" lists every stage; Home Assistant discovery is switched off for the next
// start; a backup downloaded from the page is uploaded again as a restore and staged.
//   node e2e/settings.mjs <base URL> <screenshot dir> <upstream name>
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { check, launch } from './lib.mjs';

const [base, out, upstream] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ acceptDownloads: true });
  await page.goto(`${base}/#/settings`);
  const row = page.locator(`[data-testid=upstream-${upstream}]`);
  await row.waitFor({ timeout: 15_000 });
  await page.waitForFunction(
    (name) => document.querySelector(`[data-testid=upstream-${name}] [data-testid=upstream-state]`)?.textContent === 'waiting',
    upstream,
    { timeout: 15_000 },
  );
  const error = await row.locator('[data-testid=upstream-error]').innerText();
  check(error.startsWith('tcp:'), `the unreachable upstream says which stage failed: "${error}"`);

  await row.locator('[data-testid=upstream-test]').click();
  const checks = page.locator('[data-testid=upstream-checks] li');
  await checks.nth(1).waitFor({ timeout: 15_000 });
  const lines = await checks.allInnerTexts();
  check(lines[0].startsWith('DNS ✓'), `DNS passes: ${lines[0]}`);
  check(lines[1].startsWith('TCP ✗') && lines[1].includes('is the broker running'), `TCP fails with advice: ${lines[1]}`);
  check(lines.length === 2, 'the walk stops at the failing stage');
  await page.screenshot({ path: `${out}/settings.png`, fullPage: true });

  await page.locator('[data-testid=settings-ha]').uncheck();
  await page.locator('[data-testid=settings-ha-prefix]').fill('ha-test');
  await page.locator('[data-testid=settings-form] button[type=submit]').click();
  await page.waitForSelector('[data-testid=settings-result].ok', { timeout: 10_000 });
  const pending = await page.locator('[data-testid=settings-pending]').innerText();
  check(pending.includes('"homeAssistant":false') && pending.includes('ha-test'), `saved for the next start: ${pending}`);

  const download = page.waitForEvent('download');
  await page.locator('[data-testid=export]').click();
  const backup = join(tmpdir(), `gatehouse-backup-${process.pid}.db`);
  await (await download).saveAs(backup);
  await page.locator('[data-testid=restore-file]').setInputFiles(backup);
  await page.locator('[data-testid=restore-form] button[type=submit]').click();
  const result = page.locator('[data-testid=restore-result]');
  await result.waitFor({ timeout: 15_000 });
  const text = await result.innerText();
  check(text.startsWith('Checked and staged'), `the backup is checked and staged: ${text}`);

  const junk = join(tmpdir(), `gatehouse-not-a-backup-${process.pid}.db`);
  await writeFile(junk, 'not a database');
  await page.locator('[data-testid=restore-file]').setInputFiles(junk);
  await page.locator('[data-testid=restore-form] button[type=submit]').click();
  await page.waitForSelector('[data-testid=restore-result].bad', { timeout: 15_000 });
  const refused = await result.innerText();
  check(refused.includes('not restored'), `a file that is not a backup is refused: ${refused}`);
} finally {
  await browser.close();
}
