// The benchmark runner: `npm run bench` at the repository root, or `node run.js [options]` here
// once the root `npm run build` has produced ../dist.
//
// It starts a throwaway redis-server on a free port (never the one on 6379), one server process
// per variant (server.js), primes and warms them, then for several rounds runs autocannon
// against every variant in an order that changes from round to round, and prints the medians,
// the target ratios of issue 6 with PASS/FAIL, the memory step and the machine. Full runs write
// results.json and results.md beside this file.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { freePort, killAllNow, sleep, stopChild, track } from './workloads/procs.js'
import autocannon from 'autocannon'
import { MEMORY_LOCAL, VARIANTS } from './server.js'

const here = fileURLToPath(new URL('.', import.meta.url))
const rootRequire = createRequire(new URL('../package.json', import.meta.url))
const benchRequire = createRequire(import.meta.url)

const HELP = `usage: node run.js [options]

  --rounds N         rounds of every variant (default 5)
  --duration S       seconds of each autocannon run (default 4)
  --connections N    autocannon connections (default 50)
  --quick            1 round of 2 s, no memory control run; writes nothing unless --write
  --only a,b,...     only these benchmarks (names as in the table; ratios need both sides)
  --entries N        distinct entries of the memory step (default 100000)
  --skip-memory      leave out the memory step
  --memory-only      run only the memory step (with its control run unless
                     --skip-memory-control); writes nothing unless --write
  --skip-memory-control
                     leave out its control run (the same load without a local tier)
  --memory-rounds N  rounds of the memory step, each a run with the tier and a control
                     run, alternating which goes first; the median counts (default 3,
                     1 with --quick)
  --write            write results.json and results.md (default for full runs)
  --no-write         do not write them
  --no-pin           do not pin the servers to CPU 0 and this runner (autocannon) to CPU 1
  --strict           exit 1 when a target fails
  --workloads LIST   run the realistic workloads instead (w1,w2,w3 or all); see
                     \`node run.js --workloads all --help\` for their options
  --help`

/** One autocannon run target: a server variant plus request headers. */
const BENCHES = [
  { name: 'static', server: 'static' },
  { name: 'object', server: 'object' },
  { name: 'ioredis', server: 'ioredis' },
  { name: 'route-redis', server: 'route-redis', hit: true },
  { name: 'route-local', server: 'route-local', hit: true },
  { name: 'route-response', server: 'route-response', hit: true },
  { name: 'getorset-ours', server: 'getorset-ours' },
  { name: 'getorset-ours-local', server: 'getorset-ours-local' },
  { name: 'getorset-bentocache', server: 'getorset-bentocache' },
  { name: 'getorset-bentocache-tiered', server: 'getorset-bentocache-tiered' },
  { name: 'getorset-async-cache-dedupe', server: 'getorset-async-cache-dedupe' },
  { name: 'gzip-20k-identity', server: 'gzip-20k', hit: true, encoding: 'identity', label: 'our route cache, 20 KB JSON from Redis, no Accept-Encoding' },
  { name: 'gzip-20k-gzip', server: 'gzip-20k', hit: true, encoding: 'gzip', headers: { 'accept-encoding': 'gzip' }, label: 'our route cache, 20 KB JSON from Redis, Accept-Encoding: gzip' }
]

