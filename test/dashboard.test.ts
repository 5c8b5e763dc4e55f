// The dashboard (GET /cache/dashboard) in a real headless Chromium, against apps listening on
// 127.0.0.1 with a real redis-server behind them: the token prompt, the figures compared with
// /cache/stats, the hit-rate chart, escaping, the Clear control, a custom preHandler,
// `routes.dashboard: false`, and the screenshot shown in the README (docs/dashboard.png).
//
// The page polls every 2 s. Its clock is Playwright's fake one, paused once the page is loaded, so
// the test decides when the page polls: each round of traffic is one poll interval of the chart,
// and with no traffic in between the page's figures must equal what /cache/stats says exactly.
import { mkdirSync, rmSync, statSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { isDeepStrictEqual } from 'node:util'
import { inflateSync } from 'node:zlib'
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify'
import type { Browser, BrowserContext, BrowserContextOptions, Page, Request } from 'playwright-core'
import t from 'tap'
import fastifyRedisCache from '../index'
import { DASHBOARD_CSP, DASHBOARD_HTML } from '../lib/management/dashboard'
import type { StatsReply } from '../lib/management/schemas'
import type { ManagementRoutesOptions } from '../types'
import { sleep, type Scope, uniquePrefix, until } from './helpers/app'
import { browserTestOptions, launchBrowser } from './helpers/browser'
import { startRedis, type RedisServer } from './helpers/redis-server'

const TOKEN = 'dash-token'
const POLL_MS = 2000
const VIEWPORT = { width: 1280, height: 900 }
// The README's picture is refreshed with UPDATE_SCREENSHOT=1; otherwise the test leaves the
// working tree as it found it.
const SCREENSHOT = process.env.UPDATE_SCREENSHOT === '1'
  ? join(__dirname, '..', 'docs', 'dashboard.png')
  : join(tmpdir(), `fastify-redis-cache-dashboard-${process.pid}.png`)

// One redis-server and one browser for the whole file, started on first use.
let redisServer: Promise<RedisServer> | undefined
let chromium: Promise<Browser> | undefined
const redis = (): Promise<RedisServer> => (redisServer ??= startRedis())
const browser = (): Promise<Browser> => (chromium ??= launchBrowser(t))
// Skipped with a notice where Chromium is missing, except in CI (helpers/browser.ts).
const BROWSER = browserTestOptions()
if (BROWSER.skip !== undefined) t.comment(`browser tests skipped: ${BROWSER.skip}`)
t.teardown(async () => {
  if (redisServer !== undefined) await (await redisServer).stop()
})

// ---------------------------------------------------------------------------
// the app

interface DashApp {
  app: FastifyInstance
  base: string
}

/** An app on the shared Redis with two namespaces of cached routes, listening on 127.0.0.1. */
async function startApp (t: Scope, routes: ManagementRoutesOptions | false): Promise<DashApp> {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, {
    redis: { url: (await redis()).url },
    prefix: uniquePrefix('dash'),
    compression: { enabled: true, threshold: 1024 },
    local: { maxEntries: 1000 },
    routes
  })
  app.get('/items', { config: { cache: { ttl: 60, namespace: 'items', key: 'list' } } }, async () => ({ items: [1, 2, 3] }))
  app.get('/items/:id', {
    config: { cache: { ttl: 60, namespace: 'items', key: (request: FastifyRequest) => `item:${(request.params as { id: string }).id}` } }
  }, async (request) => ({ id: (request.params as { id: string }).id }))
  app.get('/users', { config: { cache: { ttl: 60, namespace: 'users', key: 'list' } } }, async () => ({ users: ['ada', 'grace'] }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, base: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}` }
}

async function get (app: FastifyInstance, url: string): Promise<void> {
  const res = await app.inject(url)
  if (res.statusCode !== 200) throw new Error(`GET ${url} answered ${res.statusCode}`)
}

/**
 * Waits until `sets` values were stored in all: a cached route stores its response after the
 * reply went out, so the request's answer comes before the store (and its figures).
 */
async function settle (app: FastifyInstance, sets: number): Promise<void> {
  await until(() => app.cache.getStatistics().sets === sets, 5000, `${sets} sets`)
}

/** Misses, hits, sets, deletes and a compressed value over 1 KB. */
async function seed (app: FastifyInstance): Promise<void> {
  const sets = app.cache.getStatistics().sets
  for (const url of ['/items', '/items', '/items', '/items/1', '/items/2', '/items/1', '/users', '/users']) await get(app, url)
  const report = { rows: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `row ${i}`, status: 'ok' })) }
  await app.cache.set('report', report, { ttl: 60 })
  await app.cache.get('report')
  await app.cache.set('scratch', 1, { ttl: 60 })
  await app.cache.delete('scratch')
  await app.cache.get('absent')
  await settle(app, sets + 6) // four route entries, report and scratch
}

async function fetchStats (base: string): Promise<StatsReply> {
  const res = await fetch(`${base}/cache/stats`, { headers: { authorization: `Bearer ${TOKEN}` } })
  if (res.status !== 200) throw new Error(`stats answered ${res.status}`)
  return await res.json() as StatsReply
}

// ---------------------------------------------------------------------------
// what the page shows, and what it should show

const FIGURES = ['hit-rate', 'hits', 'misses', 'sets', 'deletes', 'evictions', 'errors', 'bytes-read', 'bytes-written',
  'compression', 'local', 'store', 'connected', 'circuit', 'version'] as const
type Figures = Record<(typeof FIGURES)[number], string>

interface Snapshot {
  figures: Figures
  /** Per row: its data-namespace, then the text of each cell. */
  namespaces: string[][]
  memory: string
  clients: string
  loaded: boolean
  login: boolean
  loginError: string
  updated: string
  chart: string
  clearResult: string
}

// Read in one go inside the page (one task, so never half a render). A string, because this
// project compiles without the DOM types.
const SNAPSHOT = `(() => {
  const text = (id) => document.getElementById(id).textContent
  const figures = {}
  for (const id of ${JSON.stringify(FIGURES)}) figures[id] = text(id)
  const namespaces = Array.from(document.querySelectorAll('#namespaces tr'), (row) =>
    [row.getAttribute('data-namespace')].concat(Array.from(row.children, (cell) => cell.textContent)))
  return {
    figures,
    namespaces,
    memory: text('memory'),
    clients: text('clients'),
    loaded: document.body.getAttribute('data-loaded') === 'true',
    login: document.getElementById('login').className === 'shown',
    loginError: text('login-error'),
    updated: text('updated'),
    chart: document.getElementById('chart-line').getAttribute('points'),
    clearResult: text('clear-result')
  }
})()`

const snapshot = (page: Page): Promise<Snapshot> => page.evaluate<Snapshot>(SNAPSHOT)

const count = (n: number): string => new Intl.NumberFormat('en-US').format(n)
const percent = (rate: number): string => `${(rate * 100).toFixed(1)}%`
function size (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB']
  let unit = 0
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024
    unit++
  }
  return `${n.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

function expectedFigures ({ statistics: s, redis: r }: StatsReply): Figures {
  return {
    'hit-rate': percent(s.hitRate),
    hits: count(s.hits),
    misses: count(s.misses),
    sets: count(s.sets),
    deletes: count(s.deletes),
    evictions: count(s.evictions),
    errors: count(s.errors),
    'bytes-read': size(s.bytesRead),
    'bytes-written': size(s.bytesWritten),
    compression: s.compressionRatio.toFixed(3),
    local: s.local === undefined || s.local === null ? 'off' : `${count(s.local.entries)} entries, ${size(s.local.bytes)}`,
    store: s.store,
    connected: s.connected ? 'yes' : 'no',
    circuit: s.circuit ?? '',
    version: r.redisVersion ?? 'n/a'
  }
}

function expectedNamespaces ({ statistics: s }: StatsReply): string[][] {
  return Object.keys(s.namespaces).sort().map((name) => {
    const ns = s.namespaces[name] as { hits: number, misses: number, hitRate: number }
    return [name, name, count(ns.hits), count(ns.misses), percent(ns.hitRate), 'Clear']
  })
}

const NO_FIGURES = Object.fromEntries(FIGURES.map((id) => [id, '-'])) as Figures

/**
 * Lets the page poll (advancing its paused clock by one interval) until it shows `stats`, for a
 * few seconds at most; returns what it shows last. The caller compares: a page that never gets
 * there fails with the difference.
 */
async function refreshUntil (page: Page, stats: StatsReply, timeoutMs = 5000): Promise<Snapshot> {
  const figures = expectedFigures(stats)
  const namespaces = expectedNamespaces(stats)
  const deadline = Date.now() + timeoutMs
  while (true) {
    const shown = await snapshot(page)
    if ((isDeepStrictEqual(shown.figures, figures) && isDeepStrictEqual(shown.namespaces, namespaces)) || Date.now() > deadline) return shown
    await page.clock.runFor(POLL_MS)
    await sleep(30)
  }
}

interface Seen {
  method: string
  url: string
  authorization: string | undefined
}

interface Opened {
  context: BrowserContext
  page: Page
  /** Every request the page made, and those answered. */
  requests: Seen[]
  finished: Seen[]
  /** Uncaught page errors and CSP violations. */
  problems: string[]
}

async function open (t: Scope, options: BrowserContextOptions = {}): Promise<Opened> {
  const context = await (await browser()).newContext({ viewport: VIEWPORT, ...options })
  t.teardown(() => context.close())
  const page = await context.newPage()
  page.setDefaultTimeout(10000)
  const requests: Seen[] = []
  const finished: Seen[] = []
  const problems: string[] = []
  const seen = (request: Request): Seen => ({ method: request.method(), url: request.url(), authorization: request.headers().authorization })
  page.on('request', (request) => requests.push(seen(request)))
  page.on('requestfinished', (request) => finished.push(seen(request)))
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`))
  page.on('console', (message) => {
    if (/content security policy|refused to/i.test(message.text())) problems.push(message.text())
  })
  return { context, page, requests, finished, problems }
}

const statsRequests = (requests: Seen[]): Seen[] => requests.filter((r) => new URL(r.url).pathname === '/cache/stats')

// ---------------------------------------------------------------------------
// a minimal PNG reader (8-bit RGB or RGBA, not interlaced: what Chromium writes)

interface Image {
  width: number
  height: number
  channels: number
  pixels: Buffer
}

function paeth (a: number, b: number, c: number): number {
  const p = a + b - c
  const pa = Math.abs(p - a)
  const pb = Math.abs(p - b)
  const pc = Math.abs(p - c)
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c
}

function decodePng (png: Buffer): Image {
  if (!png.subarray(0, 8).equals(Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]))) throw new Error('not a PNG')
  let width = 0
  let height = 0
  let channels = 0
  const compressed: Buffer[] = []
  for (let offset = 8; offset < png.length;) {
    const length = png.readUInt32BE(offset)
    const type = png.toString('latin1', offset + 4, offset + 8)
    const data = png.subarray(offset + 8, offset + 8 + length)
    if (type === 'IHDR') {
      width = data.readUInt32BE(0)
      height = data.readUInt32BE(4)
      const [depth, colorType, interlace] = [data[8], data[9], data[12]]
      if (depth !== 8 || interlace !== 0 || (colorType !== 2 && colorType !== 6)) {
        throw new Error(`unsupported PNG: depth ${depth}, color type ${colorType}, interlace ${interlace}`)
      }
      channels = colorType === 6 ? 4 : 3
    } else if (type === 'IDAT') {
      compressed.push(data)
    } else if (type === 'IEND') {
      break
    }
    offset += length + 12
  }
  const raw = inflateSync(Buffer.concat(compressed))
  const stride = width * channels
  const pixels = Buffer.alloc(stride * height)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]
    const line = y * (stride + 1) + 1
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0
      const predicted = filter === 0 ? 0 : filter === 1 ? a : filter === 2 ? b : filter === 3 ? (a + b) >> 1 : filter === 4 ? paeth(a, b, c) : NaN
      if (Number.isNaN(predicted)) throw new Error(`unknown PNG filter ${filter}`)
      pixels[y * stride + x] = (raw[line + x] + predicted) & 0xff
    }
  }
  return { width, height, channels, pixels }
}

/** How many pixels have each colour (0xRRGGBB). */
function colours (image: Image): Map<number, number> {
  const counts = new Map<number, number>()
  for (let i = 0; i < image.pixels.length; i += image.channels) {
    const rgb = (image.pixels[i] << 16) | (image.pixels[i + 1] << 8) | image.pixels[i + 2]
    counts.set(rgb, (counts.get(rgb) ?? 0) + 1)
  }
  return counts
}

// ---------------------------------------------------------------------------

t.test('the dashboard in a browser, against a real Redis, behind a token', BROWSER, async (t) => {
  const { app, base } = await startApp(t, { token: TOKEN })
  await seed(app)
  const { context, page, requests, finished, problems } = await open(t)
  // Fake timers from the start; the clock still runs until it is paused below.
  await page.clock.install()

  await t.test('the page itself needs no token and carries no data', async (t) => {
    const res = await fetch(`${base}/cache/dashboard`)
    t.equal(res.status, 200)
    t.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
    t.equal(res.headers.get('cache-control'), 'no-store')
    t.equal(res.headers.get('content-security-policy'), DASHBOARD_CSP)
    t.equal(await res.text(), DASHBOARD_HTML, 'the same static page for everyone')
    t.notOk(DASHBOARD_HTML.includes(TOKEN))
  })

  await t.test('without a token the page asks for one and shows no figure', async (t) => {
    const response = await page.goto(`${base}/cache/dashboard`)
    t.equal(response?.status(), 200)
    await page.waitForSelector('#login.shown')
    await t.resolves(page.locator('#token[type=password]').waitFor(), 'a password input')
    const shown = await snapshot(page)
    t.same(shown.figures, NO_FIGURES, 'every figure is still a dash')
    t.same(shown.namespaces, [])
    t.same([shown.memory, shown.clients], ['-', '-'])
    t.notOk(shown.loaded, 'body[data-loaded] is not set')
    t.equal(shown.loginError, '', 'no error before a token was given')
    t.equal(shown.updated, 'token required')
    await page.clock.runFor(3 * POLL_MS)
    const asked = statsRequests(requests)
    t.equal(asked.length, 1, 'one request for the stats, and no polling while it waits for the token')
    t.equal(asked[0]?.authorization, undefined, 'sent without a token')
  })

  await t.test('the token, once given, goes with every request and is kept in memory only', async (t) => {
    await page.fill('#token', TOKEN)
    await page.click('#login-form button[type=submit]')
    await page.waitForSelector('body[data-loaded="true"]')
    // From now on the page polls when the test says so.
    await page.clock.pauseAt(await page.evaluate<number>('Date.now()') + 1000)
    const shown = await snapshot(page)
    t.notOk(shown.login, 'the login is hidden')
    t.equal(await page.inputValue('#token'), '', 'the input is emptied')
    t.match(shown.updated, /^updated /)
    const after = statsRequests(requests).slice(1)
    t.ok(after.length >= 1)
    t.ok(after.every((r) => r.authorization === `Bearer ${TOKEN}`), 'every stats request carries the token')
    t.ok(requests.every((r) => new URL(r.url).origin === base), 'the page talks to its own origin only')
    const stored = await page.evaluate<string>('JSON.stringify([localStorage.length, sessionStorage.length, document.cookie])')
    t.equal(stored, '[0,0,""]', 'nothing in localStorage, sessionStorage or cookies')
    t.same(await context.cookies(), [])
  })

  // Rounds of traffic with a rising hit rate, each one poll interval of the chart.
  const rounds: Array<[hits: number, misses: number]> = [[2, 6], [3, 5], [5, 4], [6, 3], [8, 3], [7, 1], [9, 2], [9, 1]]
  await t.test('the figures follow /cache/stats poll after poll, and the chart the hit rate', async (t) => {
    let fresh = 100
    for (const [i, [hits, misses]] of rounds.entries()) {
      const sets = app.cache.getStatistics().sets
      for (let n = 0; n < hits; n++) await get(app, '/users')
      for (let n = 0; n < misses; n++) await get(app, `/items/${fresh++}`)
      await settle(app, sets + misses)
      const stats = await fetchStats(base)
      const shown = await refreshUntil(page, stats)
      t.same(shown.figures, expectedFigures(stats), `round ${i}: the figures`)
      t.same(shown.namespaces, expectedNamespaces(stats), `round ${i}: the namespace rows`)
    }
    const points = (await snapshot(page)).chart.split(' ').map((point) => point.split(',').map(Number) as [number, number])
    t.ok(points.length >= rounds.length, `a point per poll with lookups (${points.length})`)
    t.ok(points.every(([x, y]) => x >= 0 && x <= 300 && y >= 2 && y <= 78), 'inside the chart')
    const [lastHits, lastMisses] = rounds[rounds.length - 1] as [number, number]
    t.same(points[points.length - 1], [300, Number((78 - (lastHits / (lastHits + lastMisses)) * 76).toFixed(1))],
      'the last point is the last interval\'s hit rate, at the right edge')
  })

  await t.test('with no traffic, the page shows exactly what /cache/stats says', async (t) => {
    const stats = await fetchStats(base)
    const { statistics: s, redis: r } = stats
    // What the seed and the rounds did, so that the comparison is not between two empty pages.
    t.ok(s.hits > 0 && s.misses > 0 && s.sets > 0 && s.deletes > 0, 'hits, misses, sets and deletes happened')
    t.ok(s.compressionRatio < 1, 'a value was compressed')
    t.equal(s.store, 'redis')
    t.equal(s.connected, true)
    t.equal(s.circuit, 'closed')
    t.match(r.redisVersion, /^\d+\.\d+/)
    t.same(Object.keys(s.namespaces).sort(), ['items', 'users'])

    const shown = await refreshUntil(page, stats)
    t.same(shown.figures, expectedFigures(stats), 'every figure')
    t.same(shown.namespaces, expectedNamespaces(stats), 'the namespace rows')
    t.equal(shown.figures['hit-rate'], `${(s.hitRate * 100).toFixed(1)}%`, `hit rate ${shown.figures['hit-rate']}`)
    t.equal(shown.figures.version, r.redisVersion)
    t.match(shown.memory, /^\d+(\.\d)? (B|KiB|MiB|GiB)$/, `memory ${shown.memory}`)
    t.match(shown.clients, /^[1-9]\d*$/, `clients ${shown.clients}`)
    t.match(shown.figures.local, /^[1-9]\d* entries, /, 'the local tier holds entries')
  })

  await t.test('screenshot: not blank', async (t) => {
    mkdirSync(dirname(SCREENSHOT), { recursive: true })
    if (process.env.UPDATE_SCREENSHOT !== '1') t.teardown(() => rmSync(SCREENSHOT, { force: true }))
    const png = await page.screenshot({ path: SCREENSHOT, fullPage: true })
    t.ok(statSync(SCREENSHOT).size > 20 * 1024, `a screenshot of some size (${statSync(SCREENSHOT).size} bytes)`)
    const image = decodePng(png)
    t.equal(image.width, VIEWPORT.width)
    t.ok(image.height >= VIEWPORT.height)
    const counts = colours(image)
    const total = image.width * image.height
    const share = (rgb: number): number => (counts.get(rgb) ?? 0) / total
    t.ok(counts.size > 200, `many colours, as text and a chart give (${counts.size})`)
    t.ok(Math.max(...counts.values()) / total < 0.9, 'no colour covers nearly all of it')
    t.ok(share(0x0f172a) > 0.05, 'the page background')
    t.ok(share(0x1e293b) > 0.2, 'the cards')
    let chart = 0
    for (let i = 0; i < image.pixels.length; i += image.channels) {
      if (Math.abs(image.pixels[i] - 0x38) < 24 && Math.abs(image.pixels[i + 1] - 0xbd) < 24 && Math.abs(image.pixels[i + 2] - 0xf8) < 24) chart++
    }
    t.ok(chart > 200, `the chart's line is drawn (${chart} pixels)`)
  })

  await t.test('Clear: dismissing clears nothing, confirming clears the namespace', async (t) => {
    const present = async (key: string, namespace: string): Promise<number> => await app.cache.exists(key, { namespace })
    t.same([await present('list', 'items'), await present('item:1', 'items'), await present('list', 'users')], [1, 1, 1])
    const button = page.locator('#namespaces tr[data-namespace="items"] button')
    const deletes = (): Seen[] => requests.filter((r) => r.method === 'DELETE')

    let asked = ''
    page.once('dialog', (dialog) => {
      asked = dialog.message()
      return dialog.dismiss()
    })
    await button.click()
    await page.evaluate('0') // the click handler has run to its end
    t.match(asked, /namespace "items"/, 'a confirmation names the namespace')
    t.same(deletes(), [], 'dismissed: no request')
    t.equal(await present('list', 'items'), 1, 'dismissed: the entries stay')
    t.equal((await snapshot(page)).clearResult, '')

    page.once('dialog', (dialog) => dialog.accept())
    const answered = page.waitForResponse((res) => res.request().method() === 'DELETE')
    await button.click()
    const res = await answered
    t.equal(res.status(), 200)
    t.equal(new URL(res.url()).pathname + new URL(res.url()).search, '/cache/clear?namespace=items')
    t.equal(deletes()[0]?.authorization, `Bearer ${TOKEN}`, 'with the token')
    const { cleared } = await res.json() as { cleared: number }
    t.ok(cleared >= 3, `the three route entries at least (${cleared})`)
    await page.waitForSelector('#clear-result:has-text("Cleared")')
    t.equal((await snapshot(page)).clearResult, `Cleared ${cleared} entries of items.`)
    t.same([await present('list', 'items'), await present('item:1', 'items'), await present('item:2', 'items')], [0, 0, 0], 'the namespace is empty')
    t.equal(await present('list', 'users'), 1, 'other namespaces are untouched')
    const sets = app.cache.getStatistics().sets
    t.equal((await app.inject('/items')).headers['x-cache'], 'MISS', 'the route is computed again')
    await settle(app, sets + 1)
    // The page polled right after clearing; with the MISS just made, one more poll catches up.
    const stats = await fetchStats(base)
    t.same((await refreshUntil(page, stats)).figures, expectedFigures(stats))
  })

  await t.test('one poll loop, even when a poll starts while another is under way', async (t) => {
    // Poll A is held back while clearing starts poll B; once both are answered, one interval
    // must bring one request, not one per loop.
    let release = (): void => {}
    const held = new Promise<void>((resolve) => { release = resolve })
    let holding = true
    await page.route('**/cache/stats', async (route) => {
      if (holding) {
        holding = false
        await held
      }
      await route.continue()
    })
    const asked = statsRequests(requests).length
    const answered = statsRequests(finished).length
    await page.clock.runFor(POLL_MS)
    await until(() => statsRequests(requests).length === asked + 1, 5000, 'poll A')
    page.once('dialog', (dialog) => dialog.accept())
    await page.locator('#namespaces tr[data-namespace="users"] button').click()
    await until(() => statsRequests(finished).length === answered + 1, 5000, 'poll B, after the clear')
    release()
    await until(() => statsRequests(finished).length === answered + 2, 5000, 'poll A')
    await page.evaluate('0')
    await page.unroute('**/cache/stats')

    const before = statsRequests(requests).length
    await page.clock.runFor(POLL_MS)
    await until(() => statsRequests(finished).length === answered + 3, 5000, 'the next poll')
    await sleep(100)
    t.equal(statsRequests(requests).length, before + 1, 'one request per interval')
  })

  t.same(problems, [], 'no page error, no CSP violation')
})

