// The gateway goes away and comes back while the UI is open: a clear banner while it is
// unreachable, then it reconnects by itself (with backoff) and shows live values again.
// Driven by tests/ui.rs over stdin/stdout: prints READY, waits for DOWN, prints BANNER, waits
// for UP, checks the recovery.   node e2e/offline.mjs <base URL> <screenshot dir>
import { check, launch } from './lib.mjs';
import { createInterface } from 'node:readline';

const [base, out] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const waitFor = async (word) => {
  for (;;) {
    const { value, done } = await lines.next();
    if (done) throw new Error(`stdin closed before ${word}`);
    if (value.trim() === word) return;
  }
};

const browser = await launch();
try {
  const page = await browser.newPage();
  await page.goto(base);
  await page.waitForSelector('[data-testid=tile]', { timeout: 15_000 });
  check(!(await page.locator('[data-testid=offline]').count()), 'no banner while the gateway is up');
  console.log('READY');
  await waitFor('DOWN');
  await page.waitForSelector('[data-testid=offline]', { timeout: 15_000 });
  check(true, 'the offline banner appears when the gateway is gone');
  await page.screenshot({ path: `${out}/offline.png` });
  console.log('BANNER');
  await waitFor('UP');
  await page.waitForSelector('[data-testid=offline]', { state: 'detached', timeout: 45_000 });
  check(true, 'the UI reconnects by itself and the banner goes');
  const before = (await page.locator('[data-testid=tile] [data-field]').allInnerTexts()).join('|');
  let changed = false;
  for (let i = 0; i < 40 && !changed; i++) {
    await page.waitForTimeout(250);
    changed = (await page.locator('[data-testid=tile] [data-field]').allInnerTexts()).join('|') !== before;
  }
  check(changed, 'live values flow again after the reconnect');
  console.log('DONE');
} finally {
  await browser.close();
}
// The open stdin would keep Node running.
process.exit(0);
