// Stale serving (RFC 5861) against a real Redis: staleWhileRevalidate and staleIfError on
// getOrSet and on cached routes, and the maximum entry size. The clock is moved forward (Date.now
// only) to age entries past their ttl; Redis keeps them by its own clock for ttl + the window.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import type { CacheOptions } from '../types'
import { captureLogs, clock, type Logs, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import { gate } from './helpers/route-app'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

interface App {
  app: FastifyInstance
  cache: CacheManager
  logs: Logs
}

async function app (t: tap.Test, options: CacheOptions = {}, routes?: (app: FastifyInstance) => void): Promise<App> {
  const logs = captureLogs()
  const instance = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => instance.close())
  await instance.register(fastifyRedisCache, { redis: { url: server.url }, prefix: uniquePrefix('stale'), routes: false, ...options })
  routes?.(instance)
  await instance.ready()
  return { app: instance, cache: instance.cache as CacheManager, logs }
}

/** A callback that counts its runs and answers after `ms`. */
function counted<T> (ms: number, answer: () => T): { run: () => Promise<T>, runs: () => number } {
  let runs = 0
  return {
    run: async () => {
      runs++
      await sleep(ms)
      return answer()
    },
    runs: () => runs
  }
}

t.test('getOrSet staleWhileRevalidate: the old value at once, one background refresh', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleWhileRevalidate: 30 }
  t.equal(await cache.getOrSet('k', () => 'v1', opts), 'v1')
  t.equal(await cache.ttl('k'), 40, 'Redis keeps it for ttl + the window')

  time.advance(11)
  let version = 2
  // The refresh finishes only when let: the answers below come while it still runs.
  const held = gate()
  const refresh = counted(0, async () => { await held.promise; return `v${version}` })
  const answers = await Promise.all(Array.from({ length: 5 }, () => cache.getOrSet('k', refresh.run, opts)))
  t.same(answers, ['v1', 'v1', 'v1', 'v1', 'v1'], 'the stale value for every caller, without waiting for the refresh')
  t.equal(await cache.getOrSet('k', refresh.run, opts), 'v1', 'still stale while the refresh runs')
  held.open()
  t.equal(await cache.get('k'), null, 'get does not return a value past its ttl')
  await until(async () => (await cache.get('k')) === 'v2', 30_000, 'the refreshed value')
  t.equal(refresh.runs(), 1, 'one refresh for all of them')
  t.equal(await cache.getOrSet('k', refresh.run, opts), 'v2', 'fresh again')

  // A refresh that fails keeps the stale value, and the next call tries again.
  time.advance(11)
  const broken = counted(10, () => { throw new Error('backend down') })
  t.equal(await cache.getOrSet('k', broken.run, opts), 'v2')
  await until(() => broken.runs() === 1, 30_000, 'the failed refresh')
  await sleep(30)
  t.equal(await cache.getOrSet('k', broken.run, opts), 'v2', 'still the stale value')
  await until(() => broken.runs() === 2, 30_000, 'another refresh attempt')

  // Past the window the callback runs in the foreground.
  time.advance(31)
  version = 3
  t.equal(await cache.getOrSet('k', refresh.run, opts), 'v3')
})

t.test('getOrSet staleWhileRevalidate on two instances: one refresh between them, reads racing it included', async (t) => {
  const time = clock(t)
  const prefix = uniquePrefix('stale')
  const a = await app(t, { prefix })
  const b = await app(t, { prefix })
  const opts = { ttl: 10, staleWhileRevalidate: 30 }
  t.equal(await a.cache.getOrSet('k', () => 'v1', opts), 'v1')
  time.advance(11)
  const refresh = counted(100, () => 'v2')
  // Both instances keep reading through the refresh and past its landing, so reads that found
  // the stale entry race the refreshed one being stored and the lock being let go.
  const seen = new Set<unknown>()
  const deadline = Date.now() + 400
  while (Date.now() < deadline) {
    const answers = await Promise.all([a, b, a, b].map(({ cache }) => cache.getOrSet('k', refresh.run, opts)))
    for (const answer of answers) seen.add(answer)
    await sleep(5)
  }
  t.same([...seen].sort(), ['v1', 'v2'], 'the stale value, then the refreshed one')
  t.equal(refresh.runs(), 1, 'the callback ran once across both instances')
})

