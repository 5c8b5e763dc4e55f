// Cached routes with eager refresh and a soft timeout, against a real Redis, sharing getOrSet's
// implementation: a hit past `eagerRefresh` of the ttl answers at once and refreshes the entry in
// the background; a miss that finds an expired entry within staleIfError is answered from it once
// the handler has run `timeout.soft` ms, while the handler finishes and stores its response.
// Handlers wait on promises the test resolves: assertions are about order, never durations.
import { connect } from 'node:net'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import type { CacheManager } from '../lib/cache/manager'
import { KIND_RESPONSE } from '../lib/envelope'
import { encodeHead, strongEtag } from '../lib/route-cache/http-entry'
import { clock, rawClient, until } from './helpers/app'
import { listen, onRedis, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)

/** A handler whose runs wait for the test to release them (`open` lets every later run through). */
function gatedHandler (): { handler: () => Promise<{ version: number }>, runs: () => number, release: () => void, open: () => void } {
  let runs = 0
  let opened = false
  const waiting: Array<() => void> = []
  return {
    handler: async () => {
      const version = ++runs
      if (!opened) await new Promise<void>((resolve) => { waiting.push(resolve) })
      return { version }
    },
    runs: () => runs,
    release: () => { (waiting.shift() as () => void)() },
    open: () => {
      opened = true
      for (const resolve of waiting.splice(0)) resolve()
    }
  }
}

type Gated = ReturnType<typeof gatedHandler>

/**
 * Fills the entry of `url`: a first request on `app` misses and its handler run is let through,
 * then `reader` (another instance, say) finds the entry.
 */
async function fill (t: tap.Test, gate: Gated, app: FastifyInstance, url: string, reader = app): Promise<void> {
  const first = app.inject(url)
  await until(() => gate.runs() === 1, 5000, 'the first run')
  gate.release()
  t.equal((await first).headers['x-cache'], 'MISS')
  await until(async () => (await reader.inject(url)).headers['x-cache'] === 'HIT', 5000, 'the stored entry')
}

t.test('eager refresh: hits past the threshold answer at once and refresh once', async (t) => {
  const time = clock(t)
  const gate = gatedHandler()
  const { app, cache } = await routeApp(t, onRedis(await redis()), (app: FastifyInstance) => {
    app.get('/hot', { config: { cache: { ttl: 10, eagerRefresh: 0.5 } } }, gate.handler)
  })
  await fill(t, gate, app, '/hot')

  time.advance(3)
  t.equal((await app.inject('/hot')).headers['x-cache'], 'HIT')
  t.equal(gate.runs(), 1, 'before the threshold: a plain hit')

  time.advance(3)
  // The refresh is held by the gate: every request is answered from the entry meanwhile.
  const responses = await Promise.all(Array.from({ length: 6 }, () => app.inject('/hot')))
  t.same(responses.map((r) => r.headers['x-cache']), Array(6).fill('HIT'), 'every request a hit')
  t.same(responses.map((r) => r.json()), Array(6).fill({ version: 1 }))
  await until(() => gate.runs() === 2, 5000, 'the background refresh')
  t.equal((await app.inject('/hot')).headers['x-cache'], 'HIT', 'still a hit while it runs')
  gate.release()
  await until(async () => (await app.inject('/hot')).json().version === 2, 5000, 'the refreshed entry')
  t.equal(gate.runs(), 2, 'the handler ran once for the refresh')
  t.equal(cache.getStatistics().eagerRefreshes, 1)
})

t.test('eager refresh across two instances: one of them runs the handler', async (t) => {
  const time = clock(t)
  const server = await redis()
  const prefix = `eager${process.pid}`
  const gate = gatedHandler()
  const declare = (app: FastifyInstance): void => {
    app.get('/shared', { config: { cache: { ttl: 10, eagerRefresh: 0.5 } } }, gate.handler)
  }
  const a = await routeApp(t, onRedis(server, { prefix }), declare)
  const b = await routeApp(t, onRedis(server, { prefix }), declare)
  await fill(t, gate, a.app, '/shared', b.app)

  time.advance(6)
  t.equal((await a.app.inject('/shared')).headers['x-cache'], 'HIT')
  await until(() => gate.runs() === 2, 5000, 'a refreshes')
  // b's refresh finds a holding the lock and waits for its entry instead of running the handler.
  t.equal((await b.app.inject('/shared')).headers['x-cache'], 'HIT')
  gate.release()
  await until(async () => (await b.app.inject('/shared')).json().version === 2, 5000, 'the refreshed entry on b')
  t.equal(gate.runs(), 2, 'the handler ran once for both instances')
})

