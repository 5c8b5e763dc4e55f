// Route caching when things go wrong or pile up: Redis down or slow (BYPASS, never a 5xx),
// concurrent misses collapsed in one process and across instances, aborted and hijacked
// leaders, stale-while-revalidate and stale-if-error, and a failing background refresh.
import http from 'node:http'
import t from 'tap'
import type { Redis } from 'ioredis'
import type { CacheManager } from '../lib/cache/manager'
import { encodeHead, strongEtag } from '../lib/route-cache/http-entry'
import { KIND_RESPONSE } from '../lib/envelope'
import { LEVEL, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis } from './helpers/redis-server'
import { gate, listen, onRedis, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)

/** Writes a response entry as another instance (or an older one) would have stored it; `key` as the route makes it (a default key starts with the host). */
async function plant (raw: Redis, cache: CacheManager, key: string, entry: { body: string, ageMs: number, freshFor: number, gzip?: boolean, corrupt?: boolean }): Promise<void> {
  const body = Buffer.from(entry.body)
  const head = encodeHead(200, { 'content-type': 'text/plain; charset=utf-8', etag: strongEtag(body) })
  let bytes = cache.core.codec.encode(body, KIND_RESPONSE, entry.freshFor, entry.gzip ?? false, head, Date.now() - entry.ageMs).bytes
  if (entry.corrupt === true) bytes = bytes.subarray(0, bytes.length - 12)
  await raw.set(cache.redisKey(key), bytes, 'EX', 600)
}

t.test('Redis down: the route answers from its handler (BYPASS), never a 5xx', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  let runs = 0
  const declare = (app: Parameters<Parameters<typeof routeApp>[2]>[0]): void => {
    app.get('/r', { config: { cache: { ttl: 60 } } }, async () => ({ n: ++runs }))
  }
  const lenient = await routeApp(t, onRedis(server), declare)
  const strict = await routeApp(t, onRedis(server, { throwOnError: true }), declare)
  await lenient.app.inject('/r')
  t.equal((await lenient.app.inject('/r')).headers['x-cache'], 'HIT')
  await server.kill()

  for (const { app, cache } of [lenient, strict]) {
    for (let i = 0; i < 3; i++) {
      const res = await app.inject('/r')
      t.equal(res.statusCode, 200)
      t.equal(res.headers['x-cache'], 'BYPASS')
      t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=bypass; detail=unavailable')
    }
    const head = await app.inject({ method: 'HEAD', url: '/r' })
    t.equal(head.statusCode, 200)
    t.ok(cache.getStatistics().errors >= 4, 'each failure counted')
  }
  t.equal(runs, 1 + 8, 'the handler answered every request Redis could not')
})

t.test('Redis slow: a hung Redis costs at most the command timeout (BYPASS)', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { app } = await routeApp(t, onRedis(server, { commandTimeout: 100 }), (app) => {
    app.get('/slow', { config: { cache: { ttl: 60 } } }, async () => 'from the handler')
  })
  await app.inject('/slow')
  server.pause()
  t.teardown(() => server.resume())
  // Answered while Redis still hangs (it is resumed below): the command timeout, not Redis.
  for (let i = 0; i < 3; i++) {
    const res = await app.inject('/slow')
    t.equal(res.statusCode, 200)
    t.equal(res.body, 'from the handler')
    t.equal(res.headers['x-cache'], 'BYPASS')
  }
  server.resume()
})

