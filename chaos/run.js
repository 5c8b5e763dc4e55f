'use strict'
// The fault report: `npm run chaos` (builds first, then runs this file).
//
// Starts a throwaway redis-server on a free port (never 6379) and an app with the plugin on a
// local port, then runs each fault scenario under a bounded HTTP load (a fixed number of
// keep-alive connections for a fixed time) and prints, per scenario: requests sent, requests
// failed (non-2xx, errors, timeouts), p99 latency overall and during the fault, and the time to
// recover: from Redis being back to the first cache hit of a request sent after that. The
// latest report is written to chaos/results.md.
//
// Targets (issue 5): zero failed requests in every scenario, p99 under 1 s while Redis hangs,
// hits resumed within 5 s of Redis coming back. `--strict` exits 1 when one is missed.
//
// Options: --connections N (default 32), --fault S (seconds of each fault, default 3),
// --strict, --no-write.
const { spawn } = require('node:child_process')
const { mkdtempSync, rmSync, writeFileSync } = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const { join } = require('node:path')
const { parseArgs } = require('node:util')
const Fastify = require('fastify')
const fastifyRedisCache = require('../dist/cjs.js')

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '32' },
    fault: { type: 'string', default: '3' },
    strict: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false }
  }
})
const CONNECTIONS = Number(args.connections)
const FAULT_MS = Number(args.fault) * 1000
const WARM_MS = 2000
const AFTER_MS = 5000
const REQUEST_TIMEOUT_MS = 5000
const ITEMS = 50
const HOST = '127.0.0.1'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// --- a throwaway redis-server --------------------------------------------------------------

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen({ port: 0, host: HOST }, () => {
      const { port } = srv.address()
      srv.close(() => port === 6379 ? resolve(freePort()) : resolve(port))
    })
  })
}

function ping (port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: HOST })
    const done = (ok) => { clearTimeout(timer); socket.destroy(); resolve(ok) }
    const timer = setTimeout(done, 300, false)
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'))
    socket.on('data', (chunk) => done(chunk.toString().startsWith('+PONG')))
  })
}

class RedisProcess {
  constructor (port) {
    this.port = port
    this.dir = mkdtempSync(join(os.tmpdir(), 'chaos-redis-'))
    this.child = null
  }