t.test('getOrSet staleIfError: the old value when the callback fails within the window', async (t) => {
  const time = clock(t)
  const { cache, logs } = await app(t)
  const opts = { ttl: 10, staleIfError: 60 }
  t.same(await cache.getOrSet('e', () => ({ n: 1 }), opts), { n: 1 })
  t.same(await cache.getOrSet('e', () => ({ n: 1 }), opts), { n: 1 })
  time.advance(11)
  const fail = (): never => { throw new Error('backend down') }
  t.same(await cache.getOrSet('e', fail, opts), { n: 1 }, 'stale value instead of the error')
  t.equal(logs.find('serving the stale value').length, 1, 'logged')
  t.same(await cache.getOrSet('e', () => ({ n: 2 }), opts), { n: 2 }, 'a working callback replaces it')
  time.advance(11 + 61)
  await t.rejects(cache.getOrSet('e', fail, opts), { message: 'backend down' }, 'past the window the error is thrown')
  await t.rejects(cache.getOrSet('never', fail, opts), { message: 'backend down' }, 'nothing stale: the error is thrown')
})

t.test('getOrSet with both windows: revalidate first, then stale-if-error', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleWhileRevalidate: 5, staleIfError: 60 }
  await cache.getOrSet('b', () => 'v1', opts)
  t.equal(await cache.ttl('b'), 70, 'kept for the longer window')
  time.advance(20)
  t.equal(await cache.getOrSet('b', () => { throw new Error('down') }, opts), 'v1', 'past revalidate, within stale-if-error')
})

t.test('route staleIfError: an expired Redis entry is served when the handler fails', async (t) => {
  const time = clock(t)
  let mode: 'ok' | 'throw' | '503' = 'ok'
  let runs = 0
  const { app: instance, cache } = await app(t, {}, (app) => {
    app.get('/sie', { config: { cache: { ttl: 10, staleIfError: 30 } } }, async (_request, reply) => {
      runs++
      if (mode === 'throw') throw new Error('database down')
      if (mode === '503') return reply.code(503).send({ error: 'unavailable' })
      return { version: runs }
    })
  })
  const first = await instance.inject('/sie')
  t.equal(first.headers['x-cache'], 'MISS')
  t.same(first.json(), { version: 1 })
  t.equal((await instance.inject('/sie')).headers['x-cache'], 'HIT')
  t.equal(await cache.exists('localhost:80/sie'), 1, 'the entry lives in Redis')
  await sleep(50)

  time.advance(11)
  mode = 'throw'
  const stale = await instance.inject('/sie')
  t.equal(stale.statusCode, 200, 'not the 500')
  t.equal(stale.headers['x-cache'], 'STALE')
  t.match(stale.headers['cache-status'], /fwd=stale; detail=error/)
  t.same(stale.json(), { version: 1 })
  t.match(stale.headers['content-type'], /application\/json/)
  t.equal(runs, 2, 'the handler ran and failed')

  mode = '503'
  const again = await instance.inject('/sie')
  t.equal(again.statusCode, 200, 'a 5xx reply is covered too')
  t.equal(again.headers['x-cache'], 'STALE')

  mode = 'ok'
  const fresh = await instance.inject('/sie')
  t.equal(fresh.headers['x-cache'], 'MISS', 'a working handler replaces the entry')
  t.same(fresh.json(), { version: 4 })
  // Until its write (and lock release) lands, the request that stored an entry lends it to
  // later requests: the clock jump below must not make one of those look late.
  await until(async () => (await instance.inject('/sie')).headers['x-cache'] === 'HIT', 30_000, 'the stored entry')
  await sleep(50)

  time.advance(11 + 31)
  mode = 'throw'
  const late = await instance.inject('/sie')
  t.equal(late.statusCode, 500, 'past the window the failure goes through')
  t.equal(late.headers['x-cache'], 'MISS')
})

t.test('route staleWhileRevalidate: STALE at once, one background refresh, then HIT', async (t) => {
  const time = clock(t)
  let runs = 0
  // The refresh (the second run) finishes only when let: the stale answers come while it runs.
  const held = gate()
  const { app: instance } = await app(t, {}, (app) => {
    app.get('/swr', { config: { cache: { ttl: 10, staleWhileRevalidate: 30 } } }, async () => {
      runs++
      if (runs > 1) await held.promise
      return { version: runs }
    })
  })
  t.same((await instance.inject('/swr')).json(), { version: 1 })
  await until(async () => (await instance.inject('/swr')).headers['x-cache'] === 'HIT', 30_000, 'the stored entry')
  await sleep(50)
  time.advance(11)
  const stale = await Promise.all(Array.from({ length: 5 }, () => instance.inject('/swr')))
  t.pass('answered without waiting for the handler')
  held.open()
  t.same(stale.map((r) => r.headers['x-cache']), ['STALE', 'STALE', 'STALE', 'STALE', 'STALE'])
  t.same(stale.map((r) => r.json()), Array(5).fill({ version: 1 }))
  await until(() => runs === 2, 30_000, 'the background refresh')
  await sleep(200)
  const hit = await instance.inject('/swr')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same(hit.json(), { version: 2 })
  t.equal(runs, 2, 'one background refresh')
})