t.test('stampede: concurrent misses run the handler once; the others are collapsed', async (t) => {
  const server = await redis()
  const release = gate()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/hot', { config: { cache: { ttl: 60, namespace: 'hot' } } }, async () => {
      runs++
      await release.promise
      return { hot: true, run: runs }
    })
  })
  const etag = strongEtag(Buffer.from(JSON.stringify({ hot: true, run: 1 })))
  const requests = Array.from({ length: 10 }, (_, i) => app.inject({ url: '/hot', headers: i === 9 ? { 'if-none-match': etag } : {} }))
  // Every request has looked Redis up (and found the flight) before the leader answers.
  await until(() => runs === 1 && cache.getStatistics().misses === 10, 30_000, 'ten lookups and one handler run')
  release.open()
  const responses = await Promise.all(requests)
  t.equal(runs, 1, 'the handler ran once')
  const statuses = responses.map((res) => res.headers['cache-status'])
  t.equal(statuses.filter((s) => s === 'fastify-redis-cache; fwd=uri-miss; stored').length, 1)
  t.equal(statuses.filter((s) => s === 'fastify-redis-cache; fwd=uri-miss; collapsed').length, 9, 'Cache-Status says they were collapsed')
  for (const res of responses.slice(0, 9)) {
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-cache'], 'MISS')
    t.same(res.json(), { hot: true, run: 1 })
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8')
  }
  t.equal(responses[9].statusCode, 304, 'a collapsed request with a matching If-None-Match')
  t.same(cache.getStatistics().namespaces.hot, { hits: 0, misses: 10, hitRate: 0 })
})

t.test('stampede over real HTTP', async (t) => {
  const server = await redis()
  let runs = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/hot', { config: { cache: { ttl: 60 } } }, async () => {
      runs++
      await sleep(150)
      return 'made once'
    })
  })
  const base = await listen(app)
  const responses = await Promise.all(Array.from({ length: 8 }, async () => await fetch(`${base}/hot`)))
  t.equal(runs, 1)
  for (const res of responses) {
    t.equal(res.status, 200)
    t.equal(await res.text(), 'made once')
  }
})

t.test('collapsed requests run their own handler when the leader\'s response is not storable', async (t) => {
  const server = await redis()
  const release = gate()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/flaky', { config: { cache: { ttl: 60 } } }, async () => {
      const run = ++runs
      if (run === 1) {
        await release.promise
        throw new Error('leader failed')
      }
      return { run }
    })
  })
  const requests = Array.from({ length: 4 }, async () => await app.inject('/flaky'))
  await until(() => runs === 1 && cache.getStatistics().misses === 4, 30_000, 'the leader and three waiters')
  release.open()
  const [leader, ...waiters] = await Promise.all(requests)
  t.equal(leader.statusCode, 500)
  t.equal(runs, 4, 'every waiter ran the handler itself')
  for (const res of waiters) {
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-cache'], 'MISS')
    t.notMatch(res.headers['cache-status'], 'collapsed')
  }
})

t.test('an aborted leader\'s handler still runs to the end, and its waiters get its result', async (t) => {
  const server = await redis()
  const release = gate()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/abandoned', { config: { cache: { ttl: 60 } } }, async () => {
      const run = ++runs
      if (run === 1) await release.promise
      return { run }
    })
  })
  t.teardown(() => release.open())
  const base = await listen(app)
  const leader = http.get(`${base}/abandoned`, { agent: false })
  leader.on('error', () => {})
  await until(() => runs === 1, 30_000, 'the leader\'s handler')
  // The same host as the leader's, or it would be another entry.
  const host = new URL(base).host
  const waiter = app.inject({ url: '/abandoned', headers: { host } })
  await until(() => cache.getStatistics().misses === 2, 30_000, 'the waiter')
  leader.destroy()
  setTimeout(() => release.open(), 100)
  const res = await waiter
  t.same(res.json(), { run: 1 }, 'the waiter got the leader\'s response')
  t.match(res.headers['cache-status'], /collapsed/)
  t.equal(runs, 1, 'the handler ran once')
  t.equal((await app.inject({ url: '/abandoned', headers: { host } })).headers['x-cache'], 'HIT', 'and it was stored')
})

