// The loads of the workloads and one measured run of a variant: what is read before and after
// (server CPU time, Redis commands, the server's counters, the cores' busy time) and what it
// comes to per request.
import { runClient, requestAll } from './client.js'
import { drawZipf, ITEMS, seededRandom, zipfTable } from './items.js'
import { busyShare, cpuSeconds, cpuTimes, redisCalls, RUNNER_CPU, serverStats, SERVER_CPU } from './procs.js'
import { runWrk } from './wrk.js'

/** Share of W2's requests that are POSTs. */
export const POST_SHARE = 0.05
const cdf = zipfTable(ITEMS)
// Distinct ids of W3 start far above the items of W1 and W2, at a new base for every run.
let distinctBase = 0

/**
 * W2's requests with the stale-read check. `acked[id]` is the newest version a POST of the item
 * has acknowledged; a GET remembers it when it is sent, and its answer is stale when it carries
 * an older version. Kept per variant across its runs, since the server's versions persist.
 */
export function staleChecker () {
  const acked = new Uint32Array(ITEMS + 1)
  const counts = { gets: 0, posts: 0, stale: 0, unreadable: 0 }
  const versionOf = (body) => {
    const match = /"version":(\d+)/.exec(body.latin1Slice(0, Math.min(64, body.length)))
    return match ? Number(match[1]) : -1
  }
  return {
    counts,
    requests (seed) {
      const random = seededRandom(seed)
      return () => {
        const id = drawZipf(cdf, random)
        if (random() < POST_SHARE) return { method: 'POST', path: `/items/${id}`, id, min: 0 }
        return { method: 'GET', path: `/items/${id}`, id, min: acked[id] }
      }
    },
    onResponse (request, status, body) {
      if (status !== 200) return
      const version = versionOf(body)
      if (version < 0) {
        counts.unreadable++
      } else if (request.method === 'POST') {
        counts.posts++
        if (version > acked[request.id]) acked[request.id] = version
      } else {
        counts.gets++
        if (version < request.min) counts.stale++
      }
    }
  }
}

/** Runs the workload's load once against a server; `seed` varies by round, not by variant. */
export async function runLoad (workload, server, { seconds, connections, pin, seed }) {
  if (workload.id === 'w2') {
    const checker = server.checker
    const before = checker.counts.stale
    const startCpu = process.cpuUsage()
    const run = await runClient({ port: server.port, connections, seconds, next: checker.requests(seed), onResponse: checker.onResponse })
    const used = process.cpuUsage(startCpu)
    return { ...run, stale: checker.counts.stale - before, loadCpu: (used.user + used.system) / 1e6 / run.seconds }
  }
  const paths = workload.id === 'w3' ? ['distinct', (distinctBase += 100_000_000), seed] : ['zipf', ITEMS, seed]
  return runWrk({ port: server.port, seconds, connections, paths, pin })
}

/** Requests every item once per pass, so that every later read of W1 and W2 is a hit. */
export async function prime (server, passes, connections) {
  const paths = Array.from({ length: ITEMS }, (_, i) => `/items/${i + 1}`)
  for (let pass = 0; pass < passes; pass++) {
    const run = await requestAll(server.port, paths, connections)
    if (run.non2xx + run.errors > 0) throw new Error(`${server.variant}: priming pass ${pass + 1}: ${run.non2xx} non-2xx answers, ${run.errors} errors`)
  }
}

/** What a run measures besides the load generator's own figures. */
async function readCounters (server, redis) {
  return {
    cpu: cpuSeconds(server.pids()),
    redis: await redisCalls(redis),
    stats: await serverStats(server.statsChild),
    cpus: cpuTimes()
  }
}

export async function measure (workload, server, redis, options) {
  if (server.child.exited) throw new Error(`${server.variant} has stopped (${JSON.stringify(server.child.exited)}):\n${server.child.tail.join('\n')}`)
  const before = await readCounters(server, redis)
  const run = await runLoad(workload, server, options)
  const after = await readCounters(server, redis)
  const per = (value) => (run.requests > 0 ? value / run.requests : null)
  const gc = (kind) => (before.stats && after.stats ? after.stats.gc[kind] - before.stats.gc[kind] : null)
  return {
    reqPerSec: run.reqPerSec,
    p50: run.p50,
    p99: run.p99,
    requests: run.requests,
    failed: run.errors + run.non2xx,
    cpuUsPerReq: per((after.cpu - before.cpu) * 1e6),
    redisPerReq: per(after.redis - before.redis),
    redisSentPerReq: before.stats && after.stats ? per(after.stats.redisSent - before.stats.redisSent) : null,
    dbReadsPerReq: before.stats && after.stats ? per(after.stats.reads - before.stats.reads) : null,
    majorGcs: gc('major'),
    // The server forgets its longest pause each time it is asked: this one is the run's.
    longestGcMs: after.stats ? after.stats.gc.longestMs : null,
    stale: run.stale ?? null,
    loadCpu: run.loadCpu,
    serverCoreBusy: busyShare(before.cpus, after.cpus, SERVER_CPU),
    runnerCoreBusy: busyShare(before.cpus, after.cpus, RUNNER_CPU)
  }
}