t.test('soft timeout: a slow handler with an entry within staleIfError answers STALE, then stores', async (t) => {
  const time = clock(t)
  const gate = gatedHandler()
  const { app, cache } = await routeApp(t, onRedis(await redis()), (app: FastifyInstance) => {
    app.get('/slow', { config: { cache: { ttl: 10, staleIfError: 60, timeout: { soft: 20 } } } }, gate.handler)
  })
  await fill(t, gate, app, '/slow')

  time.advance(11)
  const order: string[] = []
  const stale = await app.inject('/slow')
  order.push('answered')
  t.equal(stale.headers['x-cache'], 'STALE')
  t.match(stale.headers['cache-status'], /fwd=stale; detail=timeout/)
  t.same(stale.json(), { version: 1 })
  await until(() => gate.runs() === 2, 5000, 'the handler running in the background')
  t.equal((await app.inject('/slow')).headers['x-cache'], 'STALE', 'a second request too')
  t.equal(gate.runs(), 2, 'without a second run')
  order.push('handler done')
  gate.release()
  await until(async () => (await app.inject('/slow')).headers['x-cache'] === 'HIT', 5000, 'the new entry')
  t.same((await app.inject('/slow')).json(), { version: 2 }, 'the background handler\'s response was stored')
  t.same(order, ['answered', 'handler done'])
  t.equal(cache.getStatistics().staleOnTimeout, 2)
})

t.test('soft timeout: a handler within the timeout answers with its own response', async (t) => {
  const time = clock(t)
  const gate = gatedHandler()
  gate.open()
  let failing = 0
  const { app } = await routeApp(t, onRedis(await redis()), (app: FastifyInstance) => {
    app.get('/quick', { config: { cache: { ttl: 10, staleIfError: 60, timeout: { soft: 5000 } } } }, gate.handler)
    app.get('/fails', { config: { cache: { ttl: 10, staleIfError: 60, timeout: { soft: 5000 } } } }, async (_request, reply) => {
      if (++failing > 1) return reply.code(500).send({ down: true })
      return { ok: true }
    })
  })
  await app.inject('/quick')
  await until(async () => (await app.inject('/quick')).headers['x-cache'] === 'HIT', 5000, 'stored')
  time.advance(11)
  const fresh = await app.inject('/quick')
  t.equal(fresh.headers['x-cache'], 'HIT', 'answered from the entry the background run stored')
  t.same(fresh.json(), { version: 2 }, 'the refreshed response')

  // The background run fails: the request runs the handler itself, and staleIfError answers.
  await app.inject('/fails')
  await until(async () => (await app.inject('/fails')).headers['x-cache'] === 'HIT', 5000, 'stored')
  time.advance(11)
  const before = failing
  const failed = await app.inject('/fails')
  t.equal(failed.headers['x-cache'], 'STALE')
  t.equal(failing - before, 2, 'the background run and the request\'s own')
  t.match(failed.headers['cache-status'], /detail=error/)
})

t.test('route options: eagerRefresh and timeout are validated at registration', async (t) => {
  const server = await redis()
  const bad = [
    { eagerRefresh: 1 }, { eagerRefresh: 'soon' }, { timeout: { soft: 0 }, staleIfError: 5 },
    { timeout: { hard: 100 }, staleIfError: 5 }, { timeout: { soft: 10 } }, { timeout: 'fast' }
  ]
  for (const options of bad) {
    await t.rejects(routeApp(t, onRedis(server), (app: FastifyInstance) => {
      app.get('/x', { config: { cache: { ttl: 10, ...options } as never } }, async () => 'x')
    }), { name: 'CacheConfigError', message: /config\.cache of GET \/x/ }, JSON.stringify(options))
  }
  // Routes never abandon a request's handler: `hard` is not an option there.
  await t.rejects(routeApp(t, onRedis(server), (app: FastifyInstance) => {
    app.get('/x', { config: { cache: { ttl: 10, staleIfError: 5, timeout: { hard: 100 } } as never } }, async () => 'x')
  }), { message: /config\.cache\.timeout\.hard/ })
  await routeApp(t, onRedis(server), (app: FastifyInstance) => {
    app.get('/ok', { config: { cache: { ttl: 10, eagerRefresh: false, timeout: false } } }, async () => 'x')
  })
})