t.test('a hijacked leader releases its waiters when its response ends', async (t) => {
  const server = await redis()
  let runs = 0
  const release = gate()
  // Waits far longer than the test: a waiter stuck behind the leader would time the test out.
  const { app, cache } = await routeApp(t, onRedis(server, { lock: { ttl: 10 * 60_000, wait: 10 * 60_000 }, commandTimeout: 10 * 60_000 }), (app) => {
    app.get('/raw', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      if (++runs === 1) {
        reply.hijack()
        release.promise.then(() => reply.raw.end('written raw'), () => {})
        return
      }
      return 'through fastify'
    })
  })
  const leader = app.inject('/raw')
  await until(() => runs === 1, 30_000, 'the leader')
  const waiter = app.inject('/raw')
  await until(() => cache.getStatistics().misses === 2, 30_000, 'the waiter')
  release.open()
  t.equal((await leader).body, 'written raw')
  const res = await waiter
  t.pass('not stuck behind the hijacked leader')
  t.equal(res.body, 'through fastify')
  t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; stored')
  t.equal((await app.inject('/raw')).headers['x-cache'], 'HIT')
})

t.test('stale-while-revalidate and stale-if-error (ttl: 1, past it)', async (t) => {
  const server = await redis()
  let version = 1
  let failWith: number | 'throw' | null = null
  let refreshRuns = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/swr', { config: { cache: { ttl: 1, staleWhileRevalidate: 30 } } }, async () => {
      refreshRuns++
      await sleep(30)
      return { version }
    })
    app.get('/sie', { config: { cache: { ttl: 1, staleIfError: 30 } } }, async (_req, reply) => {
      if (failWith === 'throw') throw new Error('database down')
      if (failWith !== null) return reply.code(failWith).send({ error: 'unavailable' })
      reply.type('text/x-version')
      return `version ${version}`
    })
  })
  await app.inject('/swr')
  const stored = await app.inject('/sie')
  t.equal(stored.headers['x-cache'], 'MISS')
  await sleep(1100)
  version = 2

  // Stale-while-revalidate: the old entry at once, one refresh behind it.
  const stale = await Promise.all([app.inject('/swr'), app.inject('/swr'), app.inject('/swr')])
  for (const res of stale) {
    t.equal(res.headers['x-cache'], 'STALE')
    t.match(res.headers['cache-status'], /^fastify-redis-cache; hit; fwd=stale; ttl=-\d+$/)
    t.same(res.json(), { version: 1 })
    t.ok(Number(res.headers.age) >= 1, 'Age says how old it is')
  }
  await until(async () => (await app.inject('/swr')).headers['x-cache'] === 'HIT', 30_000, 'the refreshed entry')
  t.equal(refreshRuns, 2, 'one background refresh for three stale hits')
  const fresh = await app.inject('/swr')
  t.same(fresh.json(), { version: 2 })

  // Stale-if-error: the old entry when the handler fails.
  for (const failure of ['throw', 503, 500] as const) {
    failWith = failure
    const res = await app.inject('/sie')
    t.equal(res.statusCode, 200, `handler ${failure}: the old entry`)
    t.equal(res.headers['x-cache'], 'STALE')
    t.match(res.headers['cache-status'], /^fastify-redis-cache; hit; fwd=stale; detail=error; ttl=-\d+$/)
    t.equal(res.headers['content-type'], 'text/x-version')
    t.equal(res.body, 'version 1')
    t.equal(res.headers.etag, stored.headers.etag)
  }
  failWith = 404
  const notFound = await app.inject('/sie')
  t.equal(notFound.statusCode, 404, 'only server errors fall back')
  t.equal(notFound.headers['cache-status'], 'fastify-redis-cache; fwd=stale; detail=status')
  failWith = 'throw'
  const conditional = await app.inject({ url: '/sie', headers: { 'if-none-match': stored.headers.etag as string } })
  t.equal(conditional.statusCode, 304)
  failWith = null
  const recovered = await app.inject('/sie')
  t.equal(recovered.headers['x-cache'], 'MISS')
  t.equal(recovered.headers['cache-status'], 'fastify-redis-cache; fwd=stale; stored')
  t.equal(recovered.body, 'version 2')
  t.equal((await app.inject('/sie')).headers['x-cache'], 'HIT')
  t.ok(cache.getStatistics().hits >= 4)
})

