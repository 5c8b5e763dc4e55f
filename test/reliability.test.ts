// Real faults injected into a real redis-server under HTTP load: SIGKILL and restart, SIGSTOP and
// SIGCONT. Every request must be answered (2xx), requests are answered while Redis hangs, the
// circuit opens and closes by itself, and hits come back once Redis returns. Also: no offline
// queue piling up while disconnected, and the command timeout of GuardedStore for a client the
// application passed in. Nothing here asserts how long anything took (a busy machine must not
// turn the suite red): latencies under faults are measured by `npm run chaos`, and the waits
// below are generous limits on conditions.

/** How long a condition may take to come true on a loaded machine. */
const PATIENCE = 30_000
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import type { CacheOptions } from '../types'
import { captureLogs, clientOf, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

interface Sample {
  start: number
  end: number
  status: number
  cache: string | null
}

interface Load {
  samples: Sample[]
  stop: () => Promise<void>
}

/** `concurrency` loops of GET requests through real HTTP until stopped (at most `maxMs`). */
function load (url: string, concurrency: number, maxMs = 20_000): Load {
  const samples: Sample[] = []
  const flag = { running: true }
  const deadline = Date.now() + maxMs
  const worker = async (): Promise<void> => {
    while (flag.running && Date.now() < deadline) {
      const start = Date.now()
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
        await res.arrayBuffer()
        samples.push({ start, end: Date.now(), status: res.status, cache: res.headers.get('x-cache') })
      } catch {
        samples.push({ start, end: Date.now(), status: 0, cache: null })
      }
    }
  }
  const workers = Array.from({ length: concurrency }, worker)
  return {
    samples,
    stop: async () => {
      flag.running = false
      await Promise.all(workers)
    }
  }
}

/** Reported, never asserted. */
function p99 (samples: Sample[]): number {
  const sorted = samples.map((s) => s.end - s.start).sort((a, b) => a - b)
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]
}

/** A listening app with the plugin and one cached route whose handler counts its runs. */
async function listening (t: tap.Test, options: CacheOptions): Promise<{ app: FastifyInstance, cache: CacheManager, url: string, runs: () => number }> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { routes: false, ...options })
  let runs = 0
  app.get('/item', { config: { cache: { ttl: 60 } } }, async () => {
    runs++
    return { id: 1, name: 'item', padding: 'x'.repeat(200) }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as { port: number }
  return { app, cache: app.cache as CacheManager, url: `http://127.0.0.1:${port}/item`, runs: () => runs }
}

const firstHitAfter = (samples: Sample[], time: number): Sample | undefined =>
  samples.filter((s) => s.start >= time && s.cache === 'HIT').sort((a, b) => a.end - b.end)[0]

t.test('SIGKILL and restart under HTTP load: every request answered, hits come back', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { cache, url } = await listening(t, {
    redis: { url: server.url },
    prefix: uniquePrefix('kill'),
    commandTimeout: 200,
    circuitBreaker: { failureThreshold: 3, resetTimeout: 300 }
  })
  await fetch(url).then((res) => res.arrayBuffer())
  const traffic = load(url, 16)
  await until(() => traffic.samples.some((s) => s.cache === 'HIT'), PATIENCE, 'hits before the fault')

  const killedAt = Date.now()
  await server.kill()
  await until(() => traffic.samples.some((s) => s.start > killedAt && s.cache === 'BYPASS'), PATIENCE, 'requests passed through while Redis is dead')
  await until(() => !cache.getStatistics().connected, PATIENCE, 'the cache to notice')
  t.pass('disconnected while Redis is dead')
  const restartedAt = Date.now()
  await server.restart()
  await until(() => firstHitAfter(traffic.samples, restartedAt) !== undefined, PATIENCE, 'hits after the restart')
  await sleep(200)
  await traffic.stop()

  const { samples } = traffic
  const failed = samples.filter((s) => s.status < 200 || s.status > 299)
  t.equal(failed.length, 0, `no failed request out of ${samples.length}`)
  const recovered = (firstHitAfter(samples, restartedAt) as Sample).end - restartedAt
  const down = samples.filter((s) => s.start > killedAt && s.end < restartedAt)
  t.ok(down.length > 0 && down.every((s) => s.cache === 'BYPASS' || s.cache === 'HIT' || s.cache === 'MISS'), 'answered by the handler while Redis is dead')
  t.comment(`p99 while Redis was dead: ${p99(down)} ms; first hit ${recovered} ms after the restart`)
  // A loaded machine (an event loop stalled past the 200 ms command timeout) may open the
  // circuit again for a moment: it closes by itself.
  await until(() => cache.getStatistics().circuit === 'closed' && cache.getStatistics().connected, PATIENCE, 'the circuit to be closed')
  t.ok(cache.getStatistics().errors > 0, 'the failures were counted')
})

