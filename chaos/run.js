'use strict'
// The fault report: `npm run chaos` (builds first, then runs this file).
//
// Each scenario starts its own throwaway redis-server process(es) on free ports (never 6379) and
// its own app instance(s) with the plugin (chaos/app.js: an items API over an in-process
// "database" with a version counter per item), then runs a bounded HTTP load: a fixed number of
// keep-alive connections reading items for a fixed time, plus two loops of mutations (POST, each
// bumping an item's version and invalidating its entry) interleaved with them. It prints, per
// scenario: reads sent, mutations sent, requests failed (non-2xx, errors, timeouts), stale reads
// (chaos/stale.js), p50 and p99 latency overall and during the fault, and the time to recover:
// from Redis being back to the first cache hit of a request sent after that. The latest report
// is written to chaos/results.md.
//
// A stale read is a read that carries an older version of its item than a mutation whose
// response had already arrived when the read was sent, on the instance that made the mutation;
// on another instance, one sent more than 1 s after that response, or after Redis was reachable
// again when the mutation came during the fault. Mutations take the four ways of invalidating in
// turn (route `bust` by keys, route `bust` by tags, `fastify.cache.delete`, `invalidateTags`),
// except where a scenario says otherwise.
//
// Scenarios:
//
// - The original four: no fault; Redis killed with SIGKILL and restarted empty after the fault;
//   Redis hung with SIGSTOP for the fault and resumed; Redis stopped with SIGTERM and restarted
//   empty at once. They now run with mutations too, so they also count stale reads.
// - 1. Invalidations while Redis hangs for `--hang` seconds, four ways: SIGSTOP then SIGCONT
//   (commands sent meanwhile are read when it resumes); `DEBUG SLEEP` (the server blocks itself;
//   needs `--enable-debug-command yes` on Redis 7); `CLIENT PAUSE <ms> WRITE` (reads are
//   answered, every write, PUBLISH and script waits until the pause ends, so a bust times out
//   while the old entry stays readable); and a restart with `appendonly yes`: SIGKILL, down for
//   the hang, started again on the same port from its append-only file, so what was written
//   before the kill comes back, and a bust refused while it was down never happens.
// - 2. The cache-aside race: the read handler (or the `getOrSet` callback, in 2b) reads the
//   database and then spends 50 ms before returning; each mutation loop mutates one item twice,
//   20 ms apart, so a second mutation lands while a miss caused by the first is still in its
//   handler holding the version it read. Storing that response after the bust is a stale entry.
// - 3. Tags under memory pressure: `maxmemory 2200kb` (about 1.2 MB over an empty server, a
//   little less than the 1,000 items and their tag sets take) with `allkeys-lru` (3a) or
//   `volatile-lru` (3b, every key the cache writes has a ttl), 1,000 items each tagged
//   `item:<id>`, mutations invalidating by tag only (route `bust.tags` and `invalidateTags`).
//   Redis evicts the least recently used keys; a tag set is touched only when an entry is
//   stored, the entry on every read, so tag sets go first and the tag no longer finds its
//   entry. The keys Redis evicted are reported.
// - 4. Failover behind one endpoint: primary A with replica B, the app connected through a TCP
//   proxy (chaos/proxy.js) standing for the endpoint. B is promoted (`REPLICAOF NO ONE`), A is
//   demoted to a replica of B a quarter of the hang later, and after another quarter the proxy
//   moves every open connection to B without closing them. Busts that reach A after B's
//   promotion are lost with A's data, those after its demotion are refused (READONLY).
// - 5. Two instances with `local: { maxEntries: 10000 }`, reads spread over both, mutations on
//   the first only. 5a: Redis hung with SIGSTOP for the hang. 5b: the second instance reaches
//   Redis through a proxy, which at the fault stops forwarding bytes on that instance's
//   subscriber connection (the one that has sent SUBSCRIBE) without closing it, for the rest of
//   the scenario: Redis stays reachable, invalidations published by the first instance never
//   arrive. For both, the second instance's stale reads are those past the 1 s grace.
// - 6. Locked-down Redis: the app connects as an ACL user with `+@all -@scripting`. Key busts
//   work; whatever needs a script (tag bookkeeping, rate-limit windows, lock release) is refused.
//   After the load, 20 requests to a route limited to 5 per minute say whether `rateLimit` is
//   enforced (the baseline does the same, as the control).
//
// Targets (issue 5): zero failed requests in every scenario, p99 under 1 s while Redis hangs,
// hits resumed within 5 s of Redis coming back; and (the invalidation guarantees) no stale read.
// `--strict` exits 1 when one is missed.
//
// Options: --connections N (default 32), --fault S (seconds of the original faults, default 3),
// --hang S (seconds of the other faults, default 2), --after S (load after the fault, default 5),
// --only TEXT (scenarios whose name contains it), --strict, --no-write.
const { execFileSync } = require('node:child_process')
const { writeFileSync } = require('node:fs')
const os = require('node:os')
const { join } = require('node:path')
const { parseArgs } = require('node:util')
const { RATE_LIMIT, closeAllApps } = require('./app')
const { startLoad, probeRateLimit, percentile } = require('./load')
const { closeAllProxies } = require('./proxy')
const { sleep, redisVersion, slowCommands, stopAll } = require('./redis')
const { standardSetup } = require('./scenarios/common')
const { GRACE_MS, staleReads } = require('./stale')

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '32' },
    fault: { type: 'string', default: '3' },
    hang: { type: 'string', default: '2' },
    after: { type: 'string', default: '5' },
    only: { type: 'string' },
    strict: { type: 'boolean', default: false },
    'no-write': { type: 'boolean', default: false }
  }
})
const opts = {
  connections: Number(args.connections),
  faultMs: Number(args.fault) * 1000,
  hangMs: Number(args.hang) * 1000,
  afterMs: Number(args.after) * 1000,
  maxmemory: '2200kb',
  manyItems: 1000
}
const WARM_MS = 2000
const ITEMS = 50
const MUTATORS = 2
const MUTATION_PAUSE_MS = 40
const RATE_LIMIT_PROBES = 20