const TARGETS = [
  { label: 'route hit from Redis / hand-written ioredis route', num: 'route-redis', den: 'ioredis', min: 0.9 },
  { label: 'route hit from local tier / static ceiling', num: 'route-local', den: 'static', min: 0.85 },
  { label: "route hit with freshness: 'response' / default mode (issue 17)", num: 'route-response', den: 'route-redis', min: 0.9 },
  { label: 'getOrSet (Redis) / bentocache (Redis)', num: 'getorset-ours', den: 'getorset-bentocache', min: 2 },
  { label: 'getOrSet (local + Redis) / bentocache (memory + Redis)', num: 'getorset-ours-local', den: 'getorset-bentocache-tiered', min: 2 }
]
const INFORMATIONAL = [
  { label: 'route returning the object constant / bentocache (memory + Redis)', num: 'object', den: 'getorset-bentocache-tiered' },
  { label: 'getOrSet (local + Redis) / route returning the object constant', num: 'getorset-ours-local', den: 'object' },
  { label: 'hand-written ioredis route / static ceiling', num: 'ioredis', den: 'static' },
  { label: 'route hit from Redis / static ceiling', num: 'route-redis', den: 'static' },
  { label: 'route hit from local tier / route hit from Redis', num: 'route-local', den: 'route-redis' },
  { label: 'getOrSet (Redis) / async-cache-dedupe (Redis)', num: 'getorset-ours', den: 'getorset-async-cache-dedupe' },
  { label: 'getOrSet (local + Redis) / getOrSet (Redis)', num: 'getorset-ours-local', den: 'getorset-ours' },
  { label: 'bentocache (memory + Redis) / bentocache (Redis)', num: 'getorset-bentocache-tiered', den: 'getorset-bentocache' },
  { label: '20 KB route: gzip / identity', num: 'gzip-20k-gzip', den: 'gzip-20k-identity' }
]

// ---------------------------------------------------------------------------------------------
// Children: every process started here is tracked and killed on exit, error, SIGINT and SIGTERM
// (workloads/procs.js).

let currentRun = null

async function stopAll (servers, redis) {
  currentRun?.stop?.()
  await Promise.all(servers.map((server) => stopChild(server.child, { message: 'shutdown' })))
  if (redis) await stopChild(redis.child, { signal: 'SIGTERM' })
  killAllNow()
}

// ---------------------------------------------------------------------------------------------

function parseOptions () {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      duration: { type: 'string' },
      connections: { type: 'string' },
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      entries: { type: 'string' },
      'skip-memory': { type: 'boolean', default: false },
      'memory-only': { type: 'boolean', default: false },
      'skip-memory-control': { type: 'boolean', default: false },
      'memory-rounds': { type: 'string' },
      write: { type: 'boolean' },
      'no-write': { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
      'no-pin': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help) {
    console.log(HELP)
    process.exit(0)
  }
  const number = (value, fallback, name) => {
    if (value === undefined) return fallback
    const n = Number(value)
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${value}`)
    return n
  }
  const quick = values.quick
  const memoryOnly = values['memory-only']
  if (memoryOnly && (values['skip-memory'] || values.only)) throw new Error('--memory-only goes with neither --skip-memory nor --only')
  const options = {
    quick,
    rounds: Math.round(number(values.rounds, quick ? 1 : 5, 'rounds')),
    duration: number(values.duration, quick ? 2 : 4, 'duration'),
    connections: Math.round(number(values.connections, 50, 'connections')),
    entries: Math.round(number(values.entries, 100_000, 'entries')),
    memory: !values['skip-memory'],
    memoryControl: !quick && !values['skip-memory-control'],
    memoryRounds: Math.round(number(values['memory-rounds'], quick ? 1 : 3, 'memory-rounds')),
    // A partial run must not overwrite the full results.
    write: values['no-write'] ? false : values.write ?? !(quick || memoryOnly || values.only),
    strict: values.strict,
    pin: !values['no-pin']
  }
  options.benches = memoryOnly ? [] : BENCHES
  if (values.only) {
    const names = values.only.split(',').map((s) => s.trim()).filter(Boolean)
    const unknown = names.filter((name) => !BENCHES.some((b) => b.name === name))
    if (unknown.length > 0) throw new Error(`--only: unknown benchmark ${unknown.join(', ')}; known: ${BENCHES.map((b) => b.name).join(', ')}`)
    options.benches = BENCHES.filter((b) => names.includes(b.name))
  }
  return options
}

async function startRedis () {
  const port = await freePort()
  const bin = process.env.REDIS_SERVER || 'redis-server'
  const child = track(spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] }), 'redis-server')
  const failed = new Promise((resolve, reject) => {
    child.once('error', (err) => reject(err.code === 'ENOENT' ? new Error(`${bin} not found: install Redis (apt-get install redis-server) or set REDIS_SERVER`) : err))
    child.once('exit', (code) => reject(new Error(`redis-server exited with code ${code}:\n${child.tail.join('\n')}`)))
  })
  const Redis = rootRequire('ioredis').default ?? rootRequire('ioredis')
  const url = `redis://127.0.0.1:${port}`
  const deadline = Date.now() + 10_000
  let version = 'unknown'
  const ready = (async () => {
    while (Date.now() < deadline) {
      const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      client.on('error', () => {})
      try {
        await client.connect()
        const info = await client.info('server')
        version = /redis_version:(\S+)/.exec(info)?.[1] ?? version
        return
      } catch {
        await sleep(100)
      } finally {
        client.disconnect()
      }
    }
    throw new Error('redis-server did not answer within 10 s')
  })()
  await Promise.race([ready, failed])
  failed.catch(() => {})
  return { child, port, url, version }
}

// With two cores or more, the server under test runs on CPU 0 and this runner, which is the load
// generator, on CPU 1: neither steals the other's core, and the scheduler does not move them
// about, which otherwise swings a variant's figure by half from one round to the next. Redis runs
// on CPU 1 too: deployed, it has hardware of its own, so it shares the load generator's core
// (the outside world's) rather than the server's. Linux's taskset; without it, nothing is pinned.
const SERVER_CPU = 0
const RUNNER_CPU = 1
let pinning = false

function pin (pid, cpu) {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' })
}

function startPinning (wanted) {
  if (!wanted || os.cpus().length < 2) return false
  try {
    pin(process.pid, RUNNER_CPU)
    return true
  } catch {
    return false
  }
}

async function startServer (variant, redisUrl, nodeArgs = [], { pinned = pinning } = {}) {
  const port = await freePort()
  const child = track(spawn(process.execPath, [...nodeArgs, 'server.js', variant, String(port), redisUrl], {
    cwd: here,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc']
  }), variant)
  if (pinned) pin(child.pid, SERVER_CPU)
  const message = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${variant}: not ready within 30 s:\n${child.tail.join('\n')}`)), 30_000)
    child.on('message', (msg) => { if (msg?.ready) { clearTimeout(timer); resolve(msg) } })
    child.once('exit', (code) => {
      clearTimeout(timer)
      // Let the last output arrive before reporting it.
      setTimeout(() => reject(new Error(`${variant}: exited with code ${code} before it was ready:\n${child.tail.join('\n')}`)), 50)
    })
  })
  return { variant, port, child, bytes: message.bytes }
}

function request (port, path, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers }, (res) => {
      const chunks = []
      res.on('data', (chunk) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} timed out`)))
  })
}