t.test('route staleWhileRevalidate on two instances: one refresh between them, requests racing it included', async (t) => {
  const time = clock(t)
  const prefix = uniquePrefix('stale')
  let runs = 0
  const routes = (app: FastifyInstance): void => {
    app.get('/swr', { config: { cache: { ttl: 10, staleWhileRevalidate: 30 } } }, async () => {
      runs++
      await sleep(100)
      return { version: runs }
    })
  }
  const a = await app(t, { prefix }, routes)
  const b = await app(t, { prefix }, routes)
  t.same((await a.app.inject('/swr')).json(), { version: 1 })
  await until(async () => (await b.app.inject('/swr')).headers['x-cache'] === 'HIT', 30_000, 'the stored entry')
  // The first request lets its lock go once its entry is written: the jump of the clock must
  // not land before that, or the entry it just wrote would be stale under a lock still held.
  await sleep(50)
  time.advance(11)
  // Requests on both instances all through the refresh and past its landing.
  const outcomes = new Set<string>()
  const deadline = Date.now() + 400
  while (Date.now() < deadline) {
    const replies = await Promise.all([a, b, a, b].map(({ app }) => app.inject('/swr')))
    for (const reply of replies) outcomes.add(`${String(reply.headers['x-cache'])} ${reply.json<{ version: number }>().version}`)
    await sleep(5)
  }
  t.same([...outcomes].sort(), ['HIT 2', 'STALE 1'], 'stale, then the refreshed entry')
  t.equal(runs, 2, 'one background refresh across both instances')
})

t.test('maxEntrySize: larger entries are not stored, and are counted', async (t) => {
  const { app: instance, cache, logs } = await app(t, { maxEntrySize: 600, compression: { threshold: 256 } }, (app) => {
    app.get('/big', { config: { cache: { ttl: 60, compress: false } } }, async () => ({ data: 'b'.repeat(2000) }))
    app.get('/small', { config: { cache: { ttl: 60 } } }, async () => ({ data: 's'.repeat(100) }))
  })
  const raw = rawClient(t, server.url)
  const big = 'x'.repeat(2000)
  t.equal(await cache.set('big', big, { compress: false }), false, 'not stored')
  t.equal(await raw.exists(cache.redisKey('big')), 0, 'nothing in Redis')
  t.equal(cache.getStatistics().oversized, 1)
  t.equal(logs.find('larger than maxEntrySize').length, 1, 'logged, and then throttled')
  t.equal(await cache.set('zipped', big), false, 'the size counts before compression: no gzip is spent on it')
  t.equal(await cache.get('zipped'), null)

  let runs = 0
  t.equal(await cache.getOrSet('gos', () => { runs++; return big }, { compress: false }), big, 'getOrSet still answers')
  t.equal(await cache.getOrSet('gos', () => { runs++; return big }, { compress: false }), big)
  t.equal(runs, 2, 'but stores nothing')
  t.equal(cache.getStatistics().oversized, 4)

  for (let i = 0; i < 2; i++) {
    const res = await instance.inject('/big')
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-cache'], 'MISS', 'never a hit')
    // The second may be lent the first's response while that write is being refused.
    t.match(res.headers['cache-status'], i === 0 ? /detail=size/ : /detail=size|collapsed/, 'and it does not claim to be stored')
    t.equal(res.json().data.length, 2000, 'the whole body')
  }
  // The second request may have been lent the first one's response while its write was on its
  // way (and refused): then it stored nothing itself.
  t.ok(cache.getStatistics().oversized >= 5, 'the route\'s entries were counted')
  t.equal(await cache.exists('localhost:80/big'), 0)
  await instance.inject('/small')
  t.equal((await instance.inject('/small')).headers['x-cache'], 'HIT', 'smaller ones are')
})
