// getOrSet against a real Redis: the callback's context (ttl, tags, skip, stale), eager refresh,
// soft and hard timeouts, and ttl jitter. Slow callbacks wait on promises the test resolves, so
// every assertion is about order and outcome, never about how long something took. The clock is
// moved forward (Date.now only) to age entries; Redis keeps them by its own clock.
import t from 'tap'
import Fastify from 'fastify'
import fastifyRedisCache, { CacheConfigError, CacheError, CacheTimeoutError } from '../index'
import type { CacheOptions, GetOrSetContext } from '../types'
import { build, type Built, clock, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

function app (t: tap.Test, options: CacheOptions = {}): Promise<Built> {
  return build(t, { redis: { url: server.url }, prefix: uniquePrefix('gos'), ...options })
}

/**
 * A callback whose runs wait until the test releases them: `runs` counts them, `release` ends the
 * oldest pending one with a value, `started` resolves once a run has begun.
 */
function gated<T> (): { run: (ctx: GetOrSetContext<T>) => Promise<T>, runs: () => number, release: (value: T) => void, contexts: Array<GetOrSetContext<T>> } {
  const pending: Array<(value: T) => void> = []
  const contexts: Array<GetOrSetContext<T>> = []
  return {
    run: (ctx) => {
      contexts.push(ctx)
      return new Promise<T>((resolve) => { pending.push(resolve) })
    },
    runs: () => contexts.length,
    release: (value) => { (pending.shift() as (value: T) => void)(value) },
    contexts
  }
}

t.test('the callback decides its ttl and tags, and whether to store at all', async (t) => {
  const { cache } = await app(t, { maxTtl: 500 })
  t.equal(await cache.getOrSet('long', (ctx) => { ctx.setTtl(300); return 'final' }, { ttl: 10 }), 'final')
  t.equal(await cache.ttl('long'), 300, 'the ttl the callback chose, in Redis')
  await cache.getOrSet('clamped', (ctx) => { ctx.setTtl(10_000); return 1 })
  t.equal(await cache.ttl('clamped'), 500, 'clamped to maxTtl')

  t.equal(await cache.getOrSet('tagged', (ctx) => { ctx.setTags(['user:1']); return 'r' }, { tags: ['other'] }), 'r')
  t.equal(await cache.invalidateTags('other'), 0, 'the call\'s tags were replaced')
  t.equal(await cache.invalidateTags('user:1'), 1, 'the tag the callback chose')
  t.equal(await cache.exists('tagged'), 0)

  let runs = 0
  const partial = (ctx: GetOrSetContext<{ partial: boolean }>): { partial: boolean } => { runs++; ctx.skip(); return { partial: true } }
  t.same(await cache.getOrSet('partial', partial), { partial: true }, 'skip still returns the value')
  t.equal(await cache.exists('partial'), 0, 'but does not store it')
  await cache.getOrSet('partial', partial)
  t.equal(runs, 2, 'so the next call runs the callback again')

  t.equal(await cache.getOrSet('plain', () => 'no context needed'), 'no context needed', 'a callback without a parameter works as before')

  await t.rejects(cache.getOrSet('bad-ttl', (ctx) => { ctx.setTtl(-1); return 1 }), { code: 'CACHE_INVALID_VALUE' }, 'a bad ttl is the callback\'s error')
  await t.rejects(cache.getOrSet('bad-tags', (ctx) => { ctx.setTags(['']); return 1 }), { code: 'CACHE_KEY_INVALID' }, 'as is a bad tag')
  t.equal(await cache.exists(['bad-ttl', 'bad-tags']), 0)
})

t.test('ctx.stale is the expired value being replaced', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleIfError: 60 }
  const seen: unknown[] = []
  const callback = (ctx: GetOrSetContext<number>): number => { seen.push(ctx.stale); return (ctx.stale ?? 0) + 1 }
  t.equal(await cache.getOrSet('n', callback, opts), 1)
  time.advance(11)
  t.equal(await cache.getOrSet('n', callback, opts), 2)
  t.same(seen, [undefined, 1], 'nothing on the first run, the expired value on the next')
})

