// The realistic workloads: `node run.js --workloads w1,w2,w3 [options]` (run.js hands over here).
//
// W1: 20,000 items drawn Zipf(1), every read a hit after priming; W2: W1 plus 5% POSTs that bump
// an item's version and bust its entry, with every read checked for staleness; W3: every URL
// distinct, all misses. Each workload gets fresh servers (one per variant, all listening at once)
// and a flushed Redis; the variants alternate within every round, in an order that changes from
// round to round, and the medians of the rounds are reported.
import os from 'node:os'
import { parseArgs } from 'node:util'
import { measure, prime, staleChecker } from './loads.js'
import { startNginx } from './nginx.js'
import { killAllNow, pinPid, rssBytes, RUNNER_CPU, serverStats, sleep, startRedis, startServer, stopChild } from './procs.js'
import { loadGeneratorCheck, report, writeResults } from './report.js'

export const WORKLOADS = {
  w1: { id: 'w1', title: 'W1: 20,000 items drawn Zipf(s=1), 2 KB JSON, all hits after priming', prime: true, generator: 'wrk' },
  w2: { id: 'w2', title: 'W2: W1 plus 5% POSTs that bump the item\'s version and bust its entry; stale reads counted', prime: true, generator: 'Node client' },
  w3: { id: 'w3', title: 'W3: every URL distinct (all misses)', prime: false, generator: 'wrk' }
}

export const VARIANTS = [
  { name: 'uncached', server: 'uncached', label: 'no cache, 2 ms database read per request' },
  { name: 'handwritten', server: 'handwritten', redis: true, label: 'hand-written ioredis GET, SET EX on a miss, DEL on POST' },
  { name: 'ours-redis', server: 'ours-redis', redis: true, label: 'our route cache, Redis' },
  { name: 'ours-local', server: 'ours-local', redis: true, label: 'our route cache, local tier (maxEntries 50000) + Redis' },
  { name: 'ours-memory', server: 'ours-memory', label: 'our route cache, in-process memory store (no Redis)' },
  { name: 'nginx', server: 'uncached', nginx: true, label: 'nginx proxy_cache (10m) in front of the uncached server' }
]

const HELP = `usage: node run.js --workloads w1,w2,w3 [options]

  --workloads LIST   workloads to run: w1, w2, w3 or all
  --only a,b,...     only these variants (${VARIANTS.map((v) => v.name).join(', ')})
  --rounds N         rounds of every variant (default 3)
  --duration S       seconds of each run (default 5)
  --warmup S         seconds of the unmeasured run of each variant first (default 2;
                     wrk takes whole seconds)
  --connections N    connections of the load generator (default 50)
  --skip-check       leave out the load generator check against the static route
  --write            write the sections of these workloads into results.md
  --no-pin           do not pin servers to CPU 0, load generators and Redis to CPU 1
  --help`

function parseOptions (argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      workloads: { type: 'string' },
      only: { type: 'string' },
      rounds: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      'skip-check': { type: 'boolean', default: false },
      write: { type: 'boolean', default: false },
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
  const list = (value, known, what) => {
    const names = value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)
    const unknown = names.filter((name) => !known.includes(name))
    if (unknown.length > 0) throw new Error(`${what}: unknown ${unknown.join(', ')}; known: ${known.join(', ')}`)
    return names
  }
  const workloadNames = !values.workloads || values.workloads === 'all' ? Object.keys(WORKLOADS) : list(values.workloads, Object.keys(WORKLOADS), '--workloads')
  const only = values.only ? list(values.only, VARIANTS.map((v) => v.name), '--only') : null
  return {
    workloads: Object.keys(WORKLOADS).filter((id) => workloadNames.includes(id)).map((id) => WORKLOADS[id]),
    variants: VARIANTS.filter((v) => !only || only.includes(v.name)),
    rounds: Math.round(number(values.rounds, 3, 'rounds')),
    duration: number(values.duration, 5, 'duration'),
    warmup: number(values.warmup, 2, 'warmup'),
    connections: Math.round(number(values.connections, 50, 'connections')),
    check: !values['skip-check'],
    write: values.write,
    pin: !values['no-pin'] && os.cpus().length >= 2
  }
}

/** Round r runs the list rotated by a different offset, reversed every other round. */
function orderFor (round, rounds, list) {
  const step = Math.max(1, Math.floor(list.length / Math.max(rounds, 1)))
  const offset = (round * step) % list.length
  const rotated = [...list.slice(offset), ...list.slice(0, offset)]
  return round % 2 === 1 ? rotated.reverse() : rotated
}

