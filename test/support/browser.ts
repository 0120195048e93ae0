/**
 * Headless Chromium for the dashboard's browser tests: Debian's `chromium`
 * (installed by .ci/run when missing) driven by playwright-core, which brings
 * no browser of its own. CHROMIUM_PATH overrides where it is looked for.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, chromium, type Page } from 'playwright-core';

const CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium'];

/** Path of the system Chromium; throws (never skips) when there is none. */
export function chromiumPath(): string {
  const env = process.env.CHROMIUM_PATH;
  if (env) {
    if (!fs.existsSync(env)) throw new Error(`CHROMIUM_PATH=${env} does not exist`);
    return env;
  }
  const found = CANDIDATES.find((p) => fs.existsSync(p));
  if (!found)
    throw new Error(
      `no Chromium found (${CANDIDATES.join(', ')}): install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM_PATH`,
    );
  return found;
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    timeout: 60_000,
    // root in CI: Chromium's sandbox needs an unprivileged user; /dev/shm may be small in containers
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

/** Where a test's screenshots go: test-output/<file>/ at the repository root. */
export function outputDir(file: string): string {
  const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test-output', file);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Save a full-page screenshot named after the test. */
export async function screenshot(page: Page, dir: string, name: string): Promise<string> {
  const file = path.join(dir, `${name.replace(/[^\w.-]+/g, '-')}.png`);
  await page.screenshot({ path: file, fullPage: true, timeout: 30_000 });
  return file;
}

/** Errors a page reports (console errors, uncaught exceptions, CSP violations). */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}