t.test('a wrong token: the login again, with an error; a reload forgets the token', BROWSER, async (t) => {
  const { app, base } = await startApp(t, { token: TOKEN })
  await seed(app)
  const { page, requests, problems } = await open(t)
  await page.goto(`${base}/cache/dashboard`)
  await page.waitForSelector('#login.shown')

  await page.fill('#token', 'not-the-token')
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('#login-error:has-text("refused")')
  let shown = await snapshot(page)
  t.ok(shown.login, 'the login is shown again')
  t.equal(shown.loginError, 'The token was refused.')
  t.same(shown.figures, NO_FIGURES, 'no figure')
  t.same(shown.namespaces, [])
  t.notOk(shown.loaded)
  t.equal(statsRequests(requests).at(-1)?.authorization, 'Bearer not-the-token')

  await page.fill('#token', TOKEN)
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('body[data-loaded="true"]')
  shown = await snapshot(page)
  t.notOk(shown.login)
  t.equal(shown.figures.store, 'redis')

  await page.reload()
  await page.waitForSelector('#login.shown')
  shown = await snapshot(page)
  t.same(shown.figures, NO_FIGURES, 'after a reload the token is gone: asked again')
  t.notOk(shown.loaded)
  t.same(problems, [])
})

t.test('every value is rendered as text, never as HTML', BROWSER, async (t) => {
  // The page's script builds the DOM with textContent and createElement only.
  const script = DASHBOARD_HTML.slice(DASHBOARD_HTML.indexOf('<script>'), DASHBOARD_HTML.indexOf('</script>'))
  for (const sink of ['innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'DOMParser', 'createContextualFragment', 'eval(', 'Function(']) {
    t.notOk(script.includes(sink), `no ${sink}`)
  }

  // Real values cannot carry markup (namespaces are [A-Za-z0-9_.-]+), so the browser is handed a
  // stats answer whose strings are all markup, and must show them as they are.
  const { base } = await startApp(t, {})
  const { page, problems } = await open(t)
  const hostile = {
    store: '<b class="injected">redis</b>',
    circuit: '<i class="injected">closed</i>',
    version: '<img class="injected" src="x" onerror="document.body.dataset.pwned = 1">7.2',
    names: ['<script>document.body.dataset.pwned = 1</script>', '"><b class="injected">x</b>', '&amp; &lt;']
  }
  const namespaces = Object.fromEntries(hostile.names.map((name, i) => [name, { hits: i + 1, misses: 1, hitRate: (i + 1) / (i + 2) }]))
  const body = {
    statistics: {
      hits: 5,
      misses: 2,
      sets: 1,
      deletes: 0,
      evictions: 0,
      errors: 0,
      oversized: 0,
      bytesRead: 10,
      bytesWritten: 20,
      hitRate: 5 / 7,
      compressedBytesIn: 0,
      compressedBytesOut: 0,
      compressionRatio: 1,
      namespaces,
      store: hostile.store,
      connected: true,
      circuit: hostile.circuit,
      local: null,
      uptime: 1
    },
    redis: {
      store: 'redis',
      connected: true,
      status: 'ready',
      redisVersion: hostile.version,
      usedMemory: null,
      usedMemoryHuman: null,
      connectedClients: null,
      evictedKeys: null,
      expiredKeys: null,
      keyspaceHits: null,
      keyspaceMisses: null,
      uptimeSeconds: null
    }
  }
  await page.route('**/cache/stats', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify(body) }))
  await page.goto(`${base}/cache/dashboard`)
  await page.waitForSelector('body[data-loaded="true"]')
  const shown = await snapshot(page)
  t.equal(shown.figures.store, hostile.store)
  t.equal(shown.figures.circuit, hostile.circuit)
  t.equal(shown.figures.version, hostile.version)
  t.equal(shown.figures.local, 'off')
  t.equal(shown.memory, 'n/a')
  t.equal(shown.clients, 'n/a')
  t.same(shown.namespaces.map((row) => row.slice(0, 2)), [...hostile.names].sort().map((name) => [name, name]),
    'each name is its cell\'s text and its row\'s data-namespace, as it is')
  t.equal(await page.evaluate<number>('document.querySelectorAll(".injected, #board img, #board script, #namespaces b").length'), 0, 'no element was made from a value')
  t.equal(await page.evaluate<string>('String(document.body.dataset.pwned)'), 'undefined', 'nothing ran')

  // Clearing such a name: the request encodes it; the server refuses it; the message is text.
  const name = hostile.names[1] as string
  page.once('dialog', (dialog) => dialog.accept())
  const answered = page.waitForResponse((res) => res.request().method() === 'DELETE')
  await page.locator('#namespaces tr').filter({ hasText: 'injected' }).locator('button').click()
  const res = await answered
  t.equal(new URL(res.url()).search, `?namespace=${encodeURIComponent(name)}`)
  t.equal(res.status(), 400)
  const { message } = await res.json() as { message: string }
  await page.waitForSelector('#clear-result:has-text("Clear failed")')
  t.equal((await snapshot(page)).clearResult, `Clear failed: ${message}`)
  t.same(problems, [])
})

t.test('the CSP runs the page\'s own script and nothing else', BROWSER, async (t) => {
  // The same page with its script changed by one character, under the same CSP header: the
  // browser refuses to run it. So the hashes are enforced, and they match the real page (which
  // every other test here sees running).
  const { base } = await startApp(t, {})
  const { page, problems, requests } = await open(t)
  await page.route('**/cache/dashboard', async (route) => {
    const original = await route.fetch()
    const html = (await original.text()).replace('var POLL_MS = 2000', 'var POLL_MS = 2001')
    await route.fulfill({ response: original, body: html })
  })
  const refused = page.waitForEvent('console', (message) => /content security policy/i.test(message.text()))
  await page.goto(`${base}/cache/dashboard`)
  await refused
  t.ok(problems.some((problem) => /script/i.test(problem)), 'the script was refused')
  t.equal(await page.locator('#updated').textContent(), 'connecting...', 'it never ran')
  t.same(statsRequests(requests), [])
})

t.test('a custom preHandler keeps the figures behind it; the page still loads', BROWSER, async (t) => {
  const { app, base } = await startApp(t, {
    preHandler: async (request, reply) => {
      if (request.headers['x-ops'] !== 'yes') return await reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'operators only' })
    }
  })
  await seed(app)

  const outsider = await open(t)
  const response = await outsider.page.goto(`${base}/cache/dashboard`)
  t.equal(response?.status(), 200, 'the page loads')
  await outsider.page.waitForSelector('#updated:has-text("403")')
  let shown = await snapshot(outsider.page)
  t.equal(shown.updated, 'error: stats answered 403')
  t.same(shown.figures, NO_FIGURES, 'no figure')
  t.notOk(shown.loaded)
  t.notOk(shown.login, 'not a token problem: no login form')

  const operator = await open(t, { extraHTTPHeaders: { 'x-ops': 'yes' } })
  await operator.page.goto(`${base}/cache/dashboard`)
  await operator.page.waitForSelector('body[data-loaded="true"]')
  shown = await snapshot(operator.page)
  t.equal(shown.figures.store, 'redis')
  t.same(shown.namespaces.map((row) => row[0]), ['items', 'users'])
  t.same([...outsider.problems, ...operator.problems], [])
})