t.test('hard timeout: a hung Redis never turns into a CacheTimeoutError', async (t) => {
  const hung = await startRedis()
  t.teardown(() => hung.stop())
  const { cache } = await app(t, { redis: { url: hung.url }, commandTimeout: 1000, circuitBreaker: false })
  t.equal(await cache.set('warm', 1), true)
  hung.pause()
  // The lookup and the write each wait out commandTimeout, far past `hard`. The hard timeout
  // counts from the end of the lookup, and a result that is only being stored is in time.
  t.equal(await cache.getOrSet('k', () => 'computed', { timeout: { hard: 50 } }), 'computed')
  t.equal(cache.core.stats.timeouts, 0)
  t.ok(cache.core.stats.errors >= 1, 'the failed lookup counted')
})

t.test('ctx.stale is never a value an invalidation covered after it was read', async (t) => {
  const time = clock(t)
  const { cache } = await app(t, { lock: { ttl: 30_000, wait: 30_000 } })
  const raw = rawClient(t, server.url)
  const opts = { ttl: 10, staleIfError: 60 }
  t.equal(await cache.getOrSet('n', () => 'old', opts), 'old')
  time.advance(11)
  // Another instance is loading the value: this call reads the expired one, then waits its turn.
  const lockKey = cache.core.layout.lockPrefix + cache.redisKey('n')
  await raw.set(lockKey, 'another instance', 'PX', 30_000)
  const seen: unknown[] = []
  const misses = cache.core.stats.misses
  const loading = cache.getOrSet('n', (ctx: GetOrSetContext<string>) => { seen.push(ctx.stale); return ctx.stale ?? 'new' }, opts)
  await until(async () => cache.core.stats.misses > misses, 10_000, 'the expired value read')
  await cache.delete('n')
  await raw.del(lockKey)
  t.equal(await loading, 'new', 'the callback did not get the deleted value back')
  t.same(seen, [undefined])
  t.equal(await cache.get('n'), 'new')
})

t.test('eager refresh: a hot key is refreshed in the background and never becomes a blocking miss', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, eagerRefresh: 0.5 }
  t.equal(await cache.getOrSet('hot', () => 'v1', opts), 'v1')

  time.advance(3)
  const callback = gated<string>()
  t.equal(await cache.getOrSet('hot', callback.run, opts), 'v1')
  t.equal(callback.runs(), 0, 'before the threshold: a plain hit')

  time.advance(3)
  // Every caller answers while the refresh is still running: none waits for it.
  const answers = await Promise.all(Array.from({ length: 8 }, () => cache.getOrSet('hot', callback.run, opts)))
  t.same(answers, Array(8).fill('v1'))
  await until(() => callback.runs() === 1, 5000, 'the refresh')
  t.equal(await cache.getOrSet('hot', callback.run, opts), 'v1', 'still answered at once while it runs')
  t.equal(callback.runs(), 1, 'one refresh for all of them')
  t.equal(callback.contexts[0].stale, 'v1', 'the refresh sees the value it replaces')
  callback.release('v2')
  await until(async () => (await cache.get('hot')) === 'v2', 5000, 'the refreshed value')
  t.equal(cache.getStatistics().eagerRefreshes, 1)

  // Under steady traffic across many ttls, the key is refreshed ahead of expiry every time.
  const misses = cache.getStatistics().misses
  let version = 2
  const quick = (): string => `v${++version}`
  for (let step = 0; step < 12; step++) {
    time.advance(3)
    const { sets, eagerRefreshes } = cache.getStatistics()
    t.match(await cache.getOrSet('hot', quick, opts), /^v\d+$/)
    // Each refresh lands before the clock moves on, as it would under real traffic.
    if (cache.getStatistics().eagerRefreshes > eagerRefreshes) await until(() => cache.getStatistics().sets > sets, 5000, 'the refresh stored')
  }
  t.equal(cache.getStatistics().misses, misses, 'no lookup found the key expired: no caller ever waited for the callback')
  t.ok(version > 5, 'refreshed again and again')
})

const EAGER = { ttl: 10, eagerRefresh: 0.5 }

/** Two instances on one prefix, with `k` stored as v1 by the first and now past half its ttl. */
async function pastHalfOnTwo (t: tap.Test): Promise<[Built, Built]> {
  const time = clock(t)
  const prefix = uniquePrefix('gos')
  const a = await app(t, { prefix })
  const b = await app(t, { prefix })
  t.equal(await a.cache.getOrSet('k', () => 'v1', EAGER), 'v1')
  time.advance(6)
  return [a, b]
}