  async start () {
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', this.dir], { stdio: 'ignore' })
    this.child = child
    this.exited = new Promise((resolve) => child.once('exit', resolve))
    const deadline = Date.now() + 5000
    while (!(await ping(this.port))) {
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not start`)
      await sleep(20)
    }
  }

  async kill (signal = 'SIGKILL') {
    if (this.child === null) return
    this.child.kill('SIGCONT')
    this.child.kill(signal)
    await this.exited
    this.child = null
  }

  pause () { this.child.kill('SIGSTOP') }
  resume () { this.child.kill('SIGCONT') }

  async restart () {
    await this.kill('SIGTERM')
    await this.start()
  }

  async stop () {
    await this.kill('SIGKILL')
    rmSync(this.dir, { recursive: true, force: true })
  }
}

// --- the app --------------------------------------------------------------------------------

async function startApp (redisUrl) {
  const app = Fastify({ logger: false })
  await app.register(fastifyRedisCache, {
    redis: { url: redisUrl },
    prefix: 'chaos',
    routes: false,
    commandTimeout: 200,
    circuitBreaker: { failureThreshold: 3, resetTimeout: 500 }
  })
  // A handler that costs something: the cache is what keeps it off the hot path.
  app.get('/items/:id', { config: { cache: { ttl: 300, namespace: 'items' } } }, async (request) => {
    await sleep(5)
    return { id: request.params.id, name: `item ${request.params.id}`, tags: ['a', 'b', 'c'], body: 'x'.repeat(512) }
  })
  await app.listen({ port: 0, host: HOST })
  return { app, port: app.server.address().port }
}

// --- load -----------------------------------------------------------------------------------

function load (port) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONNECTIONS })
  const samples = []
  const flag = { running: true }
  const one = (id) => new Promise((resolve) => {
    const start = performance.now()
    const request = http.get({ host: HOST, port, path: `/items/${id}`, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      res.resume()
      res.on('end', () => resolve({ start, end: performance.now(), status: res.statusCode, cache: res.headers['x-cache'] ?? null }))
      res.on('error', () => resolve({ start, end: performance.now(), status: 0, cache: null }))
    })
    request.on('timeout', () => request.destroy(new Error('timeout')))
    request.on('error', () => resolve({ start, end: performance.now(), status: 0, cache: null }))
  })
  const workers = Array.from({ length: CONNECTIONS }, async (_, w) => {
    let i = w
    while (flag.running) samples.push(await one(i++ % ITEMS))
  })
  return {
    samples,
    async stop () {
      flag.running = false
      await Promise.all(workers)
      agent.destroy()
    }
  }
}

function percentile (values, p) {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)]
}

// --- scenarios ------------------------------------------------------------------------------

const SCENARIOS = [
  {
    name: 'no fault (baseline)',
    async fault () { await sleep(FAULT_MS) }
  },
  {
    name: 'Redis killed (SIGKILL), restarted empty after the fault',
    async fault (redis) {
      await redis.kill()
      await sleep(FAULT_MS)
      await redis.start()
    }
  },
  {
    name: 'Redis hung (SIGSTOP), resumed (SIGCONT) after the fault',
    hang: true,
    async fault (redis) {
      redis.pause()
      await sleep(FAULT_MS)
      redis.resume()
    }
  },
  {
    name: 'Redis restarted empty (SIGTERM, start at once)',
    async fault (redis) { await redis.restart() }
  }
]

async function runScenario (scenario, redis, port) {
  const traffic = load(port)
  await sleep(WARM_MS)
  const faultAt = performance.now()
  await scenario.fault(redis)
  const backAt = performance.now()
  await sleep(AFTER_MS)
  await traffic.stop()
  const { samples } = traffic
  const latencies = samples.map((s) => s.end - s.start)
  const during = samples.filter((s) => s.start >= faultAt && s.start < backAt).map((s) => s.end - s.start)
  const firstHit = samples.filter((s) => s.start >= backAt && s.cache === 'HIT').reduce((min, s) => Math.min(min, s.end), Infinity)
  const outcomes = {}
  for (const s of samples) outcomes[s.cache ?? 'none'] = (outcomes[s.cache ?? 'none'] ?? 0) + 1
  return {
    name: scenario.name,
    hang: scenario.hang === true,
    sent: samples.length,
    failed: samples.filter((s) => s.status < 200 || s.status > 299).length,
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    faultP99: percentile(during, 0.99),
    faultMax: during.length === 0 ? 0 : Math.max(...during),
    faultRequests: during.length,
    recoverMs: firstHit === Infinity ? null : firstHit - backAt,
    outcomes
  }
}

function verdict (r) {
  const misses = []
  if (r.failed > 0) misses.push(`${r.failed} failed`)
  if (r.hang && r.faultP99 >= 1000) misses.push('p99 while hung >= 1 s')
  if (r.recoverMs === null || r.recoverMs > 5000) misses.push('no hit within 5 s')
  return misses.length === 0 ? 'PASS' : `FAIL (${misses.join(', ')})`
}

const ms = (n) => n === null ? 'never' : `${Math.round(n)} ms`

function table (results) {
  const lines = [
    '| scenario | requests sent | failed | p50 | p99 | p99 during fault | max during fault | time to recover | result |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |'
  ]
  for (const r of results) {
    lines.push(`| ${r.name} | ${r.sent} | ${r.failed} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.faultP99)} | ${ms(r.faultMax)} | ${ms(r.recoverMs)} | ${verdict(r)} |`)
  }
  return lines.join('\n')
}

async function main () {
  const redis = new RedisProcess(await freePort())
  await redis.start()
  const redisVersion = await new Promise((resolve) => {
    const child = spawn('redis-server', ['--version'])
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.on('close', () => resolve((/v=(\S+)/.exec(out) ?? [])[1] ?? 'unknown'))
  })
  const { app, port } = await startApp(`redis://${HOST}:${redis.port}`)
  const results = []
  try {
    for (const scenario of SCENARIOS) {
      process.stdout.write(`running: ${scenario.name} ...\n`)
      results.push(await runScenario(scenario, redis, port))
      // Each scenario starts from a connected, closed circuit.
      const deadline = Date.now() + 10_000
      while (app.cache.getStatistics().circuit !== 'closed' || !app.cache.getStatistics().connected) {
        if (Date.now() > deadline) throw new Error('the cache did not recover between scenarios')
        await sleep(50)
      }
    }
  } finally {
    await app.close()
    await redis.stop()
  }

  const report = [
    '# Fault report (`npm run chaos`)',
    '',
    `${new Date().toISOString()}; Node ${process.version}, redis-server ${redisVersion}, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? 'unknown'}).`,
    '',
    `Load: ${CONNECTIONS} keep-alive connections looping over ${ITEMS} cached URLs (a 5 ms handler), ${WARM_MS / 1000} s warm-up, ` +
      `${FAULT_MS / 1000} s fault, ${AFTER_MS / 1000} s after; plugin with commandTimeout 200 ms and circuitBreaker { failureThreshold: 3, resetTimeout: 500 }.`,
    '"Failed" counts non-2xx answers, errors and timeouts (5 s). "Time to recover" runs from Redis being back (restart done or SIGCONT sent) to the first X-Cache: HIT of a request sent after that.',
    'Targets: zero failed requests in every scenario, p99 under 1 s while Redis hangs, hits resumed within 5 s of Redis coming back.',
    '',
    table(results),
    '',
    'Answers by X-Cache:',
    '',
    ...results.map((r) => `- ${r.name}: ${Object.entries(r.outcomes).map(([k, v]) => `${k} ${v}`).join(', ')}`),
    ''
  ].join('\n')
  process.stdout.write(`\n${report}\n`)
  if (!args['no-write']) writeFileSync(join(__dirname, 'results.md'), report)
  if (args.strict && results.some((r) => verdict(r) !== 'PASS')) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