t.test('SIGSTOP and SIGCONT under HTTP load: answered while Redis hangs, the circuit opens and closes', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { cache, url } = await listening(t, {
    redis: { url: server.url },
    prefix: uniquePrefix('stop'),
    commandTimeout: 200,
    circuitBreaker: { failureThreshold: 3, resetTimeout: 500 }
  })
  await fetch(url).then((res) => res.arrayBuffer())
  const traffic = load(url, 16)
  await until(() => traffic.samples.some((s) => s.cache === 'HIT'), PATIENCE, 'hits before the fault')

  const states = new Set<string>()
  const watch = setInterval(() => states.add(cache.getStatistics().circuit), 10)
  t.teardown(() => clearInterval(watch))
  const pausedAt = Date.now()
  server.pause()
  await until(() => cache.getStatistics().circuit === 'open', PATIENCE, 'the circuit to open')
  t.equal(cache.getStatistics().connected, false, 'not connected while the circuit is open')
  t.equal(await cache.get('anything'), null, 'a get while open is a miss')
  t.equal(await cache.ping(), false, 'ping says Redis does not answer')
  // The behaviour that matters: requests are answered while Redis still hangs, not once it is back.
  await until(() => traffic.samples.filter((s) => s.start >= pausedAt && s.status === 200).length >= 50, PATIENCE, '50 requests answered while Redis hangs')
  await until(() => states.has('half-open'), PATIENCE, 'a probe while open')
  const resumedAt = Date.now()
  server.resume()
  await until(() => cache.getStatistics().circuit === 'closed', PATIENCE, 'the circuit to close')
  const closedAt = Date.now()
  await until(() => firstHitAfter(traffic.samples, resumedAt) !== undefined, PATIENCE, 'hits after SIGCONT')
  await sleep(200)
  await traffic.stop()
  clearInterval(watch)

  const { samples } = traffic
  t.equal(samples.filter((s) => s.status < 200 || s.status > 299).length, 0, `no failed request out of ${samples.length}`)
  const hung = samples.filter((s) => s.start >= pausedAt && s.start < resumedAt)
  t.ok(hung.filter((s) => s.end < resumedAt).length >= 50, 'at least 50 requests answered before SIGCONT')
  t.ok(states.has('open'), 'the circuit opened')
  t.ok(states.has('half-open'), 'and was probed while open')
  const recovered = (firstHitAfter(samples, resumedAt) as Sample).end - resumedAt
  t.comment(`p99 while Redis hung: ${p99(hung)} ms; closed ${closedAt - resumedAt} ms and first hit ${recovered} ms after SIGCONT`)
  await until(() => cache.ping(), PATIENCE, 'ping to answer')
})

