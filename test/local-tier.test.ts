// The local tier against a real Redis: two instances stay coherent through Pub/Sub (every kind of
// change drops the other's copy within 100 ms), the tier is flushed when its subscription comes
// back, it is bounded (entries, bytes, LRU, evictions counted), it serves while Redis is down,
// and no copy outlives its entry's freshness or the tier's ttl.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache'
import { LocalTier, TieredStore } from '../lib/local-tier'
import { Codec, KIND_VALUE } from '../lib/serializer'
import { Statistics } from '../lib/statistics'
import type { CacheOptions } from '../types'
import { captureLogs, type Logs, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

interface Instance {
  app: FastifyInstance
  cache: CacheManager
  tiered: TieredStore
  logs: Logs
}

async function instance (t: tap.Test, prefix: string, options: CacheOptions = {}, redis: RedisServer = server): Promise<Instance> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: { url: redis.url }, prefix, routes: false, local: { maxEntries: 100 }, ...options })
  app.get('/page', { config: { cache: { ttl: 60, namespace: 'pages', tags: ['pages'] } } }, async () => ({ page: pageVersion }))
  app.get('/greeting', { config: { cache: { ttl: 60, vary: ['accept-language'] } } }, async (request) => ({ lang: request.headers['accept-language'] ?? null }))
  app.post('/page', { config: { cache: { bust: { namespace: 'pages', keys: ['/page'] } } } }, async () => {
    pageVersion++
    return { ok: true }
  })
  await app.ready()
  const cache = app.cache as CacheManager
  t.ok(cache.store instanceof TieredStore, 'the local tier is in front of Redis')
  const tiered = cache.store as TieredStore
  // The subscription is made on its own connection once that is ready.
  await until(async () => {
    const subscribers = await redis.cli('pubsub', 'numsub', `${prefix}:#invalidate`)
    return Number(subscribers.split('\n')[1]) >= 1
  }, 3000, 'the invalidation subscription')
  return { app, cache, tiered, logs }
}

let pageVersion = 1

/** Two instances with the local tier, sharing one prefix. */
async function pair (t: tap.Test, options: CacheOptions = {}): Promise<[Instance, Instance]> {
  const prefix = uniquePrefix('local')
  const a = await instance(t, prefix, options)
  const b = await instance(t, prefix, options)
  await until(async () => Number((await server.cli('pubsub', 'numsub', `${prefix}:#invalidate`)).split('\n')[1]) === 2, 3000, 'both subscriptions')
  return [a, b]
}

/**
 * Reads until `inst` keeps a local copy: a read that overlaps any invalidation message (another
 * instance's write a moment ago, say) is deliberately not kept.
 */
async function held (inst: Instance, read: () => Promise<unknown>, fullKey: string): Promise<void> {
  await until(async () => {
    await read()
    return inst.tiered.local.get(fullKey) !== undefined
  }, 2000, `a local copy of ${fullKey}`)
}

/** Waits until `instance` holds no local copy of `fullKey`; returns how long that took. */
async function dropped (inst: Instance, fullKey: string): Promise<number> {
  const started = Date.now()
  await until(() => inst.tiered.local.get(fullKey) === undefined, 1000, `the local copy of ${fullKey} to go`)
  return Date.now() - started
}