t.test('a preHandler that guards clearing only: Clear asks for a token, then works', BROWSER, async (t) => {
  const { app, base } = await startApp(t, {
    preHandler: async (request, reply) => {
      if (request.method === 'DELETE' && request.headers.authorization !== 'Bearer ops') {
        return await reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'clearing needs a token' })
      }
    }
  })
  await seed(app)
  const { page, problems } = await open(t)
  await page.goto(`${base}/cache/dashboard`)
  await page.waitForSelector('body[data-loaded="true"]')
  const button = page.locator('#namespaces tr[data-namespace="users"] button')
  page.once('dialog', (dialog) => dialog.accept())
  await button.click()
  await page.waitForSelector('#login.shown')
  t.equal((await snapshot(page)).loginError, '', 'no token was given, so none was refused')
  t.equal(await app.cache.exists('list', { namespace: 'users' }), 1)

  await page.fill('#token', 'ops')
  await page.click('#login-form button[type=submit]')
  await page.waitForSelector('#login:not(.shown)', { state: 'attached' })
  page.once('dialog', (dialog) => dialog.accept())
  await button.click()
  await page.waitForSelector('#clear-result:has-text("Cleared")')
  t.equal(await app.cache.exists('list', { namespace: 'users' }), 0, 'cleared with the token')
  t.same(problems, [])
})

t.test('routes.dashboard: false turns the page off, and only the page', BROWSER, async (t) => {
  const { base } = await startApp(t, { token: TOKEN, dashboard: false })
  t.equal((await fetch(`${base}/cache/dashboard`)).status, 404)
  t.equal((await fetch(`${base}/cache/dashboard`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 404)
  const { page } = await open(t)
  t.equal((await page.goto(`${base}/cache/dashboard`))?.status(), 404, 'in the browser too')
  t.equal((await fetchStats(base)).statistics.store, 'redis', 'the other routes stay')
})