/** Writes a response entry as an older instance would have stored it (`key`: the route's default key). */
async function plant (raw: Redis, cache: CacheManager, key: string, entry: { body: string, ageMs: number, gzip?: boolean, corrupt?: boolean }): Promise<void> {
  const body = Buffer.from(entry.body)
  const head = encodeHead(200, { 'content-type': 'text/plain; charset=utf-8', etag: strongEtag(body) })
  let bytes = cache.core.codec.encode(body, KIND_RESPONSE, 1, entry.gzip ?? false, head, Date.now() - entry.ageMs).bytes
  if (entry.corrupt === true) bytes = bytes.subarray(0, bytes.length - 12)
  await raw.set(cache.redisKey(key), bytes, 'EX', 600)
}

t.test('soft timeout: entries it cannot serve, and requests it cannot replay', async (t) => {
  const server = await redis()
  const gate = gatedHandler()
  let gone = 0
  const soft = { ttl: 60, staleIfError: 60, timeout: { soft: 10 } }
  const { app, cache } = await routeApp(t, onRedis(server, { compression: { threshold: 10 } }), (app: FastifyInstance) => {
    app.get('/old', { config: { cache: soft } }, async () => 'handler')
    app.get('/gz', { config: { cache: { ...soft, compress: true } } }, gate.handler)
    app.get('/gone', { config: { cache: soft } }, async (_request, reply) => {
      // The background run removes the entry and fails: nothing to answer from.
      if (++gone === 1) {
        await app.cache.delete('localhost:80/gone')
        return reply.code(500).send('down')
      }
      return 'handler'
    })
    app.get('/nohost', { config: { cache: soft } }, async () => 'handler')
  })
  const raw = rawClient(t, server.url)

  // Past staleIfError (Redis still holds it): a plain miss.
  await plant(raw, cache, 'localhost:80/old', { body: 'too old', ageMs: 120_000 })
  const old = await app.inject('/old')
  t.equal(old.headers['x-cache'], 'MISS')
  t.equal(old.body, 'handler')

  // The stale entry cannot be read back when the timeout passes: the request waits for the run.
  await plant(raw, cache, 'localhost:80/gz', { body: 'stale and corrupt '.repeat(10), ageMs: 2000, gzip: true, corrupt: true })
  const errors = cache.getStatistics().errors
  const corrupt = app.inject('/gz')
  await until(() => gate.runs() === 1, 5000, 'the background run')
  await until(() => cache.getStatistics().errors > errors, 5000, 'the unreadable entry counted')
  gate.open()
  const answer = await corrupt
  t.equal(answer.statusCode, 200)
  t.same(answer.json(), { version: 1 }, 'the background run\'s response')

  // The background run stored nothing and the entry is gone: the request runs the handler.
  await plant(raw, cache, 'localhost:80/gone', { body: 'stale', ageMs: 2000 })
  const res = await app.inject('/gone')
  t.equal(res.body, 'handler')
  t.equal(gone, 2)

  // Without a Host the request cannot be replayed: it runs the handler itself.
  await plant(raw, cache, '/nohost', { body: 'stale', ageMs: 2000 })
  const base = await listen(app)
  const { port } = new URL(base)
  const text = await new Promise<string>((resolve, reject) => {
    // Not half-closed: the server closes the connection once it has answered (HTTP/1.0).
    const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET /nohost HTTP/1.0\r\n\r\n'))
    let received = ''
    socket.on('data', (chunk) => { received += chunk.toString() })
    socket.on('end', () => resolve(received))
    socket.on('error', reject)
  })
  t.match(text, /x-cache: MISS/i)
  t.match(text, /handler$/)
})

t.test('soft timeout with freshness: \'response\': the response\'s stale-if-error', async (t) => {
  const time = clock(t)
  const gate = gatedHandler()
  const { app } = await routeApp(t, onRedis(await redis()), (app: FastifyInstance) => {
    app.get('/gw', { config: { cache: { ttl: 600, freshness: 'response', timeout: { soft: 20 } } } }, async (_request, reply) => {
      const body = await gate.handler()
      return reply.header('cache-control', 'max-age=10, stale-if-error=60').send(body)
    })
  })
  await fill(t, gate, app, '/gw')
  time.advance(11)
  const stale = await app.inject('/gw')
  t.equal(stale.headers['x-cache'], 'STALE')
  t.match(stale.headers['cache-status'], /detail=timeout/)
  await until(() => gate.runs() === 2, 5000, 'the background run')
  gate.open()
  await until(async () => (await app.inject('/gw')).headers['x-cache'] === 'HIT', 5000, 'the new entry')
})
