// Whether a banner is shown: waits until [data-testid=<id>] is present (and prints its text) or
// absent, and saves a screenshot.   node e2e/banner.mjs <base URL> <screenshot dir> <id> present|absent
import { check, launch } from './lib.mjs';

const [base, out, id, expected] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForSelector(`[data-testid=${id}]`, { state: expected === 'present' ? 'visible' : 'detached', timeout: 20_000 });
  if (expected === 'present') {
    check(true, `banner ${id}: ${await page.locator(`[data-testid=${id}]`).innerText()}`);
  } else {
    await page.waitForSelector('[data-testid=status]', { timeout: 10_000 });
    check(!(await page.locator(`[data-testid=${id}]`).count()), `no ${id} banner`);
  }
  await page.screenshot({ path: `${out}/banner-${id}-${expected}.png` });
} finally {
  await browser.close();
}