/** Checks that a benchmark measures what it says: status 200, a cache hit, the right coding. */
async function verify (bench, server) {
  const res = await request(server.port, '/data', bench.headers)
  const problems = []
  if (res.status !== 200) problems.push(`status ${res.status}`)
  if (bench.hit && res.headers['x-cache'] !== 'HIT') problems.push(`x-cache ${res.headers['x-cache']} (expected HIT)`)
  const coding = res.headers['content-encoding'] ?? 'identity'
  if (bench.encoding !== undefined && coding !== bench.encoding) problems.push(`content-encoding ${coding} (expected ${bench.encoding})`)
  return { problems, bytes: res.body.length, coding }
}

function runAutocannon (options) {
  return new Promise((resolve, reject) => {
    currentRun = autocannon(options, (err, result) => {
      currentRun = null
      if (err) reject(err)
      else resolve(result)
    })
  })
}

async function measure (bench, server, { duration, connections }) {
  if (server.child.exited) throw new Error(`${server.variant} server has stopped (${JSON.stringify(server.child.exited)}):\n${server.child.tail.join('\n')}`)
  const result = await runAutocannon({
    url: `http://127.0.0.1:${server.port}/data`,
    connections,
    pipelining: 1,
    duration,
    headers: bench.headers ?? {}
  })
  return {
    reqPerSec: result.requests.mean,
    p99: result.latency.p99,
    p50: result.latency.p50,
    total: result.requests.total,
    bytesPerSec: result.throughput.mean,
    errors: result.errors,
    timeouts: result.timeouts,
    non2xx: result.non2xx
  }
}