t.test('eager refresh across two instances: one refresh between them', async (t) => {
  const [a, b] = await pastHalfOnTwo(t)
  const opts = EAGER
  const callback = gated<string>()
  t.equal(await a.cache.getOrSet('k', callback.run, opts), 'v1')
  await until(() => callback.runs() === 1, 5000, 'the refresh on a')
  // b's refresh finds the lock taken: it waits for a's result rather than running the callback.
  t.equal(await b.cache.getOrSet('k', callback.run, opts), 'v1')
  await sleep(50)
  callback.release('v2')
  await until(async () => (await b.cache.get('k')) === 'v2', 5000, 'the refreshed value on b')
  t.equal(callback.runs(), 1, 'the callback ran once across both instances')
})

t.test('eager refresh from the local tier and the memory store', async (t) => {
  for (const options of [{ local: { maxEntries: 100 } }, { redis: false as const }]) {
    const time = clock(t)
    const { cache } = await app(t, options)
    const opts = { ttl: 10, eagerRefresh: 0.8 }
    t.equal(await cache.getOrSet('k', () => 'v1', opts), 'v1')
    t.equal(await cache.getOrSet('k', () => 'unused', opts), 'v1', 'a hit (held in this process)')
    time.advance(9)
    let runs = 0
    t.equal(await cache.getOrSet('k', () => { runs++; return 'v2' }, opts), 'v1', 'answered at once')
    await until(async () => (await cache.get('k')) === 'v2', 5000, 'the refreshed value')
    t.equal(runs, 1)
  }
})

t.test('soft timeout: a slow callback with a stale value answers with it, then its result lands', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleIfError: 60, timeout: { soft: 20 } }
  t.equal(await cache.getOrSet('s', () => 'v1', opts), 'v1')
  time.advance(11)
  const callback = gated<string>()
  const order: string[] = []
  const first = cache.getOrSet('s', callback.run, opts).then((value) => { order.push(`answered ${value}`) })
  await first
  await until(() => callback.runs() === 1, 5000, 'the callback running')
  t.equal(await cache.getOrSet('s', callback.run, opts), 'v1', 'a later caller gets the stale value too')
  t.equal(callback.runs(), 1, 'and joins the same run')
  t.equal(callback.contexts[0].stale, 'v1')
  order.push('callback done')
  callback.release('v2')
  await until(async () => (await cache.get('s')) === 'v2', 5000, 'the result stored')
  t.same(order, ['answered v1', 'callback done'], 'answered before the callback completed')
  t.equal(cache.getStatistics().staleOnTimeout, 2)
})

t.test('soft timeout: no stale value, or one invalidated meanwhile: the caller waits for the callback', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleIfError: 60, timeout: { soft: 300 } }
  const fresh = gated<string>()
  const waiting = cache.getOrSet('none', fresh.run, opts)
  await until(() => fresh.runs() === 1, 5000, 'the callback')
  fresh.release('only')
  t.equal(await waiting, 'only', 'nothing stale: the callback\'s value')

  t.equal(await cache.getOrSet('inv', () => 'old', opts), 'old')
  time.advance(11)
  const callback = gated<string>()
  let settled = false
  const answer = cache.getOrSet('inv', callback.run, opts).finally(() => { settled = true })
  await until(() => callback.runs() === 1, 5000, 'the callback')
  await cache.delete('inv')
  await sleep(400)
  t.notOk(settled, 'the deleted value is not served when the soft timeout passes')
  callback.release('new')
  t.equal(await answer, 'new')
})