t.test('every change on one instance drops the other\'s local copy within 100 ms', async (t) => {
  const [a, b] = await pair(t)
  const warm = async (key: string, value: unknown, opts: { namespace?: string, tags?: string[] } = {}): Promise<string> => {
    // Written through b, so b holds it at once (a's own write would reach b as an invalidation).
    await b.cache.set(key, value, opts)
    t.same(await a.cache.get(key, opts), value, 'a reads it')
    const fullKey = b.cache.redisKey(key, opts.namespace)
    t.ok(b.tiered.local.get(fullKey) !== undefined, `b holds ${key}`)
    return fullKey
  }

  let fullKey = await warm('k', 'v1')
  const bytesRead = b.cache.getStatistics().bytesRead
  t.equal(await b.cache.get('k'), 'v1', 'a local hit')
  t.ok(b.cache.getStatistics().bytesRead > bytesRead, 'counted like any hit')
  await a.cache.set('k', 'v2')
  t.ok(await dropped(b, fullKey) < 100, 'set')
  t.equal(await b.cache.get('k'), 'v2', 'b reads the new value')

  await a.cache.delete('k')
  t.ok(await dropped(b, fullKey) < 100, 'delete')
  t.equal(await b.cache.get('k'), null)

  fullKey = await warm('e', 'v')
  await a.cache.expire('e', 100)
  t.ok(await dropped(b, fullKey) < 100, 'expire')

  fullKey = await warm('n', 'v', { namespace: 'ns1' })
  const other = await warm('n', 'v', { namespace: 'ns2' })
  await a.cache.clear('ns1')
  t.ok(await dropped(b, fullKey) < 100, 'clear(namespace)')
  t.ok(b.tiered.local.get(other) !== undefined, 'other namespaces stay')
  await a.cache.clear()
  t.ok(await dropped(b, other) < 100, 'clear()')

  fullKey = await warm('tagged', 'v', { tags: ['t1'] })
  t.equal(await a.cache.invalidateTags('t1'), 1)
  t.ok(await dropped(b, fullKey) < 100, 'invalidateTags')
  t.equal(await a.cache.invalidateTags('t1'), 0, 'nothing left to invalidate')

  // Route caching: a bust on one instance, a hit served locally on the other.
  t.equal((await b.app.inject('/page')).headers['x-cache'], 'MISS')
  fullKey = b.cache.redisKey('/page', 'pages')
  await until(() => b.tiered.local.get(fullKey) !== undefined, 1000, 'b to hold the page it stored')
  t.equal((await a.app.inject('/page')).headers['x-cache'], 'HIT')
  t.equal((await b.app.inject('/page')).headers['x-cache'], 'HIT', 'a local hit')
  await a.app.inject({ method: 'POST', url: '/page' })
  t.ok(await dropped(b, fullKey) < 100, 'route bust')
  const after = await b.app.inject('/page')
  t.equal(after.headers['x-cache'], 'MISS')
  t.same(after.json(), { page: pageVersion })
  await sleep(50)
  t.same((await a.app.inject('/page')).json(), { page: pageVersion }, 'a sees the new page too')
  t.equal(await a.cache.invalidateTags('pages'), 1, 'route tags')
  t.ok(await dropped(b, fullKey) < 100, 'route tags drop local copies')
})

t.test('the other methods go straight to Redis', async (t) => {
  const [a] = await pair(t)
  await a.cache.set('k', 'v', { ttl: 100 })
  t.equal(await a.cache.exists(['k', 'missing']), 1)
  t.equal(await a.cache.ttl('k'), 100)
  t.same(await a.cache.rateLimit('ip', { max: 5, window: 10 }), { limit: 5, remaining: 4, reset: 10 })
  t.equal(await a.cache.getOrSet('computed', () => 42), 42, 'with the cross-instance lock')
  t.equal(await a.cache.ping(), true)
  t.match(await a.cache.info(), { store: 'redis', redisVersion: /^\d/ })
  t.match(a.cache.getStatistics().local, { entries: Number, bytes: Number, maxEntries: 100, maxBytes: 64 * 1024 * 1024 })
})

t.test('variants of a route with vary are served from Redis, never kept locally', async (t) => {
  const [a, b] = await pair(t)
  const fullKey = a.cache.redisKey('/greeting')
  await b.cache.set('/greeting', 'a plain entry at the same key, held locally')
  t.ok(b.tiered.local.get(fullKey) !== undefined)
  await b.cache.delete('/greeting')
  for (const lang of ['en', 'fr']) {
    t.equal((await a.app.inject({ url: '/greeting', headers: { 'accept-language': lang } })).headers['x-cache'], 'MISS')
  }
  await until(async () => (await b.app.inject({ url: '/greeting', headers: { 'accept-language': 'fr' } })).headers['x-cache'] === 'HIT', 2000, 'a hit')
  const en = await b.app.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })
  t.equal(en.headers['x-cache'], 'HIT')
  t.same(en.json(), { lang: 'en' })
  t.equal(a.tiered.local.get(fullKey), undefined, 'the writer keeps no copy')
  t.equal(b.tiered.local.get(fullKey), undefined, 'nor does the reader')
})

t.test('a read that raced an invalidation is not kept locally', async (t) => {
  const [a, b] = await pair(t)
  await a.cache.set('k', 'v')
  const fullKey = b.cache.redisKey('k')
  const raw = rawClient(t, server.url)
  const inner = b.tiered.inner
  const get = inner.get.bind(inner)
  // The invalidation arrives while b's read is on its way back.
  inner.get = async (key) => {
    const bytes = await get(key)
    await raw.publish(`${a.cache.layout.prefix}:#invalidate`, JSON.stringify({ o: 'elsewhere', k: ['unrelated'] }))
    await sleep(50)
    return bytes
  }
  t.teardown(() => { inner.get = get })
  t.equal(await b.cache.get('k'), 'v')
  t.equal(b.tiered.local.get(fullKey), undefined, 'not kept')
  inner.get = get
  t.equal(await b.cache.get('k'), 'v')
  t.ok(b.tiered.local.get(fullKey) !== undefined, 'kept by the next read')
})