function median (values) {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** Round r runs the list rotated by a different offset, reversed every other round. */
function orderFor (round, rounds, list) {
  const step = Math.max(1, Math.floor(list.length / Math.max(rounds, 1)))
  const offset = (round * step) % list.length
  const rotated = [...list.slice(offset), ...list.slice(0, offset)]
  return round % 2 === 1 ? rotated.reverse() : rotated
}

// ---------------------------------------------------------------------------------------------
// The memory step: 100k distinct entries through a cached route with a large local tier.

async function memoryStep (redisUrl, options, servers) {
  // Memory is not a throughput comparison: the server and the load generator run unpinned, as
  // deployed (Redis stays on CPU 1). Pinned (the server on one core, the load generator on the
  // other), the tier's RSS figure came out 30 to 45 MiB higher (81 to 86 MiB against 39 to 51
  // unpinned, over the control): the load then runs at another pace and the collections fall
  // elsewhere.
  if (pinning) pin(process.pid, `0-${os.cpus().length - 1}`)
  // One run's figure is not to be trusted: single runs gave 38 to 89 MiB, depending on where
  // glibc's heap puts the requests' garbage. So several rounds, each a run with the tier and one
  // without, which goes first alternating, and the round with the median difference.
  const rounds = []
  for (let round = 0; round < options.memoryRounds; round++) {
    const order = round % 2 === 0 ? ['memory', 'memory-control'] : ['memory-control', 'memory']
    const runs = {}
    for (const variant of order) {
      if (variant === 'memory-control' && !options.memoryControl) continue
      runs[variant] = await loadDistinctEntries(variant, redisUrl, options, servers)
    }
    const withTier = runs.memory
    const control = runs['memory-control'] ?? null
    // Without a control run, the whole growth counts against the tier.
    const tierRss = rssDelta(withTier) - (control ? rssDelta(control) : 0)
    rounds.push({ withTier, control, tierRss })
    console.log(`  round ${round + 1}: local tier RSS ${fmtMiB(tierRss)}`)
  }
  const byTierRss = [...rounds].sort((a, b) => a.tierRss - b.tierRss)
  const { withTier, control, tierRss } = byTierRss[Math.floor((byTierRss.length - 1) / 2)]
  const stats = withTier.after.statistics ?? {}
  const local = stats.local ?? Object.fromEntries(Object.entries(stats).filter(([key]) => /local/i.test(key)))
  const delta = (run, field) => run.after.memory[field] - run.before.memory[field]
  return {
    entries: options.entries,
    maxBytes: MEMORY_LOCAL.maxBytes,
    maxEntries: MEMORY_LOCAL.maxEntries,
    gc: withTier.after.gc,
    tierRss,
    tierRssByRound: rounds.map((r) => r.tierRss),
    rssBefore: withTier.before.memory.rss,
    rssAfter: withTier.after.memory.rss,
    rssDelta: rssDelta(withTier),
    heapUsedDelta: delta(withTier, 'heapUsed'),
    arrayBuffersDelta: delta(withTier, 'arrayBuffers'),
    controlRssDelta: control ? rssDelta(control) : null,
    controlHeapUsedDelta: control ? delta(control, 'heapUsed') : null,
    controlArrayBuffersDelta: control ? delta(control, 'arrayBuffers') : null,
    hits: stats.hits,
    misses: stats.misses,
    local: local && Object.keys(local).length > 0 ? local : null,
    tier: withTier.after.tier ?? null,
    snapshots: { withTier: { before: withTier.before.memory, after: withTier.after.memory }, control: control && { before: control.before.memory, after: control.after.memory } },
    where: { withTier: whereDelta(withTier), control: control && whereDelta(control) },
    passes: { withTier: withTier.passes, control: control?.passes ?? null }
  }
}

const rssDelta = (run) => run.after.memory.rss - run.before.memory.rss

/** Growth of each V8 space and kind of mapping between the two snapshots of a run (see server.js). */
function whereDelta ({ before, after }) {
  if (!before.where || !after.where) return null
  const diff = (from, to) => Object.fromEntries(Object.keys(to ?? {}).map((key) => [key, to[key] - (from?.[key] ?? 0)]))
  return { spaces: diff(before.where.spaces, after.where.spaces), maps: after.where.maps && diff(before.where.maps, after.where.maps) }
}

/** Two passes of `entries` distinct URLs through one fresh server; memory read before and after. */
async function loadDistinctEntries (variant, redisUrl, { entries, connections }, servers) {
  const server = await startServer(variant, redisUrl, ['--expose-gc'], { pinned: false })
  servers.push(server)
  const snapshot = async () => JSON.parse((await request(server.port, '/__bench/memory')).body.toString())
  await sleep(200)
  const before = await snapshot()
  const passes = []
  // The first pass stores every entry (misses), the second reads each back (hits), so a local
  // tier that fills only on reads from Redis holds them all too.
  for (let pass = 0; pass < 2; pass++) {
    let next = 0
    const started = Date.now()
    const result = await runAutocannon({
      url: `http://127.0.0.1:${server.port}`,
      connections,
      pipelining: 1,
      amount: entries,
      requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/item/${next++ % entries}` }) }]
    })
    const failed = result.errors + result.timeouts + result.non2xx
    if (failed > 0) console.warn(`warning: ${variant} pass ${pass + 1}: ${failed} requests failed`)
    passes.push({ requests: result.requests.total, seconds: (Date.now() - started) / 1000, reqPerSec: result.requests.mean, failed })
  }
  await sleep(500)
  const after = await snapshot()
  console.log(`  ${variant}: RSS ${fmtMiB(before.memory.rss)} -> ${fmtMiB(after.memory.rss)}, passes at ${passes.map((p) => `${fmtInt(p.reqPerSec)} req/s`).join(' and ')}`)
  await stopChild(server.child, { message: 'shutdown', timeoutMs: 15_000 })
  servers.splice(servers.indexOf(server), 1)
  return { before, after, passes }
}

// ---------------------------------------------------------------------------------------------
// Output.

const fmtInt = (n) => (n === undefined || n === null || Number.isNaN(n) ? 'n/a' : Math.round(n).toLocaleString('en-US'))
const fmtMiB = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`
const snapshotDeltas = ({ before, after }) => `${fmtMiB(after.heapTotal - before.heapTotal)} / ${fmtMiB(after.external - before.external)}`
/** Rows of V8 space growth and of malloc heap against anonymous mappings, when the server told them. */
function whereCells (label, where) {
  if (!where) return []
  const spaces = Object.entries(where.spaces).filter(([, bytes]) => Math.abs(bytes) >= 64 * 1024)
  const rows = [[`V8 spaces grown, ${label}`, spaces.length === 0 ? 'none' : spaces.map(([name, bytes]) => `${name} ${fmtMiB(bytes)}`).join(', ')]]
  if (where.maps) rows.push([`malloc heap / anonymous / other maps grown, ${label}`, `${fmtMiB(where.maps.heap)} / ${fmtMiB(where.maps.anonymous)} / ${fmtMiB(where.maps.other)}`])
  return rows
}
const fmtRatio = (r) => (r === null ? 'n/a' : `${r.toFixed(2)}x`)

/** The installed version of a package, also of one whose exports hide its package.json. */
function packageVersion (resolve, name) {
  try {
    let dir = dirname(resolve.resolve(name))
    while (dir !== dirname(dir)) {
      const file = join(dir, 'package.json')
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, 'utf8'))
        if (pkg.name === name) return pkg.version
      }
      dir = dirname(dir)
    }
  } catch {}
  return 'unknown'
}

function machineInfo (redisVersion) {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model?.trim() ?? 'unknown',
    cores: cpus.length,
    memory: `${Math.round(os.totalmem() / 1024 ** 3)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: redisVersion,
    loadAverageAtStart: os.loadavg().map((n) => n.toFixed(2)).join(' '),
    packages: {
      fastify: packageVersion(rootRequire, 'fastify'),
      'ioredis (ours, hand-written)': packageVersion(rootRequire, 'ioredis'),
      'ioredis (bentocache, async-cache-dedupe)': packageVersion(benchRequire, 'ioredis'),
      bentocache: packageVersion(benchRequire, 'bentocache'),
      'async-cache-dedupe': packageVersion(benchRequire, 'async-cache-dedupe'),
      autocannon: packageVersion(benchRequire, 'autocannon')
    }
  }
}

function summarize (benches, results) {
  const rows = []
  for (const bench of benches) {
    const runs = results[bench.name]
    if (!runs || runs.length === 0) continue
    rows.push({
      name: bench.name,
      label: bench.label ?? VARIANTS[bench.server],
      reqPerSec: median(runs.map((r) => r.reqPerSec)),
      p99: median(runs.map((r) => r.p99)),
      rounds: runs.map((r) => r.reqPerSec),
      bytes: bench.bytes,
      failures: runs.reduce((sum, r) => sum + r.errors + r.timeouts + r.non2xx, 0)
    })
  }
  return rows
}

function ratios (rows) {
  const by = Object.fromEntries(rows.map((row) => [row.name, row.reqPerSec]))
  const ratio = (num, den) => (by[num] && by[den] ? by[num] / by[den] : null)
  return {
    targets: TARGETS.map((t) => {
      const value = ratio(t.num, t.den)
      return { ...t, value, pass: value === null ? null : value >= t.min }
    }).filter((t) => t.value !== null),
    info: INFORMATIONAL.map((t) => ({ ...t, value: ratio(t.num, t.den) })).filter((t) => t.value !== null)
  }
}

function textTable (headers, rows, align) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => String(row[i]).length)))
  const line = (cells) => cells.map((cell, i) => (align[i] === 'r' ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i]))).join('  ')
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

function mdTable (headers, rows, align) {
  const sep = align.map((a) => (a === 'r' ? '---:' : '---'))
  return [headers, sep, ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n')
}

function report (summary) {
  const { rows, ratio, memory, machine, config } = summary
  const staticRate = rows.find((r) => r.name === 'static')?.reqPerSec
  const headers = ['variant', 'req/s', 'p99 ms', 'vs static', 'req/s by round', 'body B', 'what']
  const align = ['l', 'r', 'r', 'r', 'l', 'r', 'l']
  const cells = rows.map((r) => [
    r.name + (r.failures > 0 ? ` (${r.failures} failed)` : ''),
    fmtInt(r.reqPerSec),
    r.p99.toFixed(1),
    staticRate ? `${(r.reqPerSec / staticRate).toFixed(2)}x` : 'n/a',
    r.rounds.map((v) => fmtInt(v)).join(' / '),
    fmtInt(r.bytes),
    r.label
  ])
  const targetHeaders = ['target', 'ratio', 'needed', 'result']
  const targetCells = ratio.targets.map((t) => [t.label, fmtRatio(t.value), `>= ${t.min}x`, t.pass ? 'PASS' : 'FAIL'])
  const infoCells = ratio.info.map((t) => [t.label, fmtRatio(t.value)])
  let memoryCells = null
  if (memory) {
    // The tier's own memory: the RSS growth with it, less the growth of the same load without it
    // (the control run), in the median round; the other rows are that round's.
    const { tierRss } = memory
    const pass = tierRss <= memory.maxBytes
    const deltas = (rss, heap, buffers) => `${fmtMiB(rss)} (heap used ${fmtMiB(heap)}, array buffers ${fmtMiB(buffers)})`
    memoryCells = [
      ['distinct entries, each requested twice', fmtInt(memory.entries)],
      ['RSS before / after', `${fmtMiB(memory.rssBefore)} / ${fmtMiB(memory.rssAfter)}`],
      ['RSS delta with the local tier', deltas(memory.rssDelta, memory.heapUsedDelta, memory.arrayBuffersDelta)],
      ...(memory.controlRssDelta === null ? [] : [['RSS delta, same load, no local tier', deltas(memory.controlRssDelta, memory.controlHeapUsedDelta, memory.controlArrayBuffersDelta)]]),
      // Where the RSS goes: heap reserved by V8 against heap used, and native memory outside the heap.
      ['heap total / external deltas with the tier', snapshotDeltas(memory.snapshots.withTier)],
      ...(memory.snapshots.control ? [['heap total / external deltas, no local tier', snapshotDeltas(memory.snapshots.control)]] : []),
      ...whereCells('with the tier', memory.where.withTier),
      ...whereCells('no local tier', memory.where.control),
      ['local tier maxBytes / maxEntries', `${fmtMiB(memory.maxBytes)} / ${fmtInt(memory.maxEntries)}`],
      ['local tier as it counts itself', memory.local ? (memory.local.bytes !== undefined ? `${fmtInt(memory.local.entries)} entries, ${fmtMiB(memory.local.bytes)}` : JSON.stringify(memory.local)) : 'none reported'],
      ...(memory.tier ? [['local tier buffers / ArrayBuffers behind them', `${fmtMiB(memory.tier.bufferBytes)} / ${fmtMiB(memory.tier.backingBytes)}`]] : []),
      ...(memory.tier?.segments === undefined ? [] : [['local tier segments (all / hit, so left to the GC when emptied)', `${fmtInt(memory.tier.segments)} / ${fmtInt(memory.tier.exposedSegments)}`]]),
      ['hits / misses', `${fmtInt(memory.hits)} / ${fmtInt(memory.misses)}`],
      ['local tier RSS by round (delta less the control\'s)', memory.tierRssByRound.map(fmtMiB).join(' / ')],
      ['local tier RSS, median round', fmtMiB(tierRss)],
      ['local tier RSS within maxBytes', pass ? 'PASS' : 'FAIL']
    ]
    memory.pass = pass
  }
  const machineLine = `${machine.cpu}, ${machine.cores} cores, ${machine.memory}, ${machine.os}, Node ${machine.node}, Redis ${machine.redis}`
  const configLine = `${config.rounds} round(s) x ${config.duration} s per variant, ${config.connections} connections, pipelining 1, medians of the rounds; ${config.pinned ? `server on CPU ${SERVER_CPU}, load generator and Redis on CPU ${RUNNER_CPU}` : 'not pinned'}; load average at start ${machine.loadAverageAtStart}`
  const versionsLine = Object.entries(machine.packages).map(([k, v]) => `${k} ${v}`).join(', ')

  // A --memory-only run has no throughput rows: only the memory table then.
  const throughput = rows.length === 0
    ? []
    : [
        '',
        textTable(headers, cells, align),
        '',
        textTable(targetHeaders, targetCells, ['l', 'r', 'r', 'l']),
        '',
        textTable(['ratio (informational)', 'value'], infoCells, ['l', 'r'])
      ]
  const text = [
    ...throughput,
    ...(memoryCells ? ['', textTable(['memory step', 'value'], memoryCells, ['l', 'l'])] : []),
    '',
    `machine: ${machineLine}`,
    `run:     ${configLine}`,
    `libs:    ${versionsLine}`,
    ''
  ].join('\n')

  const md = [
    `Benchmark of ${summary.date} (\`npm run bench\`${config.argv.length ? ` with \`${config.argv.join(' ')}\`` : ''}).`,
    '',
    `Machine: ${machineLine}.`,
    `Run: ${configLine}.`,
    `Libraries: ${versionsLine}.`,
    '',
    mdTable(headers, cells.map((row) => row.map((cell) => String(cell))), align),
    '',
    mdTable(targetHeaders, targetCells, ['l', 'r', 'r', 'l']),
    '',
    mdTable(['ratio (informational)', 'value'], infoCells, ['l', 'r']),
    ...(memoryCells ? ['', mdTable(['memory step', 'value'], memoryCells, ['l', 'l'])] : []),
    ''
  ].join('\n')
  return { text, md }
}

/** The workloads' part of results.md (written by --workloads runs), kept when this rewrites it. */
function workloadSections () {
  const file = new URL('results.md', import.meta.url)
  const md = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const at = md.indexOf('\n## Workloads\n')
  return at === -1 ? '' : md.slice(at)
}

// ---------------------------------------------------------------------------------------------

async function main () {
  // The realistic workloads have their own runner and options.
  if (process.argv.slice(2).some((arg) => arg === '--workloads' || arg.startsWith('--workloads='))) {
    const workloads = await import('./workloads/main.js')
    return workloads.main(process.argv.slice(2))
  }
  let options
  try {
    options = parseOptions()
  } catch (err) {
    console.error(`${err.message}\n\n${HELP}`)
    process.exit(2)
  }
  const servers = []
  let redis = null

  const onSignal = (signal) => {
    process.stderr.write(`\n${signal}: stopping the servers and redis-server\n`)
    stopAll(servers, redis).finally(() => process.exit(130))
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    try {
      rootRequire.resolve('./dist/cjs.js')
    } catch {
      throw new Error('../dist/cjs.js is missing: run `npm run build` at the repository root first (or use `npm run bench` there)')
    }

    pinning = startPinning(options.pin)
    console.log(pinning ? `pinned: servers on CPU ${SERVER_CPU}, this runner (autocannon) and Redis on CPU ${RUNNER_CPU}` : 'not pinned')
    redis = await startRedis()
    if (pinning) pin(redis.child.pid, RUNNER_CPU)
    console.log(`redis-server ${redis.version} on port ${redis.port} (throwaway, no persistence)`)

    const needed = [...new Set(options.benches.map((b) => b.server))]
    for (const variant of needed) servers.push(await startServer(variant, redis.url))
    const serverOf = (bench) => servers.find((s) => s.variant === bench.server)
    console.log(`started ${servers.length} servers: ${servers.map((s) => `${s.variant}:${s.port}`).join(', ')}`)

    // Check every benchmark measures what it claims, then warm each one up once.
    for (const bench of options.benches) {
      const check = await verify(bench, serverOf(bench))
      if (check.problems.length > 0) throw new Error(`${bench.name}: ${check.problems.join(', ')}`)
      bench.bytes = check.bytes
    }
    const warmup = options.quick ? 0.5 : 1
    if (options.benches.length > 0) {
      process.stdout.write(`warming up (${warmup} s each)`)
      for (const bench of options.benches) {
        await measure(bench, serverOf(bench), { duration: warmup, connections: options.connections })
        process.stdout.write('.')
      }
      process.stdout.write('\n')
    }

    const results = Object.fromEntries(options.benches.map((b) => [b.name, []]))
    for (let round = 0; round < options.rounds; round++) {
      for (const bench of orderFor(round, options.rounds, options.benches)) {
        await sleep(250)
        const run = await measure(bench, serverOf(bench), options)
        results[bench.name].push({ round: round + 1, ...run })
        const failed = run.errors + run.timeouts + run.non2xx
        console.log(`round ${round + 1}/${options.rounds}  ${bench.name.padEnd(28)} ${fmtInt(run.reqPerSec).padStart(8)} req/s  p99 ${String(run.p99).padStart(4)} ms${failed ? `  ${failed} failed` : ''}`)
      }
    }
    // Every hit benchmark must still have been a hit at the end.
    for (const bench of options.benches) {
      const check = await verify(bench, serverOf(bench))
      if (check.problems.length > 0) console.warn(`warning: ${bench.name} after the rounds: ${check.problems.join(', ')}`)
    }

    let memory = null
    if (options.memory) {
      console.log(`memory step: ${fmtInt(options.entries)} distinct entries, local tier ${JSON.stringify({ maxEntries: MEMORY_LOCAL.maxEntries, maxBytes: MEMORY_LOCAL.maxBytes })}`)
      memory = await memoryStep(redis.url, options, servers)
    }

    const rows = summarize(options.benches, results)
    const summary = {
      date: new Date().toISOString(),
      machine: machineInfo(redis.version),
      config: { rounds: options.rounds, duration: options.duration, connections: options.connections, pipelining: 1, pinned: pinning, argv: process.argv.slice(2) },
      rows,
      ratio: ratios(rows),
      memory,
      raw: results
    }
    const { text, md } = report(summary)
    console.log(text)

    if (options.write) {
      const { raw, ...rest } = summary
      writeFileSync(new URL('results.json', import.meta.url), JSON.stringify({ ...rest, runs: raw }, null, 2) + '\n')
      writeFileSync(new URL('results.md', import.meta.url), md + workloadSections())
      console.log('wrote bench/results.json and bench/results.md')
    } else {
      console.log('results not written (partial run; pass --write to write bench/results.json and results.md)')
    }

    const failed = summary.ratio.targets.some((t) => !t.pass) || (memory && !memory.pass)
    await stopAll(servers, redis)
    process.exitCode = options.strict && failed ? 1 : 0
  } catch (err) {
    console.error(`\nbenchmark failed: ${err.stack ?? err}`)
    await stopAll(servers, redis).catch(() => {})
    process.exitCode = 1
  }
}

main()