t.test('stale-if-error never serves an entry busted while the handler ran', async (t) => {
  const server = await redis()
  let failing: { promise: Promise<void> } | null = null
  let entered = gate()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/sie', { config: { cache: { ttl: 1, staleIfError: 30, key: 'sie' } } }, async () => {
      if (failing === null) return 'version 1'
      entered.open()
      await failing.promise
      throw new Error('database down')
    })
  })
  t.equal((await app.inject('/sie')).headers['x-cache'], 'MISS')
  await sleep(1100)
  const handler = gate()
  failing = handler
  entered = gate()
  const answer = app.inject('/sie')
  await entered.promise
  t.equal(await cache.delete('sie'), 1, 'busted while the handler runs')
  handler.open()
  const res = await answer
  t.equal(res.statusCode, 500, 'the handler\'s failure, not the busted entry')
  t.not(res.headers['x-cache'], 'STALE')
})

t.test('an entry already decoded is not served once an invalidation covers it', async (t) => {
  const server = await redis()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/memo', { config: { cache: { ttl: 60, key: 'memo' } } }, async () => `run ${++runs}`)
  })
  t.equal((await app.inject('/memo')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/memo')).headers['x-cache'], 'HIT', 'decoded and remembered')
  // What this instance knows of an invalidation before Redis has applied it: the bytes Redis
  // still returns are the ones already decoded, and must not be served.
  cache.core.stamps.keysDeleted([cache.redisKey('memo')], Date.now())
  const after = await app.inject('/memo')
  t.equal(after.headers['x-cache'], 'MISS')
  t.equal(after.body, 'run 2')
})

t.test('stale entries past their window, or unreadable, are not served', async (t) => {
  const server = await redis()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server, { compression: { threshold: 10 } }), (app) => {
    app.get('/sie', { config: { cache: { ttl: 60, staleIfError: 5 } } }, async () => { runs++; throw new Error('down') })
    app.get('/sie-gz', { config: { cache: { ttl: 60, staleIfError: 60 } } }, async () => { runs++; throw new Error('down') })
    app.get('/swr-gz', { config: { cache: { ttl: 60, staleWhileRevalidate: 60 } } }, async () => { runs++; return 'handler' })
  })
  const raw = rawClient(t, server.url)
  // Written by an instance with a longer window: 10 s past its ttl, this route allows 5.
  await plant(raw, cache, 'localhost:80/sie', { body: 'too old', ageMs: 11_000, freshFor: 1 })
  const tooOld = await app.inject('/sie')
  t.equal(tooOld.statusCode, 500)
  t.equal(tooOld.headers['cache-status'], 'fastify-redis-cache; fwd=stale; detail=status')

  await plant(raw, cache, 'localhost:80/sie-gz', { body: 'stale and corrupt '.repeat(10), ageMs: 2000, freshFor: 1, gzip: true, corrupt: true })
  const errors = cache.getStatistics().errors
  const corruptStale = await app.inject('/sie-gz')
  t.equal(corruptStale.statusCode, 500, 'the handler\'s error, not a crash of the cache')
  t.equal(corruptStale.headers['x-cache'], 'MISS')
  t.equal(cache.getStatistics().errors, errors + 1)

  await plant(raw, cache, 'localhost:80/swr-gz', { body: 'stale and corrupt '.repeat(10), ageMs: 2000, freshFor: 1, gzip: true, corrupt: true })
  const corruptSwr = await app.inject('/swr-gz')
  t.equal(corruptSwr.statusCode, 200)
  t.equal(corruptSwr.headers['x-cache'], 'MISS')
  t.equal(corruptSwr.body, 'handler')
  t.equal(runs, 3)
})