t.test('messages that are not ours flush the tier; messages of our own are ignored', async (t) => {
  const [a, b] = await pair(t)
  const raw = rawClient(t, server.url)
  const channel = `${a.cache.layout.prefix}:#invalidate`
  const fill = async (): Promise<void> => {
    await b.cache.set('x', 1)
    t.equal(b.tiered.local.describe().entries, 1)
  }
  await fill()
  await raw.publish(channel, 'not json')
  await until(() => b.tiered.local.describe().entries === 0, 1000, 'a flush on garbage')
  await fill()
  await raw.publish(channel, JSON.stringify({ o: 'elsewhere' }))
  await until(() => b.tiered.local.describe().entries === 0, 1000, 'a flush on a message naming nothing')
  await fill()
  await raw.publish(channel, JSON.stringify({ o: 'elsewhere', p: `${a.cache.layout.prefix}:default:` }))
  await until(() => b.tiered.local.describe().entries === 0, 1000, 'a prefix drop')
  // a's own messages (echoed back to it) leave a's local copies alone.
  await a.cache.set('own', 1)
  await sleep(50)
  t.ok(a.tiered.local.get(a.cache.redisKey('own')) !== undefined, 'a keeps what it just wrote')
})

t.test('the local tier is flushed when its subscription reconnects', async (t) => {
  const [a, b] = await pair(t)
  await b.cache.set('k', 'v')
  await a.cache.set('ka', 'v')
  t.equal(b.tiered.local.describe().entries, 1)
  t.equal(a.tiered.local.describe().entries, 1)
  // Drop every Pub/Sub connection: messages may be missed until they are back.
  await server.cli('client', 'kill', 'type', 'pubsub')
  await until(() => b.tiered.local.describe().entries === 0 && a.tiered.local.describe().entries === 0, 3000, 'the flush')
  t.equal(b.logs.find('local tier flushed').length, 1, 'logged')
  // Resubscribed: invalidations flow again.
  const prefix = a.cache.layout.prefix
  await until(async () => Number((await server.cli('pubsub', 'numsub', `${prefix}:#invalidate`)).split('\n')[1]) === 2, 3000, 'the resubscription')
  await held(b, () => b.cache.get('k'), b.cache.redisKey('k'))
  await a.cache.set('k', 'v2')
  t.ok(await dropped(b, b.cache.redisKey('k')) < 100)
  t.equal(await b.cache.get('k'), 'v2')
})

t.test('bounds: maxEntries, maxBytes, LRU order, evictions counted', async (t) => {
  const [a] = await pair(t, { local: { maxEntries: 3 } })
  const key = (i: number): string => a.cache.redisKey(`k${i}`)
  for (let i = 1; i <= 3; i++) await a.cache.set(`k${i}`, i)
  t.equal(a.tiered.local.describe().entries, 3)
  t.equal(await a.cache.get('k1'), 1, 'k1 becomes the most recently used')
  await a.cache.set('k4', 4)
  t.equal(a.tiered.local.describe().entries, 3)
  t.equal(a.tiered.local.get(key(2)), undefined, 'the least recently used (k2) went')
  t.ok(a.tiered.local.get(key(1)) !== undefined)
  t.equal(a.cache.getStatistics().evictions, 1)
  t.equal(await a.cache.get('k2'), 2, 'still in Redis')

  const stats = new Statistics()
  const codec = new Codec(undefined, { enabled: false, threshold: 1024, level: 6 })
  const entry = (size: number, ttl = 60): Buffer => codec.encode(Buffer.alloc(size, 'x'), KIND_VALUE, ttl, false).bytes
  // What one entry costs (its bytes plus a per-entry overhead) is the tier's business: measure it.
  const costOf = (key: string, bytes: Buffer): number => {
    const probe = new LocalTier({ maxEntries: 10, maxBytes: 1e9, ttl: 60 }, new Statistics())
    probe.set(key, bytes)
    return probe.bytes
  }
  const unit = costOf('a', entry(300))
  t.ok(unit > 300, `an entry of 300 bytes costs ${unit}`)
  const maxBytes = Math.floor(2.5 * unit)
  const tier = new LocalTier({ maxEntries: 1000, maxBytes, ttl: 60 }, stats)
  tier.set('a', entry(300))
  tier.set('b', entry(300))
  t.equal(tier.describe().entries, 2)
  t.equal(tier.bytes, 2 * unit)
  tier.set('c', entry(300))
  t.equal(tier.describe().entries, 2, 'the bytes bound evicts')
  t.equal(tier.get('a'), undefined, 'the oldest')
  t.equal(stats.evictions, 1)
  tier.set('huge', entry(3 * unit))
  t.equal(tier.get('huge'), undefined, 'an entry larger than the whole tier is not kept')
  t.equal(tier.describe().entries, 2, 'and evicts nothing')
  tier.set('foreign', Buffer.from('not an envelope'))
  t.equal(tier.get('foreign'), undefined, 'foreign bytes are not kept')
  tier.set('b', entry(100))
  t.equal(tier.describe().entries, 2, 'replacing an entry counts it once')
  t.equal(tier.bytes, costOf('b', entry(100)) + unit)
  tier.deletePrefix('c')
  t.equal(tier.describe().entries, 1)
  tier.clear()
  t.same(tier.describe(), { entries: 0, bytes: 0, maxEntries: 1000, maxBytes })
})

