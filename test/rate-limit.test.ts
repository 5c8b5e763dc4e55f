// fastify.cache.rateLimit(id, { max, window }): a fixed window, atomic in Redis and in the memory
// store. Under concurrency exactly `max` calls pass per window, across instances sharing a Redis
// too; the rest throw RateLimitError with retryAfter; the window resets after `window` seconds.
import t, { type Test } from 'tap'
import { build, rawClient, uniquePrefix } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import type { CacheManager } from '../lib/cache/manager'
import { CacheKeyError, RateLimitError, RedisConnectionError } from '../lib/errors'
import type { RateLimitResult } from '../types'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

interface Outcome { passed: RateLimitResult[], limited: RateLimitError[] }

async function burst (caches: CacheManager[], id: string, calls: number, max: number, window: number): Promise<Outcome> {
  const settled = await Promise.allSettled(Array.from({ length: calls }, (_, i) => caches[i % caches.length].rateLimit(id, { max, window })))
  const passed: RateLimitResult[] = []
  const limited: RateLimitError[] = []
  for (const result of settled) {
    if (result.status === 'fulfilled') passed.push(result.value)
    else if (result.reason instanceof RateLimitError) limited.push(result.reason)
    else throw result.reason
  }
  return { passed, limited }
}

function behaves (name: string, setup: (t: Test) => Promise<CacheManager[]>): void {
  t.test(name, async (t) => {
    t.test('50 parallel calls with max 10: exactly 10 pass', async (t) => {
      const caches = await setup(t)
      const { passed, limited } = await burst(caches, 'burst', 50, 10, 30)
      t.equal(passed.length, 10)
      t.equal(limited.length, 40)
      t.same(passed.map((r) => r.remaining).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'each pass sees its own count')
      for (const r of passed) {
        t.equal(r.limit, 10)
        t.ok(r.reset >= 1 && r.reset <= 30, `reset ${r.reset} within the window`)
      }
      for (const err of limited) {
        t.equal(err.statusCode, 429)
        t.equal(err.code, 'CACHE_RATE_LIMITED')
        t.equal(err.limit, 10)
        t.ok(Number.isInteger(err.retryAfter) && err.retryAfter >= 1 && err.retryAfter <= 30, `retryAfter ${err.retryAfter}`)
      }
    })

    t.test('repeated bursts in one window never let more than max through', async (t) => {
      const caches = await setup(t)
      let passed = 0
      for (let round = 0; round < 5; round++) passed += (await burst(caches, 'rounds', 20, 7, 30)).passed.length
      t.equal(passed, 7)
    })

    t.test('the window resets after `window` seconds', async (t) => {
      const caches = await setup(t)
      const first = await burst(caches, 'win', 8, 3, 1)
      t.equal(first.passed.length, 3)
      t.ok(first.limited.every((err) => err.retryAfter === 1), 'retry after at most the 1 s window')
      await sleep(1100)
      const second = await burst(caches, 'win', 8, 3, 1)
      t.equal(second.passed.length, 3, 'a new window lets max through again')
      t.equal(second.limited.length, 5)
    })

    t.test('ids are counted separately', async (t) => {
      const caches = await setup(t)
      const [a, b] = await Promise.all([burst(caches, 'user:a', 10, 4, 30), burst(caches, 'user:b', 10, 4, 30)])
      t.equal(a.passed.length, 4)
      t.equal(b.passed.length, 4)
    })

    t.test('a sequence counts down remaining, then throws', async (t) => {
      const [cache] = await setup(t)
      t.match(await cache.rateLimit('seq', { max: 2, window: 60 }), { limit: 2, remaining: 1 })
      t.match(await cache.rateLimit('seq', { max: 2, window: 60 }), { limit: 2, remaining: 0 })
      await t.rejects(cache.rateLimit('seq', { max: 2, window: 60 }), RateLimitError)
    })

    t.test('bad arguments are programmer errors', async (t) => {
      const [cache] = await setup(t)
      await t.rejects(cache.rateLimit('', { max: 1, window: 1 }), CacheKeyError)
      await t.rejects(cache.rateLimit('x', { max: 0, window: 1 }), RangeError)
      await t.rejects(cache.rateLimit('x', { max: 1.5, window: 1 }), RangeError)
      await t.rejects(cache.rateLimit('x', { max: 1, window: 0 }), RangeError)
      await t.rejects(cache.rateLimit('x', { max: 1, window: 0.5 }), RangeError)
    })
  })
}

behaves('memory store', async (t) => [(await build(t, { redis: false })).cache])

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server.stop())

behaves('Redis', async (t) => [(await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })).cache])

behaves('Redis, three instances sharing it', async (t) => {
  const prefix = uniquePrefix('shared')
  return Promise.all([1, 2, 3].map(async () => (await build(t, { redis: { url: server.url }, prefix })).cache))
})

t.test('Redis: the window is one key under the prefix with a TTL of the window', async (t) => {
  const prefix = uniquePrefix('key')
  const { cache } = await build(t, { redis: { url: server.url }, prefix })
  await cache.rateLimit('client-1', { max: 5, window: 60 })
  await cache.rateLimit('client-1', { max: 5, window: 60 })
  const raw = rawClient(t, server.url)
  const keys = await raw.keys(`${prefix}:*`)
  t.same(keys, [`${prefix}:#rl:client-1`])
  t.equal(await raw.get(keys[0]), '2')
  const pttl = await raw.pttl(keys[0])
  t.ok(pttl > 58_000 && pttl <= 60_000, `PTTL ${pttl}`)
})

t.test('Redis down: rateLimit fails open, or throws with throwOnError', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const open = await build(t, { redis: { url: own.url }, prefix: uniquePrefix(), commandTimeout: 200 })
  const strict = await build(t, { redis: { url: own.url }, prefix: uniquePrefix(), commandTimeout: 200, throwOnError: true })
  await own.kill()
  const errorsBefore = open.cache.getStatistics().errors
  t.same(await open.cache.rateLimit('x', { max: 3, window: 10 }), { limit: 3, remaining: 3, reset: 10 }, 'an outage does not turn requests away')
  t.ok(open.cache.getStatistics().errors > errorsBefore, 'the failure is counted')
  await t.rejects(strict.cache.rateLimit('x', { max: 3, window: 10 }), RedisConnectionError)
})