t.test('hard timeout: the typed error without a stale value; the result still lands', async (t) => {
  const { cache, logs } = await app(t)
  const callback = gated<string>()
  const call = cache.getOrSet('h', callback.run, { timeout: { hard: 20 } })
  const err = await call.catch((err: unknown) => err)
  t.ok(err instanceof CacheTimeoutError, 'a CacheTimeoutError')
  t.ok(err instanceof CacheError)
  t.match(err, { code: 'CACHE_TIMEOUT', statusCode: 504, timeoutMs: 20 })
  t.equal(cache.getStatistics().timeouts, 1)
  await until(() => callback.runs() === 1, 5000, 'the callback')
  callback.release('late')
  await until(async () => (await cache.get('h')) === 'late', 5000, 'the late result stored')

  // Invalidated while the callback ran: the late result is not stored.
  const again = gated<string>()
  await t.rejects(cache.getOrSet('h2', again.run, { timeout: { hard: 20 } }), CacheTimeoutError)
  await until(() => again.runs() === 1, 5000, 'the callback')
  await cache.delete('h2')
  again.release('too late')
  await until(() => logs.find('an invalidation came after its work began').length > 0, 5000, 'the refused write')
  t.equal(await cache.exists('h2'), 0)

  // forceRefresh waits no longer either.
  const forced = gated<string>()
  await t.rejects(cache.getOrSet('h3', forced.run, { forceRefresh: true, timeout: { hard: 20 } }), CacheTimeoutError)
  t.equal(forced.runs(), 1, 'forceRefresh runs the callback at once')
  forced.release('x')
  await until(async () => (await cache.get('h3')) === 'x', 5000, 'stored')
})

t.test('hard timeout: waiting for another instance\'s callback counts', async (t) => {
  const prefix = uniquePrefix('gos')
  const a = await app(t, { prefix })
  const b = await app(t, { prefix, lock: { ttl: 30_000, wait: 30_000 } })
  const callback = gated<string>()
  const onA = a.cache.getOrSet('w', callback.run)
  await until(() => callback.runs() === 1, 5000, 'a running the callback')
  await t.rejects(b.cache.getOrSet('w', () => 'never', { timeout: { hard: 20 } }), CacheTimeoutError, 'b gave up waiting for a')
  callback.release('from a')
  t.equal(await onA, 'from a')
})

t.test('hard timeout with a stale value: the stale value', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleIfError: 60, timeout: { hard: 20 } }
  t.equal(await cache.getOrSet('hs', () => 'v1', opts), 'v1')
  time.advance(11)
  const callback = gated<string>()
  t.equal(await cache.getOrSet('hs', callback.run, opts), 'v1')
  await until(() => callback.runs() === 1, 5000, 'the callback running')
  callback.release('v2')
  await until(async () => (await cache.get('hs')) === 'v2', 5000, 'the result stored')
})

t.test('a callback that fails after its callers got the stale value is logged', async (t) => {
  const time = clock(t)
  const { cache, logs } = await app(t)
  const opts = { ttl: 10, staleIfError: 1, timeout: { soft: 10 } }
  t.equal(await cache.getOrSet('f', () => 'v1', opts), 'v1')
  time.advance(10.5)
  let fail!: (err: Error) => void
  const answer = await cache.getOrSet('f', () => new Promise<string>((_resolve, reject) => { fail = reject }), opts)
  t.equal(answer, 'v1')
  // Past the stale window by now, so the failure cannot be answered with the stale value.
  time.advance(5)
  fail(new Error('backend down'))
  await until(() => logs.find('failed after its callers were given the stale value').length === 1, 5000, 'the log line')
})

t.test('jitter spreads stored ttls below the ttl, within the bound', async (t) => {
  const { cache } = await app(t)
  const ttls: number[] = []
  for (let i = 0; i < 40; i++) {
    await cache.getOrSet(`j${i}`, () => i, { ttl: 100, jitter: 0.2 })
    ttls.push(await cache.ttl(`j${i}`))
  }
  t.ok(ttls.every((ttl) => ttl >= 80 && ttl <= 100), `all within [80, 100]: ${ttls.join(',')}`)
  t.ok(new Set(ttls).size > 1, 'and not all the same')
})

t.test('defaults from the plugin options, overridden per call', async (t) => {
  const time = clock(t)
  const { cache } = await app(t, { getOrSet: { staleIfError: 60, timeout: { soft: 10, hard: 1000 }, jitter: 0 } })
  t.equal(await cache.getOrSet('d', () => 'v1', { ttl: 10 }), 'v1')
  time.advance(11)
  const slow = gated<string>()
  t.equal(await cache.getOrSet('d', slow.run, { ttl: 10 }), 'v1', 'the default soft timeout served the stale value')
  await until(() => slow.runs() === 1, 5000, 'the callback running')
  slow.release('v2')
  await until(async () => (await cache.get('d')) === 'v2', 5000, 'stored')

  t.equal(await cache.getOrSet('d2', () => 'v1', { ttl: 10 }), 'v1')
  time.advance(11)
  const waited = gated<string>()
  const answer = cache.getOrSet('d2', waited.run, { ttl: 10, timeout: false })
  await until(() => waited.runs() === 1, 5000, 'the callback')
  await sleep(30)
  waited.release('v3')
  t.equal(await answer, 'v3', 'timeout: false waits for the callback')
})

