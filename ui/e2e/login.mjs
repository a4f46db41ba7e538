// First run of a LAN-facing install in Chromium: the UI asks for the setup code and a new admin
// password, then shows the gateway; the session survives a reload; logging out asks again.
//   node e2e/login.mjs <gateway base URL> <screenshot dir> <setup code>
import { check, launch } from './lib.mjs';
import { mkdirSync } from 'node:fs';

const [base, out, setupCode] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 800, height: 480 } });
  await page.goto(base);
  await page.waitForSelector('[data-testid=login-form]');
  check(await page.locator('[data-testid=setup-code]').isVisible(), 'a fresh install asks for the setup code and a password');
  await page.screenshot({ path: `${out}/setup.png` });
  await page.fill('[data-testid=setup-code]', 'wrong-code');
  await page.fill('[data-testid=password]', 'a long enough password');
  await page.fill('[data-testid=confirm]', 'a long enough password');
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=login-error]');
  check((await page.locator('[data-testid=login-error]').innerText()).includes('setup code'), 'a wrong setup code is refused with where to find the right one');
  await page.fill('[data-testid=setup-code]', setupCode);
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=status]', { timeout: 15_000 });
  check(true, 'after setting the password the gateway is shown');
  await page.reload();
  await page.waitForSelector('[data-testid=status]', { timeout: 15_000 });
  check(true, 'the session survives a reload');
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForSelector('[data-testid=login-form]');
  check(!(await page.locator('[data-testid=setup-code]').count()), 'after logging out the login form asks for the password only');
  await page.fill('[data-testid=password]', 'not the password');
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=login-error]');
  check((await page.locator('[data-testid=login-error]').innerText()).includes('wrong password'), 'a wrong password is refused');
  await page.fill('[data-testid=password]', 'a long enough password');
  await page.click('button[type=submit]');
  await page.waitForSelector('[data-testid=status]');
  check(true, 'the right password logs in');
  await page.screenshot({ path: `${out}/after-login.png` });
} finally {
  await browser.close();
}