const SCENARIOS = [
  ...require('./scenarios/outages')(opts),
  ...require('./scenarios/invalidation')(opts),
  ...require('./scenarios/topology')(opts)
].filter((scenario) => args.only === undefined || scenario.name.includes(args.only))

function loadPlan (scenario, env) {
  const ports = env.apps.map((instance) => instance.port)
  return {
    readPorts: ports,
    mutatePorts: env.mutateOn.map((i) => ports[i]),
    mutateInstances: env.mutateOn,
    items: scenario.items ?? ITEMS,
    connections: opts.connections,
    mutators: MUTATORS,
    pause: MUTATION_PAUSE_MS,
    modes: scenario.modes,
    burst: scenario.burst ?? 1,
    burstGap: scenario.burstGap ?? 0
  }
}

async function runScenario (scenario) {
  const env = await (scenario.setup ?? standardSetup)(scenario)
  try {
    const traffic = startLoad(loadPlan(scenario, env))
    await sleep(WARM_MS)
    const faultAt = performance.now()
    await scenario.fault(env)
    const backAt = performance.now()
    await sleep(opts.afterMs)
    await traffic.stop()
    const notes = scenario.after === undefined ? [] : await scenario.after(env)
    if (scenario.checkRateLimit) {
      const refused = await probeRateLimit(env.apps[0].port, RATE_LIMIT_PROBES)
      const over = RATE_LIMIT_PROBES - RATE_LIMIT.max
      notes.push(`rateLimit (max ${RATE_LIMIT.max}): ${refused} of ${over} requests over the limit refused (${refused === over ? 'enforced' : 'NOT enforced'})`)
    }
    const slow = await slowCommands()
    if (slow.slowest !== null) notes.push(`slowest Redis command: ${slow.slowest.command} (${Math.round(slow.slowest.micros / 1000)} ms)`)
    return { ...summarize(scenario, traffic, { faultAt, backAt }, notes), slow: slow.count }
  } finally {
    await env.cleanup()
  }
}

function summarize (scenario, { reads, mutations }, { faultAt, backAt }, notes) {
  const latencies = reads.map((s) => s.end - s.start)
  const during = reads.filter((s) => s.start >= faultAt && s.start < backAt).map((s) => s.end - s.start)
  const firstHit = reads.filter((s) => s.start >= backAt && s.cache === 'HIT').reduce((min, s) => Math.min(min, s.end), Infinity)
  const outcomes = {}
  for (const s of reads) outcomes[s.cache ?? 'none'] = (outcomes[s.cache ?? 'none'] ?? 0) + 1
  const failed = (s) => s.status < 200 || s.status > 299
  return {
    name: scenario.name,
    hang: scenario.hang === true,
    sent: reads.length,
    mutations: mutations.length,
    failed: reads.filter(failed).length + mutations.filter(failed).length,
    failedMutations: mutations.filter(failed).length,
    stale: staleReads(reads, mutations, scenario.redisUp ? null : { from: faultAt, to: backAt }),
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    faultP99: percentile(during, 0.99),
    faultMax: during.length === 0 ? 0 : Math.max(...during),
    recoverMs: firstHit === Infinity ? null : firstHit - backAt,
    outcomes,
    notes
  }
}

function verdict (r) {
  if (r.error !== undefined) return `ERROR (${r.error})`
  const misses = []
  if (r.failed > 0) misses.push(`${r.failed} failed`)
  if (r.hang && r.faultP99 >= 1000) misses.push('p99 while hung >= 1 s')
  if (r.recoverMs === null || r.recoverMs > 5000) misses.push('no hit within 5 s')
  if (r.stale.count > 0) misses.push(`${r.stale.count} stale reads`)
  if (r.slow > 0) misses.push(`${r.slow} Redis commands over 100 ms`)
  return misses.length === 0 ? 'PASS' : `FAIL (${misses.join(', ')})`
}