async function startVariant (variant, redis, pin) {
  const server = await startServer(variant.server, variant.redis ? redis.url : null, pin)
  if (!variant.nginx) return { ...server, variant: variant.name, statsChild: server.child, stop: () => stopChild(server.child, { message: 'shutdown' }) }
  const nginx = await startNginx(server, pin)
  return {
    ...nginx,
    statsChild: server.child,
    stop: async () => {
      await nginx.stop()
      await stopChild(server.child, { message: 'shutdown' })
    }
  }
}

const fmt = (n, digits = 0) => (n === null || n === undefined ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }))

/** One workload: fresh servers, priming, a warm-up run each, then the rounds. */
async function runWorkload (workload, redis, options, servers) {
  await redis.client.flushall()
  console.log(`\n${workload.title}`)
  for (const variant of options.variants) {
    const server = await startVariant(variant, redis, options.pin)
    server.spec = variant
    server.checker = staleChecker()
    servers.push(server)
  }
  if (workload.prime) {
    process.stdout.write('priming every item (two passes)')
    for (const server of servers) {
      if (server.spec.name !== 'uncached') await prime(server, 2, options.connections)
      process.stdout.write('.')
    }
    process.stdout.write('\n')
  }
  const load = { connections: options.connections, pin: options.pin }
  process.stdout.write(`warming up (${options.warmup} s each)`)
  for (const server of servers) {
    await measure(workload, server, redis, { ...load, seconds: options.warmup, seed: 1000 })
    process.stdout.write('.')
  }
  process.stdout.write('\n')
  const runs = Object.fromEntries(servers.map((s) => [s.spec.name, []]))
  for (let round = 0; round < options.rounds; round++) {
    for (const server of orderFor(round, options.rounds, servers)) {
      await sleep(250)
      const run = await measure(workload, server, redis, { ...load, seconds: options.duration, seed: round + 1 })
      runs[server.spec.name].push(run)
      const stale = run.stale === null ? '' : `  stale ${run.stale}`
      console.log(`round ${round + 1}/${options.rounds}  ${server.spec.name.padEnd(12)} ${fmt(run.reqPerSec).padStart(8)} req/s  p99 ${fmt(run.p99, 2).padStart(6)} ms  ${fmt(run.cpuUsPerReq, 1).padStart(6)} µs CPU/req${stale}${run.failed ? `  ${run.failed} failed` : ''}`)
    }
  }
  const ends = {}
  for (const server of servers) {
    const stats = await serverStats(server.statsChild)
    ends[server.spec.name] = { rss: rssBytes(server.pids()), stats, checker: server.checker.counts }
  }
  while (servers.length > 0) await servers.pop().stop()
  const variantLabels = options.variants.map((v) => `\`${v.name}\`: ${v.label}`).join('; ') + '.'
  return { workload, runs, ends, variantLabels }
}

export async function main (argv) {
  let options
  try {
    options = parseOptions(argv)
  } catch (err) {
    console.error(`${err.message}\n\n${HELP}`)
    process.exit(2)
  }
  const servers = []
  let redis = null
  const stopAll = async () => {
    await Promise.all(servers.map((s) => s.stop().catch(() => {})))
    if (redis) await stopChild(redis.child)
    killAllNow()
  }
  // A second Ctrl-C while stopping must not kill the runner before its children.
  let signalled = false
  const onSignal = (code) => () => {
    if (signalled) return
    signalled = true
    process.stderr.write('\nstopping the servers, nginx and redis-server\n')
    stopAll().finally(() => process.exit(code))
  }
  process.on('SIGINT', onSignal(130))
  process.on('SIGTERM', onSignal(143))
  try {
    if (options.pin) pinPid(process.pid, RUNNER_CPU)
    console.log(options.pin ? 'pinned: servers and nginx on CPU 0; this runner, wrk and Redis on CPU 1' : 'not pinned')
    redis = await startRedis(options.pin)
    console.log(`redis-server ${redis.version} on port ${redis.port} (throwaway, no persistence)`)
    const loadAverage = os.loadavg().map((n) => n.toFixed(2)).join(' ')
    const check = options.check ? await loadGeneratorCheck(redis, options) : null
    const results = []
    for (const workload of options.workloads) results.push(await runWorkload(workload, redis, options, servers))
    const summary = { date: new Date().toISOString(), options, argv, loadAverage, redisVersion: redis.version, check, results }
    const { text, sections } = report(summary)
    console.log(text)
    if (options.write) console.log(`wrote ${writeResults(sections)}`)
    else console.log('results not written (pass --write to put these sections into bench/results.md)')
    redis.client.disconnect()
    await stopAll()
  } catch (err) {
    console.error(`\nworkload benchmark failed: ${err.stack ?? err}`)
    redis?.client.disconnect()
    await stopAll().catch(() => {})
    process.exitCode = 1
  }
}