t.test('a value too big for the tier replaces the local copy of the old one', async (t) => {
  const [a, b] = await pair(t, { local: { maxEntries: 100, maxBytes: 4096 }, compression: false })
  await a.cache.set('k', 'small')
  t.equal(await a.cache.get('k'), 'small')
  const big = 'B'.repeat(8000)
  t.equal(await a.cache.set('k', big), true, 'stored in Redis')
  t.equal(await a.cache.get('k'), big, 'the writer reads the new value, not its old local copy')
  t.equal(await b.cache.get('k'), big)
})

t.test('local hits keep serving while Redis is down', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const prefix = uniquePrefix('down')
  const a = await instance(t, prefix, { commandTimeout: 200 }, own)
  await a.cache.set('k', { v: 1 })
  t.equal((await a.app.inject('/page')).headers['x-cache'], 'MISS')
  await sleep(20)
  t.equal((await a.app.inject('/page')).headers['x-cache'], 'HIT')
  await own.kill()
  await until(() => !a.cache.getStatistics().connected, 3000, 'the outage to be noticed')
  t.same(await a.cache.get('k'), { v: 1 }, 'getOrSet/get answer from the local tier')
  t.same(await a.cache.getOrSet('k', () => ({ v: 2 })), { v: 1 })
  const page = await a.app.inject('/page')
  t.equal(page.statusCode, 200)
  t.equal(page.headers['x-cache'], 'HIT', 'route hits too')
  t.equal(await a.cache.get('other'), null, 'what is not local is a miss')
  t.equal(await a.cache.set('k', { v: 3 }), false, 'writes fail')
  t.equal(await a.cache.delete('k'), 0)
  t.equal(a.tiered.local.get(a.cache.redisKey('k')), undefined, 'but a delete drops the local copy anyway')
  await own.restart()
  await until(() => a.cache.getStatistics().connected, 5000, 'the reconnect')
  // The subscription came back: the tier was flushed, as messages may have been missed.
  await until(() => a.logs.find('local tier flushed').length === 1, 3000, 'the flush')
  t.equal(a.tiered.local.describe().entries, 0)
})

t.test('a copy never outlives its entry\'s freshness nor the tier\'s ttl', async (t) => {
  const realNow = Date.now
  let offset = 0
  Date.now = () => realNow() + offset
  t.teardown(() => { Date.now = realNow })
  const [a] = await pair(t, { local: { ttl: 5 } })
  await a.cache.set('short', 's', { ttl: 2 })
  await a.cache.set('long', 'l', { ttl: 100 })
  t.ok(a.tiered.local.get(a.cache.redisKey('short')) !== undefined)
  offset += 2100
  t.equal(a.tiered.local.get(a.cache.redisKey('short')), undefined, 'gone with its entry\'s ttl')
  t.ok(a.tiered.local.get(a.cache.redisKey('long')) !== undefined)
  offset += 3000
  t.equal(a.tiered.local.get(a.cache.redisKey('long')), undefined, 'gone with the tier\'s ttl')
  t.equal(await a.cache.get('long'), 'l', 'and read again from Redis')
  t.ok(a.tiered.local.get(a.cache.redisKey('long')) !== undefined)
})

t.test('without Pub/Sub rights: warnings, and the cache still works', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  await own.cli('acl', 'setuser', 'default', 'resetchannels')
  const a = await (async () => {
    const logs = captureLogs()
    const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: { url: own.url }, prefix: uniquePrefix('acl'), routes: false, local: {} })
    await app.ready()
    return { app, cache: app.cache as CacheManager, logs }
  })()
  await until(() => a.logs.find('cannot subscribe').length === 1, 3000, 'the subscribe warning')
  t.equal(await a.cache.set('k', 'v'), true)
  await until(() => a.logs.find('cannot publish').length === 1, 3000, 'the publish warning')
  t.equal(await a.cache.get('k'), 'v')
})

t.test('the memory store has no local tier', async (t) => {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: false, routes: false, local: {} })
  await app.ready()
  t.equal(app.cache.getStatistics().local, null)
  t.equal(logs.find('the local tier is for Redis').length, 1)
})