t.test('a background refresh that cannot run is logged', async (t) => {
  const server = await redis()
  let closing: Promise<undefined> | undefined
  // A client the app does not own stays connected while the app closes.
  const client = rawClient(t, server.url)
  const { app, cache, logs } = await routeApp(t, { ...onRedis(server), redis: { client } }, (app) => {
    app.get('/closing', {
      config: {
        cache: {
          ttl: 1,
          staleWhileRevalidate: 60,
          key: (req) => {
            // The app starts closing while this stale hit is answered: its refresh is refused.
            if (req.headers['x-close'] !== undefined) closing ??= req.server.close()
            return 'closing'
          }
        }
      }
    }, async () => 'fresh')
  })
  await plant(rawClient(t, server.url), cache, 'closing', { body: 'stale', ageMs: 2000, freshFor: 1 })
  const res = await app.inject({ url: '/closing', headers: { 'x-close': '1' } })
  t.equal(res.headers['x-cache'], 'STALE')
  t.equal(res.body, 'stale')
  await closing
  await until(() => logs.find('background refresh failed', LEVEL.warn).length === 1, 30_000, 'the log line')
})

t.test('two instances: concurrent misses run the handler on one of them', async (t) => {
  const server = await redis()
  const prefix = uniquePrefix('flight')
  const release = gate()
  const runs = { a: 0, b: 0 }
  let fail = false
  const declare = (name: 'a' | 'b') => (app: Parameters<Parameters<typeof routeApp>[2]>[0]): void => {
    app.get('/shared', { config: { cache: { ttl: 60 } } }, async (req) => {
      runs[name]++
      if (name === 'a') await release.promise
      if (fail && name === 'a') throw new Error('a failed')
      return { by: name, url: req.url }
    })
  }
  const a = await routeApp(t, onRedis(server, { prefix }), declare('a'))
  const b = await routeApp(t, onRedis(server, { prefix }), declare('b'))

  const first = a.app.inject('/shared?x=1')
  await until(() => runs.a === 1, 30_000, 'A\'s handler')
  const second = b.app.inject('/shared?x=1')
  // B has looked the entry up; give it a moment to find A's lock and start polling.
  await until(() => b.cache.getStatistics().misses === 1, 30_000, 'B\'s lookup')
  await sleep(50)
  release.open()
  const [fromA, fromB] = await Promise.all([first, second])
  t.same(fromA.json(), { by: 'a', url: '/shared?x=1' })
  t.same(fromB.json(), { by: 'a', url: '/shared?x=1' }, 'B used A\'s response')
  t.equal(fromB.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; collapsed')
  t.equal(runs.b, 0)

  // A's response is not storable: B does the work itself once A lets go.
  const again = gate()
  release.promise = again.promise
  fail = true
  const third = a.app.inject('/shared?x=2')
  await until(() => runs.a === 2, 30_000, 'A\'s second run')
  const fourth = b.app.inject('/shared?x=2')
  await until(() => b.cache.getStatistics().misses === 2, 30_000, 'B\'s second lookup')
  await sleep(50)
  again.open()
  const [failed, own] = await Promise.all([third, fourth])
  t.equal(failed.statusCode, 500)
  t.same(own.json(), { by: 'b', url: '/shared?x=2' })
  t.equal(own.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; stored')
})

t.test('with the local tier, hits decode a stored buffer once and stay byte-identical', async (t) => {
  const server = await redis()
  let runs = 0
  const { app } = await routeApp(t, onRedis(server, { local: { maxEntries: 100 } }), (app) => {
    app.get('/local', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      runs++
      reply.header('x-kept', 'yes')
      return { local: true }
    })
  })
  const miss = await app.inject('/local')
  // The write is not awaited by the response: a request sent before it lands waits for it (MISS).
  await until(async () => await app.cache.exists('localhost:80/local') === 1, 30_000, 'the entry to be stored')
  const hits = [await app.inject('/local'), await app.inject('/local'), await app.inject('/local')]
  t.equal(runs, 1)
  for (const hit of hits) {
    t.equal(hit.headers['x-cache'], 'HIT')
    t.same(hit.rawPayload, miss.rawPayload)
    t.equal(hit.headers['x-kept'], 'yes')
    t.equal(hit.headers.etag, miss.headers.etag)
  }
})