const ms = (n) => n === null ? 'never' : `${Math.round(n)} ms`

function table (results) {
  const lines = [
    '| scenario | requests sent | mutations | failed | stale reads | slow commands | p50 | p99 | p99 during fault | max during fault | time to recover | result |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |'
  ]
  for (const r of results) {
    if (r.error !== undefined) {
      lines.push(`| ${r.name} | | | | | | | | | | | ${verdict(r)} |`)
      continue
    }
    lines.push(`| ${r.name} | ${r.sent} | ${r.mutations} | ${r.failed} | ${r.stale.count} | ${r.slow} | ${ms(r.p50)} | ${ms(r.p99)} | ` +
      `${ms(r.faultP99)} | ${ms(r.faultMax)} | ${ms(r.recoverMs)} | ${verdict(r)} |`)
  }
  return lines.join('\n')
}

function details (r) {
  if (r.error !== undefined) return [`- ${r.name}: did not run: ${r.error}`]
  const s = r.stale
  const lines = [`- ${r.name}: ${Object.entries(r.outcomes).map(([k, v]) => `${k} ${v}`).join(', ')}; ` +
    `${r.failedMutations} of ${r.mutations} mutations failed.`]
  if (s.count > 0) {
    const modes = Object.entries(s.byMode).map(([mode, n]) => `${mode} ${n}`).join(', ')
    lines.push(`  Stale: ${s.count} reads (${s.sameInstance} on the mutating instance, ${s.otherInstance} on another) after ` +
      `${s.mutations} mutations (by way of invalidating: ${modes}); the latest came ${ms(s.longestMs)} after its mutation's deadline.`)
  }
  for (const note of r.notes) lines.push(`  ${note}`)
  return lines
}

function commitOf (dir) {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: dir, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'index.ts', 'types'], { cwd: dir, encoding: 'utf8' }).trim() !== ''
    return dirty ? `${commit} with uncommitted changes to the library` : commit
  } catch {
    return 'unknown'
  }
}

async function report (results) {
  const commit = commitOf(join(__dirname, '..'))
  return [
    '# Fault report (`npm run chaos`)',
    '',
    `Measured on commit ${commit}, ${new Date().toISOString()}; Node ${process.version}, redis-server ${await redisVersion()}, ` +
      `${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? 'unknown'}).`,
    '',
    `Load: ${opts.connections} keep-alive connections looping over ${ITEMS} cached items (1,000 in group 3; a 5 ms handler, 50 ms in group 2), ` +
      `${MUTATORS} mutation loops (one mutation, then ${MUTATION_PAUSE_MS} ms), ${WARM_MS / 1000} s warm-up, ` +
      `${opts.faultMs / 1000} s fault for the original four, ${opts.hangMs / 1000} s for the others, ${opts.afterMs / 1000} s after; ` +
      'plugin with commandTimeout 200 ms and circuitBreaker { failureThreshold: 3, resetTimeout: 500 }. Each scenario has its own Redis and app(s).',
    '"Requests sent" counts reads (GET); "failed" counts non-2xx answers, errors and timeouts (5 s) of reads and mutations. ' +
      '"Time to recover" runs from Redis being back (restart done, SIGCONT sent, pause over, proxy switched) to the first X-Cache: HIT of a request sent after that.',
    '"Stale reads": reads carrying an older version than a mutation that had returned before they were sent, on the instance that made it; ' +
      `on another instance, more than ${GRACE_MS / 1000} s after that (or after Redis was back). The scenarios are described at the top of chaos/run.js.`,
    '"Slow commands": commands Redis logged as taking over 100 ms (its SLOWLOG), the DEBUG SLEEP a scenario injects excepted.',
    'Targets: zero failed requests in every scenario, p99 under 1 s while Redis hangs, hits resumed within 5 s of Redis coming back, no stale read, no Redis command over 100 ms.',
    '',
    table(results),
    '',
    'Answers by X-Cache, failed mutations, what the stale reads were, and notes:',
    '',
    ...results.flatMap(details),
    ''
  ].join('\n')
}

async function main () {
  const results = []
  for (const scenario of SCENARIOS) {
    process.stdout.write(`running: ${scenario.name} ...\n`)
    try {
      results.push(await runScenario(scenario))
    } catch (err) {
      results.push({ name: scenario.name, error: err.message })
    } finally {
      // Whatever a failed setup left behind.
      await closeAllApps()
      await closeAllProxies()
      await stopAll()
    }
  }
  const text = await report(results)
  process.stdout.write(`\n${text}\n`)
  if (!args['no-write']) writeFileSync(join(__dirname, 'results.md'), text)
  if (args.strict && results.some((r) => verdict(r) !== 'PASS')) process.exitCode = 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