t.test('options are validated: per call a RangeError, at registration a CacheConfigError', async (t) => {
  const { cache } = await app(t)
  const bad = [
    { eagerRefresh: 1.5 }, { eagerRefresh: 0 }, { eagerRefresh: 'x' }, { jitter: -0.1 }, { jitter: 2 },
    { timeout: { soft: 0 } }, { timeout: { soft: 1.5 } }, { timeout: { soft: 50, hard: 10 } }, { timeout: { later: 1 } },
    { timeout: 5 }, { timeout: null }, { timeout: [] }, { staleIfError: -1 }, { staleWhileRevalidate: 0.5 }
  ]
  for (const opts of bad) {
    await t.rejects(cache.getOrSet('v', () => 1, opts as never), { name: 'RangeError', code: 'CACHE_INVALID_VALUE' }, JSON.stringify(opts))
  }
  t.equal(await cache.getOrSet('v', () => 1, { eagerRefresh: false, jitter: 1, timeout: { soft: 5000, hard: 5000 } }), 1, 'edges are fine')

  for (const getOrSet of [{ eagerRefresh: 2 }, { timeout: { soft: 100, hard: 50 } }, { jitter: 'no' }, { retries: 1 }]) {
    const instance = Fastify()
    t.teardown(() => instance.close())
    const registering = async (): Promise<void> => {
      await instance.register(fastifyRedisCache, { redis: false, routes: false, getOrSet } as CacheOptions)
      await instance.ready()
    }
    await t.rejects(registering(), CacheConfigError, JSON.stringify(getOrSet))
  }
})

t.test('staleIfError does not serve a value invalidated while the callback ran', async (t) => {
  const time = clock(t)
  const { cache } = await app(t)
  const opts = { ttl: 10, staleIfError: 60 }
  t.equal(await cache.getOrSet('gone', () => 'old', opts), 'old')
  time.advance(11)
  let fail!: (err: Error) => void
  let started = false
  const call = cache.getOrSet('gone', () => new Promise<string>((_resolve, reject) => { started = true; fail = reject }), opts)
  await until(() => started, 5000, 'the callback')
  await cache.delete('gone')
  fail(new Error('backend down'))
  await t.rejects(call, { message: 'backend down' }, 'the error, not the deleted value')
})

t.test('an eager refresh that fails is logged; the value stays', async (t) => {
  const time = clock(t)
  const { cache, logs } = await app(t)
  const opts = { ttl: 10, eagerRefresh: 0.5 }
  t.equal(await cache.getOrSet('e', () => 'v1', opts), 'v1')
  time.advance(6)
  t.equal(await cache.getOrSet('e', () => { throw new Error('backend down') }, opts), 'v1')
  await until(() => logs.find('eager refresh failed').length === 1, 5000, 'the log line')
  t.equal(await cache.get('e'), 'v1')
})

t.test('eager refresh across instances: a waiter whose holder fails keeps its value and runs nothing', async (t) => {
  const [a, b] = await pastHalfOnTwo(t)
  const opts = EAGER
  let fail!: (err: Error) => void
  let aRuns = 0
  t.equal(await a.cache.getOrSet('k', () => { aRuns++; return new Promise<string>((_resolve, reject) => { fail = reject }) }, opts), 'v1')
  await until(() => aRuns === 1, 5000, 'a refreshing')
  const onB = gated<string>()
  t.equal(await b.cache.getOrSet('k', onB.run, opts), 'v1', 'b answers at once; its refresh waits for a')
  fail(new Error('backend down'))
  // b's first refresh gives up without running the callback, so a second one can start; only
  // that one runs it (a first one that ran it would still be waiting on the gate).
  await until(async () => {
    await b.cache.getOrSet('k', onB.run, opts)
    return b.cache.getStatistics().eagerRefreshes === 2
  }, 10_000, 'a second refresh on b')
  await until(() => onB.runs() === 1, 5000, 'the second refresh runs the callback')
  onB.release('v2')
  await until(async () => (await b.cache.get('k')) === 'v2', 5000, 'the refreshed value')
})
