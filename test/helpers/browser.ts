// A real headless Chromium for the dashboard tests, driven by playwright-core (which brings no
// browser of its own). The browser is Debian's `chromium` package: .ci/run installs it where it is
// missing; `CHROMIUM_PATH` points elsewhere. The flags keep it from reaching the network (the
// tests run offline) and from needing a display or a sandbox (CI containers).
import { accessSync, constants } from 'node:fs'
import { chromium, type Browser } from 'playwright-core'
import type { Scope } from './app'

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  // Containers often have a tiny /dev/shm; Chromium then crashes on large pages.
  '--disable-dev-shm-usage'
]

const LAUNCH_TIMEOUT_MS = 20000

/** Whether a Chromium executable is there to launch. */
export function chromiumInstalled (path = CHROMIUM_PATH): boolean {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * The options of a test that needs the browser. Without Chromium it is skipped, with a notice
 * saying how to get it, so `npm test` passes on a machine that lacks it; in CI (`CI=true`) it
 * runs and fails instead, so a CI without the browser cannot pass unnoticed.
 */
export function browserTestOptions (path = CHROMIUM_PATH, env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  if (chromiumInstalled(path) || env.CI === 'true') return {}
  return { skip: `no Chromium at ${path}: install Debian's chromium (as .ci/run does) or set CHROMIUM_PATH; with CI=true this fails` }
}

/** Launches headless Chromium; it is closed on teardown. Fails with a clear message when it is missing. */
export async function launchBrowser (t: Scope): Promise<Browser> {
  if (!chromiumInstalled()) {
    throw new Error(`no Chromium at ${CHROMIUM_PATH}: install Debian's package (apt-get install chromium, as .ci/run does) or set CHROMIUM_PATH`)
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: LAUNCH_TIMEOUT_MS
  })
  t.teardown(() => browser.close())
  return browser
}