t.test('no offline queue: with Redis down, 200 concurrent gets resolve null while it is down', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => app.close())
  // No circuit breaker, and a command timeout longer than the test: the client alone must
  // refuse to queue, so the gets are answered while Redis is still down.
  await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix: uniquePrefix('queue'), routes: false, circuitBreaker: false, commandTimeout: 10 * 60_000 })
  await app.ready()
  const cache = app.cache as CacheManager
  t.equal(await cache.set('k', 'v'), true)
  await server.kill()
  await until(() => clientOf(cache).status !== 'ready', PATIENCE, 'the client to notice')
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => cache.get(`k${i}`)))
  t.ok(results.every((r) => r === null), 'all misses, answered with Redis still down')
  t.equal(cache.getStatistics().errors, 200, 'each counted')
  t.equal(await cache.set('k', 'v'), false)
  t.equal(await cache.getOrSet('g', () => 'computed'), 'computed', 'getOrSet runs its callback')
  const offline = (clientOf(cache) as unknown as { offlineQueue: { length: number } }).offlineQueue
  t.equal(offline.length, 0, 'nothing queued in the client')
  await server.restart()
  await until(() => clientOf(cache).status === 'ready', PATIENCE, 'the reconnect')
  t.equal(await cache.get('k'), null, 'the restarted Redis is empty')
  t.equal(await cache.set('k', 'v2'), true)
  t.equal(await cache.get('k'), 'v2')
})

t.test('a client the application passed in: commandTimeout is enforced by the plugin', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  // A default ioredis client: no command timeout, an offline queue.
  const client = new Redis(server.url)
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: { client }, prefix: uniquePrefix('user'), routes: false, commandTimeout: 150, circuitBreaker: { failureThreshold: 3, resetTimeout: 200 } })
  await app.ready()
  const cache = app.cache as CacheManager
  t.equal(await cache.set('k', 'v'), true)

  // The client sends everything through sendCommand: counted, to see what reaches it.
  const sent: string[] = []
  const send = client.sendCommand.bind(client)
  client.sendCommand = ((command: { name: string }) => {
    sent.push(command.name)
    return send(command as Parameters<typeof send>[0])
  }) as typeof client.sendCommand
  server.pause()
  // A default client would wait for the hung Redis for ever: an answer at all is the timeout.
  const started = Date.now()
  t.equal(await cache.get('k'), null, 'a miss while Redis hangs')
  t.ok(Date.now() - started >= 140, 'after the command timeout, not before')
  t.equal(await cache.set('k2', 'v'), false, 'set gives up too')
  await cache.get('k')
  t.equal(cache.getStatistics().circuit, 'open', 'three timeouts open the circuit')
  const before = sent.length
  t.equal(await cache.get('k'), null)
  t.equal(sent.length, before, 'while open, a get sends nothing to the client')
  server.resume()
  await until(() => cache.getStatistics().circuit === 'closed', PATIENCE, 'the probe to close the circuit')
  t.equal(await cache.get('k'), 'v', 'the entry is still there')

  // Dead instead of hung: the client's own offline queue would hold commands; the timeout wins.
  await server.kill()
  await until(() => client.status !== 'ready', PATIENCE, 'the client to notice')
  const queued = (client as unknown as { offlineQueue: { length: number } }).offlineQueue
  t.equal(await cache.get('k'), null, 'answered with Redis dead')
  t.ok(queued.length > 0, "by the plugin's timeout: the command still sits in the client's offline queue")
  await server.restart()
  await until(async () => (await cache.get('k')) === null && cache.getStatistics().circuit === 'closed' && client.status === 'ready', PATIENCE, 'the reconnect')
  t.equal(await cache.set('k', 'v3'), true)
  t.equal(await cache.get('k'), 'v3')
  t.equal(client.status, 'ready', 'the client is not closed by the plugin')
})

t.test('Redis down at start: registration succeeds, requests pass through, hits once Redis is up', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  await server.kill()
  const { cache, url, runs } = await listening(t, {
    redis: { url: server.url, connectTimeout: 300 },
    prefix: uniquePrefix('late'),
    commandTimeout: 200
  })
  const first = await fetch(url)
  t.equal(first.status, 200)
  t.equal(first.headers.get('x-cache'), 'BYPASS')
  await server.restart()
  await until(() => cache.getStatistics().connected, PATIENCE, 'the connection')
  await fetch(url).then((res) => res.arrayBuffer())
  const hit = await fetch(url)
  t.equal(hit.headers.get('x-cache'), 'HIT')
  t.equal(runs(), 2, 'the handler ran while Redis was down and for the first miss after')
})

t.test('a server of ours stays on its own port', async (t) => {
  const server: RedisServer = await startRedis()
  t.teardown(() => server.stop())
  t.not(server.port, 6379)
})
