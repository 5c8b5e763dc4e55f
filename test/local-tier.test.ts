// The local tier against a real Redis: two instances stay coherent through Pub/Sub (every kind of
// change drops the other's copy; how fast is measured by `npm run chaos`), the tier is flushed when its subscription comes
// back, it is bounded (entries, bytes, LRU, evictions counted), it serves while Redis is down,
// and no copy outlives its entry's freshness or the tier's ttl.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { HEADER_BYTES, KIND_VALUE } from '../lib/envelope'
import { SegmentCache } from '../lib/local/segment-cache'
import { Codec } from '../lib/serializer'
import { Statistics } from '../lib/statistics'
import type { GuardedStore } from '../lib/stores/guarded'
import type { TieredStore } from '../lib/stores/tiered'
import type { CacheOptions } from '../types'
import { captureLogs, type Logs, rawClient, type Scope, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

interface Instance {
  app: FastifyInstance
  cache: CacheManager
  local: SegmentCache
  logs: Logs
}

async function instance (t: tap.Test, prefix: string, options: CacheOptions = {}, redis: RedisServer = server): Promise<Instance> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  // A generous command timeout: on a busy machine a round trip may take longer than the default,
  // and these tests are about what is read, not how fast (a test about timeouts sets its own).
  await app.register(fastifyRedisCache, { redis: { url: redis.url }, prefix, routes: false, local: { maxEntries: 100 }, commandTimeout: 30_000, ...options })
  app.get('/page', { config: { cache: { ttl: 60, namespace: 'pages', tags: ['pages'] } } }, async () => ({ page: pageVersion }))
  app.get('/greeting', { config: { cache: { ttl: 60, vary: ['accept-language'] } } }, async (request) => ({ lang: request.headers['accept-language'] ?? null }))
  app.post('/page', { config: { cache: { bust: { namespace: 'pages', keys: ['localhost:80/page'] } } } }, async () => {
    pageVersion++
    return { ok: true }
  })
  await app.ready()
  const cache = app.cache as CacheManager
  t.ok(cache.core.stack.local !== undefined && cache.core.stack.entries !== cache.core.stack.breaker, 'the local tier is in front of Redis')
  const local = cache.core.stack.local as SegmentCache
  // The subscription is made on its own connection once that is ready.
  await until(async () => {
    const subscribers = await redis.cli('pubsub', 'numsub', `${prefix}:#invalidate`)
    return Number(subscribers.split('\n')[1]) >= 1
  }, 3000, 'the invalidation subscription')
  // The tier keeps nothing until a heartbeat proves that invalidations arrive.
  await until(() => !local.bypassed, 30_000, 'the subscription to be proven')
  return { app, cache, local, logs }
}

let pageVersion = 1

/** Two instances with the local tier, sharing one prefix. */
async function pair (t: tap.Test, options: CacheOptions = {}): Promise<[Instance, Instance]> {
  const prefix = uniquePrefix('local')
  const a = await instance(t, prefix, options)
  const b = await instance(t, prefix, options)
  await until(async () => Number((await server.cli('pubsub', 'numsub', `${prefix}:#invalidate`)).split('\n')[1]) === 2, 30_000, 'both subscriptions')
  return [a, b]
}

/**
 * Reads until `inst` keeps a local copy: a read that overlaps an invalidation of its key (another
 * instance's write a moment ago, say) is deliberately not kept.
 */
async function held (inst: Instance, read: () => Promise<unknown>, fullKey: string): Promise<void> {
  await until(async () => {
    await read()
    return inst.local.get(fullKey) !== undefined
  }, 2000, `a local copy of ${fullKey}`)
}

/** Waits until `instance` holds no local copy of `fullKey` (how fast: `npm run chaos`). */
async function dropped (inst: Instance, fullKey: string): Promise<true> {
  await until(() => inst.local.get(fullKey) === undefined, 30_000, `the local copy of ${fullKey} to go`)
  return true
}

t.test('every change on one instance drops the other\'s local copy', async (t) => {
  const [a, b] = await pair(t)
  const warm = async (key: string, value: unknown, opts: { namespace?: string, tags?: string[] } = {}): Promise<string> => {
    // Written through b, so b holds it (a's own write would reach b as an invalidation). On a
    // busy machine a late heartbeat may have b bypass its tier for a moment: written again then.
    const fullKey = b.cache.redisKey(key, opts.namespace)
    await until(async () => {
      await b.cache.set(key, value, opts)
      return b.local.get(fullKey) !== undefined
    }, 30_000, `b to hold ${key}`)
    t.same(await a.cache.get(key, opts), value, 'a reads it')
    return fullKey
  }

  let fullKey = await warm('k', 'v1')
  const bytesRead = b.cache.getStatistics().bytesRead
  t.equal(await b.cache.get('k'), 'v1', 'a local hit')
  t.ok(b.cache.getStatistics().bytesRead > bytesRead, 'counted like any hit')
  await a.cache.set('k', 'v2')
  t.ok(await dropped(b, fullKey), 'set')
  t.equal(await b.cache.get('k'), 'v2', 'b reads the new value')

  await a.cache.delete('k')
  t.ok(await dropped(b, fullKey), 'delete')
  t.equal(await b.cache.get('k'), null)

  fullKey = await warm('e', 'v')
  await a.cache.expire('e', 100)
  t.ok(await dropped(b, fullKey), 'expire')

  fullKey = await warm('n', 'v', { namespace: 'ns1' })
  const other = await warm('n', 'v', { namespace: 'ns2' })
  await a.cache.clear('ns1')
  t.ok(await dropped(b, fullKey), 'clear(namespace)')
  t.ok(b.local.get(other) !== undefined, 'other namespaces stay')
  await a.cache.clear()
  t.ok(await dropped(b, other), 'clear()')

  fullKey = await warm('tagged', 'v', { tags: ['t1'] })
  t.equal(await a.cache.invalidateTags('t1'), 1)
  t.ok(await dropped(b, fullKey), 'invalidateTags')
  t.equal(await a.cache.invalidateTags('t1'), 0, 'nothing left to invalidate')

  // Route caching: a bust on one instance, a hit served locally on the other.
  t.equal((await b.app.inject('/page')).headers['x-cache'], 'MISS')
  fullKey = b.cache.redisKey('localhost:80/page', 'pages')
  await until(() => b.local.get(fullKey) !== undefined, 30_000, 'b to hold the page it stored')
  t.equal((await a.app.inject('/page')).headers['x-cache'], 'HIT')
  t.equal((await b.app.inject('/page')).headers['x-cache'], 'HIT', 'a local hit')
  await a.app.inject({ method: 'POST', url: '/page' })
  t.ok(await dropped(b, fullKey), 'route bust')
  const after = await b.app.inject('/page')
  t.equal(after.headers['x-cache'], 'MISS')
  t.same(after.json(), { page: pageVersion })
  await sleep(50)
  t.same((await a.app.inject('/page')).json(), { page: pageVersion }, 'a sees the new page too')
  t.equal(await a.cache.invalidateTags('pages'), 1, 'route tags')
  t.ok(await dropped(b, fullKey), 'route tags drop local copies')
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
  const fullKey = a.cache.redisKey('localhost:80/greeting')
  await b.cache.set('localhost:80/greeting', 'a plain entry at the same key, held locally')
  t.ok(b.local.get(fullKey) !== undefined)
  await b.cache.delete('localhost:80/greeting')
  for (const lang of ['en', 'fr']) {
    t.equal((await a.app.inject({ url: '/greeting', headers: { 'accept-language': lang } })).headers['x-cache'], 'MISS')
  }
  await until(async () => (await b.app.inject({ url: '/greeting', headers: { 'accept-language': 'fr' } })).headers['x-cache'] === 'HIT', 30_000, 'a hit')
  const en = await b.app.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })
  t.equal(en.headers['x-cache'], 'HIT')
  t.same(en.json(), { lang: 'en' })
  t.equal(a.local.get(fullKey), undefined, 'the writer keeps no copy')
  t.equal(b.local.get(fullKey), undefined, 'nor does the reader')
})

t.test('a read that raced an invalidation of its key is not kept locally; one of another key is', async (t) => {
  const [a, b] = await pair(t)
  await a.cache.set('k', 'v')
  const fullKey = b.cache.redisKey('k')
  const raw = rawClient(t, server.url)
  const channel = `${a.cache.core.layout.prefix}:#invalidate`
  const inner = b.cache.core.stack.breaker as GuardedStore
  const get = inner.get.bind(inner)
  t.teardown(() => { inner.get = get })
  /** b reads k while `message` arrives on the channel; returns whether b kept what it read. */
  const readDuring = async (message: string): Promise<boolean> => {
    b.local.clear()
    inner.get = async (key) => {
      const bytes = await get(key)
      await raw.publish(channel, message)
      await sleep(50)
      return bytes
    }
    t.equal(await b.cache.get('k'), 'v')
    inner.get = get
    return b.local.get(fullKey) !== undefined
  }
  t.equal(await readDuring(JSON.stringify({ origin: 'elsewhere', keys: [fullKey] })), false, 'its own key: not kept')
  t.equal(await readDuring(JSON.stringify({ origin: 'elsewhere', prefix: `${a.cache.core.layout.prefix}:default:` })), false, 'a prefix of its key: not kept')
  t.equal(await readDuring(JSON.stringify({ origin: 'elsewhere' })), false, 'a message naming nothing (a flush): not kept')
  t.equal(await readDuring('not json'), false, 'garbage (a flush): not kept')
  t.equal(await readDuring(JSON.stringify({ origin: 'elsewhere', keys: ['unrelated'] })), true, 'another key: kept')
  t.equal(await readDuring(JSON.stringify({ origin: 'elsewhere', prefix: `${a.cache.core.layout.prefix}:other:` })), true, 'another namespace: kept')
  t.equal(await b.cache.get('k'), 'v')
  t.ok(b.local.get(fullKey) !== undefined, 'kept by a read that raced nothing')
})

t.test('a read in flight when this instance changes its key is not kept locally', async (t) => {
  const [a] = await pair(t)
  const fullKey = a.cache.redisKey('k')
  const changes: Array<[string, () => Promise<unknown>]> = [
    ['delete', () => a.cache.delete('k')],
    ['expire', () => a.cache.expire('k', 30)],
    ['clear', () => a.cache.clear()],
    ['clear of its namespace', () => a.cache.clear('default')],
    ['set', () => a.cache.set('k', 'v2')]
  ]
  for (const [what, change] of changes) {
    await a.cache.set('k', 'v')
    a.local.clear()
    // The GET is on the wire (the store sends a turn's reads from setImmediate) and its reply,
    // the old value, is still to come when the change starts.
    const read = a.cache.get('k')
    await new Promise((resolve) => setImmediate(resolve))
    await Promise.all([read, change()])
    const local = a.local.get(fullKey)
    if (what === 'set') t.same(local === undefined ? undefined : a.cache.core.codec.decodeValue(local).value, 'v2', `${what}: the local copy is the new value`)
    else t.equal(local, undefined, `${what}: no local copy of the old value`)
  }
})

t.test('messages that are not ours flush the tier; messages of our own are ignored', async (t) => {
  const [a, b] = await pair(t)
  const raw = rawClient(t, server.url)
  const channel = `${a.cache.core.layout.prefix}:#invalidate`
  const fill = async (): Promise<void> => {
    await b.cache.set('x', 1)
    t.equal(b.local.describe().entries, 1)
  }
  await fill()
  await raw.publish(channel, 'not json')
  await until(() => b.local.describe().entries === 0, 30_000, 'a flush on garbage')
  await fill()
  await raw.publish(channel, JSON.stringify({ origin: 'elsewhere' }))
  await until(() => b.local.describe().entries === 0, 30_000, 'a flush on a message naming nothing')
  await fill()
  await raw.publish(channel, JSON.stringify({ origin: 'elsewhere', prefix: `${a.cache.core.layout.prefix}:default:` }))
  await until(() => b.local.describe().entries === 0, 30_000, 'a prefix drop')
  // a's own messages (echoed back to it) leave a's local copies alone.
  await a.cache.set('own', 1)
  await sleep(50)
  t.ok(a.local.get(a.cache.redisKey('own')) !== undefined, 'a keeps what it just wrote')
})

t.test('the local tier is flushed when its subscription reconnects', async (t) => {
  const [a, b] = await pair(t)
  await b.cache.set('k', 'v')
  await a.cache.set('ka', 'v')
  t.equal(b.local.describe().entries, 1)
  t.equal(a.local.describe().entries, 1)
  // Drop every Pub/Sub connection: messages may be missed until they are back.
  await server.cli('client', 'kill', 'type', 'pubsub')
  await until(() => b.local.describe().entries === 0 && a.local.describe().entries === 0, 30_000, 'the flush')
  t.equal(b.logs.find('local tier flushed').length, 1, 'logged')
  // Resubscribed: invalidations flow again.
  const prefix = a.cache.core.layout.prefix
  await until(async () => Number((await server.cli('pubsub', 'numsub', `${prefix}:#invalidate`)).split('\n')[1]) === 2, 30_000, 'the resubscription')
  await held(b, () => b.cache.get('k'), b.cache.redisKey('k'))
  await a.cache.set('k', 'v2')
  t.ok(await dropped(b, b.cache.redisKey('k')), 'dropped after the resubscription')
  t.equal(await b.cache.get('k'), 'v2')
})

t.test('bounds through the cache: maxEntries, LRU order, evictions counted', async (t) => {
  const [a] = await pair(t, { local: { maxEntries: 3 } })
  const key = (i: number): string => a.cache.redisKey(`k${i}`)
  for (let i = 1; i <= 3; i++) await a.cache.set(`k${i}`, i)
  t.equal(a.local.describe().entries, 3)
  t.equal(await a.cache.get('k1'), 1, 'k1 becomes the most recently used')
  await a.cache.set('k4', 4)
  t.equal(a.local.describe().entries, 3)
  t.equal(a.local.get(key(2)), undefined, 'the least recently used (k2) went')
  t.ok(a.local.get(key(1)) !== undefined)
  t.equal(a.cache.getStatistics().evictions, 1)
  t.equal(await a.cache.get('k2'), 2, 'still in Redis')
})

// The SegmentCache itself: a log of segments with CLOCK eviction.

const codec = new Codec(undefined, { enabled: false, threshold: 1024, level: 6 })

// One time of storing for the envelopes below, so that equal arguments make equal bytes.
const STORED_AT = Date.now()

/** An envelope of exactly `size` bytes, its payload made of `fill`. */
function envelope (size: number, fill = 'x', ttl = 60, storedAt = STORED_AT): Buffer {
  return codec.encode(Buffer.alloc(size - HEADER_BYTES, fill), KIND_VALUE, ttl, false, undefined, storedAt).bytes
}

function tierOf (maxBytes: number, maxEntries = 1_000_000, ttl = 60): { tier: SegmentCache, stats: Statistics } {
  const stats = new Statistics()
  return { tier: new SegmentCache({ maxEntries, maxBytes, ttl }, stats), stats }
}

/** What an entry's objects are counted at beside its bytes: read off a tier holding it alone. */
function overhead (key: string): number {
  const { tier } = tierOf(1e9)
  tier.set(key, envelope(100))
  return tier.bytes - tier.segments * tier.segmentSize
}

const MiB = 1024 * 1024
const KiB = 1024

t.test('SegmentCache: segments are sized from maxBytes', async (t) => {
  t.equal(tierOf(64 * MiB).tier.segmentSize, 2 * MiB, 'a 32nd of maxBytes')
  t.equal(tierOf(1024 * MiB).tier.segmentSize, 4 * MiB, 'at most 4 MiB')
  t.equal(tierOf(1 * MiB).tier.segmentSize, 64 * KiB, 'at least 64 KiB')
  t.equal(tierOf(256 * KiB).tier.segmentSize, 32 * KiB, 'but at most an eighth of a small tier')
  t.equal(tierOf(4).tier.segmentSize, 1, 'and at least a byte')
  const { tier } = tierOf(4)
  tier.set('k', envelope(20))
  t.equal(tier.describe().entries, 0, 'a tier too small for anything keeps nothing')
})

t.test('SegmentCache: a copy in a segment, the same Buffer on every hit', async (t) => {
  const { tier } = tierOf(1 * MiB)
  const bytes = envelope(400, 'a')
  tier.set('a', bytes)
  const view = tier.get('a')
  t.ok(view !== undefined && view.equals(bytes), 'the bytes come back')
  t.not(view, bytes, 'a copy, not the caller\'s buffer')
  t.equal(view?.buffer.byteLength, tier.segmentSize, 'a view of a segment')
  t.equal(tier.get('a'), view, 'the same object on the next hit')
  bytes.fill(0)
  t.equal(tier.get('a')?.[0], 0xc7, 'unaffected by changes to the caller\'s buffer')
  t.equal(tier.get('missing'), undefined)
  tier.delete('missing')
  t.equal(tier.bytes, tier.segmentSize + overhead('a'), 'a whole segment counted, plus the entry')
  tier.set('foreign', Buffer.from('not an envelope'))
  t.equal(tier.get('foreign'), undefined, 'foreign bytes are not kept')
  tier.set('a', envelope(100, 'b'))
  t.equal(tier.describe().entries, 1, 'replacing an entry counts it once')
  t.equal(tier.get('a')?.length, 100)
  t.equal(tier.bytes, tier.segmentSize + overhead('a'))
})

t.test('SegmentCache: maxEntries, with exact evictions and second chances', async (t) => {
  const { tier, stats } = tierOf(64 * MiB, 3)
  for (const key of ['a', 'b', 'c', 'd']) tier.set(key, envelope(100, key))
  t.equal(tier.describe().entries, 3)
  t.equal(stats.evictions, 1)
  t.equal(tier.get('a'), undefined, 'the oldest went')

  // b is hit: spared once (copied forward), so c goes when e comes.
  const hit = tier.get('b')
  tier.set('e', envelope(100, 'e'))
  t.equal(stats.evictions, 2)
  t.equal(tier.get('c'), undefined, 'the oldest unhit entry went')
  const moved = tier.get('b')
  t.ok(moved?.equals(envelope(100, 'b')), 'the spared entry keeps its bytes')
  t.not(moved, hit, 'in a new view, at the end of the log')
  t.ok(hit?.equals(envelope(100, 'b')), 'while the old view still holds them')
  // Marked again by that get; d is the oldest, unmarked.
  tier.set('f', envelope(100, 'f'))
  t.equal(tier.get('d'), undefined)
  t.same(['b', 'e', 'f'].map((key) => tier.get(key)?.length), [100, 100, 100])
  t.equal(stats.evictions, 3)

  // All marked: a whole pass clears their marks, and the first unmarked one is the newest.
  tier.set('g', envelope(100, 'g'))
  t.equal(stats.evictions, 4)
  t.equal(tier.describe().entries, 3)
  t.equal(tier.get('g'), undefined, 'g went')
  tier.set('h', envelope(100, 'h'))
  t.equal(tier.get('e'), undefined, 'then e, the oldest, no longer marked')
  t.equal(stats.evictions, 5)
})

t.test('SegmentCache: maxBytes counts segments whole, and evicts by it', async (t) => {
  // Entries larger than a segment each get a segment of their own size, and no segment is
  // being filled: exactly their bytes plus their objects count.
  const maxBytes = 1 * MiB
  const { tier, stats } = tierOf(maxBytes)
  const size = 100 * KiB
  const each = size + overhead('b00')
  const fit = Math.floor(maxBytes / each)
  for (let i = 0; i < fit + 2; i++) tier.set(`b${String(i).padStart(2, '0')}`, envelope(size, String(i % 10)))
  t.equal(tier.describe().entries, fit)
  t.equal(tier.segments, fit)
  t.equal(tier.bytes, fit * each)
  t.equal(stats.evictions, 2)
  t.equal(tier.get('b00'), undefined)
  t.equal(tier.get('b01'), undefined)
  t.ok(tier.get('b02')?.equals(envelope(size, '2')))
  t.equal(tier.get('b02')?.buffer.byteLength, size, 'a segment of its own exact size')

  // Small entries share segments: 64 of 1 KiB in each 64 KiB one.
  const small = tierOf(maxBytes)
  const cost = overhead('s000')
  const sets = 2000
  let worst = 0
  for (let i = 0; i < sets; i++) {
    small.tier.set(`s${String(i).padStart(3, '0')}`.slice(-4), envelope(1024))
    worst = Math.max(worst, small.tier.bytes)
  }
  const held = small.tier.describe().entries
  t.ok(worst <= maxBytes, `never over maxBytes (at most ${worst})`)
  t.equal(small.stats.evictions + held, sets, 'every entry not held was evicted, counted')
  t.ok(held * (1024 + cost) >= maxBytes - 3 * small.tier.segmentSize, `as many as fit (${held})`)
  t.equal(small.tier.bytes, small.tier.segments * small.tier.segmentSize + held * cost, 'segments and entries, nothing else')
  const keys = Array.from({ length: sets }, (_, i) => `s${String(i).padStart(3, '0')}`.slice(-4))
  t.same(keys.slice(-held).filter((key) => small.tier.get(key) === undefined), [], 'the newest are held')
})

t.test('SegmentCache: entries larger than a segment', async (t) => {
  const maxBytes = 1 * MiB
  const { tier, stats } = tierOf(maxBytes, 2)
  const largest = maxBytes - 2 * tier.segmentSize - overhead('big')
  tier.set('big', envelope(largest + 1))
  t.equal(tier.get('big'), undefined, 'one that could not fit beside the segments is not kept')
  t.equal(tier.segments, 0, 'and takes no segment')
  tier.set('big', envelope(largest, 'B'))
  const view = tier.get('big')
  t.ok(view?.equals(envelope(largest, 'B')), 'the largest that fits is kept')
  t.equal(tier.segments, 1)

  // Hit, so spared: kept where it is (a copy would only take another slab of its size).
  tier.set('s1', envelope(100))
  t.ok(tier.bytes <= maxBytes)
  tier.set('s2', envelope(100))
  t.equal(stats.evictions, 1)
  t.equal(tier.get('s1'), undefined, 's1 went instead')
  t.equal(tier.get('big'), view, 'big was not copied')
  t.ok(tier.bytes <= maxBytes)

  // Deleted, its segment is released, never kept as the spare.
  const segments = tier.segments
  tier.delete('big')
  t.equal(tier.segments, segments - 1)
  t.equal(tier.bytes, tier.segments * tier.segmentSize + overhead('s2'))
  t.ok(view?.equals(envelope(largest, 'B')), 'a view handed out still holds its bytes')
})

t.test('SegmentCache: no region that was handed out is ever written again', async (t) => {
  const { tier } = tierOf(1 * MiB)
  tier.set('a', envelope(400, 'a'))
  const first = tier.get('a')
  tier.set('a', envelope(400, 'b'))
  const second = tier.get('a')
  tier.set('e', envelope(3000, 'e'))
  const evicted = tier.get('e')
  tier.delete('a')
  // Thousands of later entries: every earlier segment is evicted, emptied and released many
  // times over, and the unread ones are written again.
  for (let i = 0; i < 5000; i++) tier.set(`z${i}`, envelope(200 + (i % 7) * 100, 'z'))
  t.equal(tier.get('e'), undefined, 'e was evicted')
  t.ok(first?.equals(envelope(400, 'a')), 'the view of an overwritten entry')
  t.ok(second?.equals(envelope(400, 'b')), 'the view of a deleted entry')
  t.ok(evicted?.equals(envelope(3000, 'e')), 'the view of an evicted entry')
})

t.test('SegmentCache: segments are released when empty; unread ones are written again', async (t) => {
  const { tier } = tierOf(1 * MiB)
  const cost = overhead('x000')
  const perSegment = tier.segmentSize / 1024
  const fill = (prefix: string, count: number): string[] => {
    const keys = Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(3, '0')}`)
    for (const key of keys) tier.set(key, envelope(1024))
    return keys
  }

  // Read (so views may be held): released to the GC.
  const read = fill('r', perSegment * 2 + perSegment / 2)
  for (const key of read) tier.get(key)
  t.equal(tier.segments, 3)
  for (const key of read.slice(0, perSegment)) tier.delete(key)
  t.equal(tier.segments, 2, 'the first, emptied, is released')
  t.equal(tier.bytes, 2 * tier.segmentSize + (read.length - perSegment) * cost)
  tier.deletePrefix('r')
  t.equal(tier.segments, 1, 'the one being filled stays')
  t.equal(tier.bytes, tier.segmentSize)
  t.equal(tier.describe().entries, 0)
  // The one being filled, emptied, then full: released when the next one starts.
  const rest = fill('q', perSegment / 2)
  for (const key of rest) tier.get(key)
  tier.deletePrefix('q')
  fill('p', 1)
  t.equal(tier.segments, 1, 'the read one was released, a new one started')
  tier.clear()

  // Never read: the first emptied segment is kept as the spare and becomes the next one.
  const unread = fill('u', perSegment * 3 + 1)
  t.equal(tier.segments, 4)
  for (const key of unread.slice(0, perSegment * 2)) tier.delete(key)
  t.equal(tier.segments, 3, 'two emptied: one kept as the spare, the other released')
  t.equal(tier.bytes, 3 * tier.segmentSize + (perSegment + 1) * cost)
  fill('v', perSegment)
  t.equal(tier.segments, 3, 'the spare was written again instead of a new segment')
  // The one being filled, emptied and never read, then full: it is its own next segment.
  tier.clear()
  fill('w', perSegment)
  tier.deletePrefix('w')
  fill('y', 1)
  t.equal(tier.segments, 1)
  t.equal(tier.bytes, tier.segmentSize + cost)
  t.ok(tier.get('y000')?.equals(envelope(1024)))
})

t.test('SegmentCache: random use never breaks the bounds nor returns wrong bytes', async (t) => {
  // A small deterministic generator (mulberry32), so a failure can be replayed.
  let seed = 0x5eed
  const random = (): number => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  const maxBytes = 512 * KiB
  const maxEntries = 300
  const { tier } = tierOf(maxBytes, maxEntries)
  const expected = new Map<string, Buffer>()
  let over = 0
  let wrong = 0
  let hits = 0
  for (let i = 0; i < 20_000; i++) {
    const key = `key${Math.floor(random() * 600)}`
    const roll = random()
    if (roll < 0.5) {
      // Mostly small, now and then larger than a segment (32 KiB here).
      const size = random() < 0.02 ? 40 * KiB + Math.floor(random() * 60 * KiB) : 20 + Math.floor(random() * 3000)
      const bytes = envelope(size, String.fromCharCode(97 + (i % 26)))
      tier.set(key, bytes)
      expected.set(key, bytes)
    } else if (roll < 0.9) {
      const bytes = tier.get(key)
      if (bytes !== undefined) {
        hits++
        if (!bytes.equals(expected.get(key) as Buffer)) wrong++
      }
    } else if (roll < 0.98) {
      tier.delete(key)
    } else {
      tier.deletePrefix(`key${Math.floor(random() * 60)}`)
    }
    if (tier.bytes > maxBytes || tier.describe().entries > maxEntries) over++
  }
  t.equal(over, 0, 'within maxBytes and maxEntries after every operation')
  t.equal(wrong, 0, `every hit (${hits}) returned the bytes last set`)
  t.ok(hits > 1000, 'and there were hits')
  tier.clear()
  t.same(tier.describe(), { entries: 0, bytes: 0, maxEntries, maxBytes })
  t.equal(tier.segments, 0)
})

t.test('SegmentCache: clear and deletePrefix', async (t) => {
  const { tier } = tierOf(1 * MiB)
  for (const key of ['p:a', 'p:b', 'q:a']) tier.set(key, envelope(300, key[0]))
  const held = tier.get('p:a')
  tier.deletePrefix('p:')
  t.equal(tier.describe().entries, 1)
  t.equal(tier.get('p:b'), undefined)
  t.ok(tier.get('q:a') !== undefined)
  tier.clear()
  t.same(tier.describe(), { entries: 0, bytes: 0, maxEntries: 1_000_000, maxBytes: 1 * MiB })
  t.equal(tier.segments, 0, 'segments too')
  t.ok(held?.equals(envelope(300, 'p')), 'views handed out keep their bytes')
  tier.set('again', envelope(300))
  t.equal(tier.bytes, tier.segmentSize + overhead('again'), 'and it starts over')
})

/** Moves Date.now forward by hand, from the real time (busts still see milliseconds pass). */
function shiftedClock (t: Scope): (ms: number) => void {
  const realNow = Date.now
  let offset = 0
  Date.now = () => realNow() + offset
  t.teardown(() => { Date.now = realNow })
  return (ms) => { offset += ms }
}

t.test('SegmentCache: entries expire with their freshness or the tier\'s ttl; expired ones are not evictions', async (t) => {
  const shift = shiftedClock(t)
  const { tier, stats } = tierOf(1 * MiB, 2, 5)
  tier.set('short', envelope(100, 's', 1, Date.now()))
  tier.set('long', envelope(100, 'l', 60, Date.now()))
  shift(1100)
  t.equal(tier.get('short'), undefined, 'gone with its own freshness')
  t.equal(tier.describe().entries, 1)
  t.equal(tier.bytes, tier.segmentSize + overhead('long'))
  shift(4000)
  t.equal(tier.get('long'), undefined, 'gone with the tier\'s ttl')

  // Expired at the head of the queue, even hit before: dropped, not spared, not counted.
  tier.set('a', envelope(100, 'a', 1, Date.now()))
  tier.set('b', envelope(100, 'b', 60))
  t.ok(tier.get('a') !== undefined)
  t.ok(tier.get('b') !== undefined)
  shift(1500)
  tier.set('c', envelope(100, 'c', 60))
  t.equal(stats.evictions, 0)
  t.equal(tier.describe().entries, 2)
  tier.set('d', envelope(100, 'd', 60))
  t.equal(stats.evictions, 1, 'b, hit, was spared; c was not')
  t.equal(tier.get('c'), undefined)
  t.ok(tier.get('b') !== undefined && tier.get('d') !== undefined)
})

t.test('SegmentCache: renew keeps a copy of the very same bytes longer, and only that', async (t) => {
  const shift = shiftedClock(t)
  const { tier } = tierOf(1 * MiB, 10, 10)
  const bytes = envelope(100, 'a', 600, Date.now())
  tier.set('k', bytes)
  const copy = tier.get('k')
  const leaves = tier.expiresAt('k') as number
  shift(5000)
  t.equal(tier.renew('k', envelope(100, 'b', 600, Date.now())), false, 'other bytes: not renewed')
  t.equal(tier.expiresAt('k'), leaves)
  t.equal(tier.renew('missing', bytes), false, 'no copy: nothing to renew')
  t.equal(tier.renew('k', Buffer.from(bytes)), true, 'the same bytes, read again')
  t.ok((tier.expiresAt('k') as number) > leaves, 'kept as if made now')
  t.equal(tier.get('k'), copy, 'the same copy')
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
  await until(() => !a.cache.getStatistics().connected, 30_000, 'the outage to be noticed')
  t.same(await a.cache.get('k'), { v: 1 }, 'getOrSet/get answer from the local tier')
  t.same(await a.cache.getOrSet('k', () => ({ v: 2 })), { v: 1 })
  const page = await a.app.inject('/page')
  t.equal(page.statusCode, 200)
  t.equal(page.headers['x-cache'], 'HIT', 'route hits too')
  t.equal(await a.cache.get('other'), null, 'what is not local is a miss')
  t.equal(await a.cache.set('k', { v: 3 }), false, 'writes fail')
  t.equal(await a.cache.delete('k'), 0)
  t.equal(a.local.get(a.cache.redisKey('k')), undefined, 'but a delete drops the local copy anyway')
  await own.restart()
  await until(() => a.cache.getStatistics().connected, 30_000, 'the reconnect')
  // The subscription came back: the tier was flushed, as messages may have been missed.
  await until(() => a.logs.find('local tier flushed').length === 1, 30_000, 'the flush')
  t.equal(a.local.describe().entries, 0)
})

t.test('a copy never outlives its entry\'s freshness nor the tier\'s ttl', async (t) => {
  const shift = shiftedClock(t)
  const [a] = await pair(t, { local: { ttl: 5 } })
  await a.cache.set('short', 's', { ttl: 2 })
  await a.cache.set('long', 'l', { ttl: 100 })
  t.ok(a.local.get(a.cache.redisKey('short')) !== undefined)
  shift(2100)
  t.equal(a.local.get(a.cache.redisKey('short')), undefined, 'gone with its entry\'s ttl')
  t.ok(a.local.get(a.cache.redisKey('long')) !== undefined)
  shift(3000)
  t.equal(a.local.get(a.cache.redisKey('long')), undefined, 'gone with the tier\'s ttl')
  t.equal(await a.cache.get('long'), 'l', 'and read again from Redis')
  t.ok(a.local.get(a.cache.redisKey('long')) !== undefined)
})

t.test('copies made together leave the tier over the last tenth of its ttl, not at once', async (t) => {
  const shift = shiftedClock(t)
  const [a] = await pair(t, { local: { ttl: 100 } })
  const keys = Array.from({ length: 100 }, (_, i) => `spread${i}`)
  for (const key of keys) await a.cache.set(key, 'v', { ttl: 1000 })
  const held = (): number => keys.filter((key) => a.local.get(a.cache.redisKey(key)) !== undefined).length
  // Well inside nine tenths, however long the writes above took on a busy machine.
  shift(85_000)
  t.equal(held(), 100, 'all of them until nine tenths of the ttl')
  shift(10_000)
  const left = held()
  t.ok(left > 0 && left < 100, `some of them at 95% (${left} of 100)`)
  shift(5100)
  t.equal(held(), 0, 'none past the ttl')
})

t.test('a copy hit near its end is read again from Redis in the background, and stays', async (t) => {
  const shift = shiftedClock(t)
  const [a] = await pair(t, { local: { ttl: 100 } })
  const tiered = a.cache.core.stack.entries as TieredStore
  const [hot, cold, brief] = ['hot', 'cold', 'brief'].map((name) => a.cache.redisKey(name))
  await until(async () => {
    await a.cache.set('hot', 'v', { ttl: 1000 })
    await a.cache.set('cold', 'c', { ttl: 1000 })
    await a.cache.set('brief', 'b', { ttl: 70 })
    return [hot, cold, brief].every((key) => a.local.get(key) !== undefined)
  }, 30_000, 'a to hold them')
  const leaves = a.local.expiresAt(hot) as number
  // Copies leave 90 to 100 s from now (the spread), the brief one with its entry at 70 s. The
  // last fifth of the tier's ttl begins 20 s before a copy leaves.
  shift(60_000)
  t.equal(await a.cache.get('hot'), 'v')
  t.equal(await a.cache.get('brief'), 'b')
  t.same([...tiered.refreshing], [], 'neither read again: too early for one, the other leaves with its entry')
  shift(25_000)
  const copy = a.local.get(hot)
  t.equal(await a.cache.get('hot'), 'v', 'a local hit')
  t.ok(tiered.refreshing.has(hot), 'read again from Redis')
  await until(() => !tiered.refreshing.has(hot), 5000, 'the read to land')
  t.ok((a.local.expiresAt(hot) as number) > leaves, 'kept as if made now')
  shift(20_000)
  t.equal(a.local.get(cold), undefined, 'a copy nobody read left with the ttl')
  t.equal(a.local.get(hot), copy, 'the hot copy stayed: the same bytes, not copied again')
  t.equal(await a.cache.get('hot'), 'v')
})

t.test('route hits and getOrSet hits read their copies again too', async (t) => {
  const shift = shiftedClock(t)
  const [a] = await pair(t, { local: { ttl: 50 } })
  const tiered = a.cache.core.stack.entries as TieredStore
  const page = a.cache.redisKey('localhost:80/page', 'pages')
  const value = a.cache.redisKey('g')
  await until(async () => {
    await a.app.inject('/page')
    await a.cache.getOrSet('g', () => 'v', { ttl: 1000 })
    return a.local.get(page) !== undefined && a.local.get(value) !== undefined
  }, 30_000, 'a to hold both')
  // Copies leave 45 to 50 s from now, the page's entry only at 60 s: the tier's ttl decides. The
  // last fifth of that ttl begins 10 s before a copy leaves: at 41 s every copy is in it, with 4 s
  // to spare for the time the requests below take.
  const leaves = [page, value].map((key) => a.local.expiresAt(key) as number)
  // Hits that find what they need at hand (the decoded entry, the tag's stamp) take the
  // synchronous path, which never reaches the tiered store's get.
  for (let i = 0; i < 2; i++) {
    await a.app.inject('/page')
    await a.cache.getOrSet('g', () => 'other', { ttl: 1000 })
  }
  shift(41_000)
  t.equal((await a.app.inject('/page')).headers['x-cache'], 'HIT')
  t.equal(await a.cache.getOrSet('g', () => 'other', { ttl: 1000 }), 'v')
  await until(() => tiered.refreshing.size === 0, 5000, 'the reads to land')
  t.ok((a.local.expiresAt(page) as number) > leaves[0], 'a route hit read its copy again')
  t.ok((a.local.expiresAt(value) as number) > leaves[1], 'a getOrSet hit too')
  shift(10_000)
  t.ok(a.local.get(page) !== undefined && a.local.get(value) !== undefined, 'both stayed')
})

t.test('a copy read again finds what Redis has now; one that an invalidation overtook does not land', async (t) => {
  const shift = shiftedClock(t)
  const [a] = await pair(t, { local: { ttl: 100 } })
  const raw = rawClient(t, server.url)
  const tiered = a.cache.core.stack.entries as TieredStore
  const names = ['gone', 'changed', 'raced']
  const [gone, changed, raced] = names.map((name) => a.cache.redisKey(name))
  await until(async () => {
    for (const name of names) await a.cache.set(name, 'v1', { ttl: 1000 })
    return [gone, changed, raced].every((key) => a.local.get(key) !== undefined)
  }, 30_000, 'a to hold them')
  // Changed behind the tier's back, as when the message of a change was lost.
  await a.cache.set('source', 'v2', { ttl: 1000 })
  await raw.set(changed, await raw.getBuffer(a.cache.redisKey('source')) as Buffer)
  await raw.del(gone)
  shift(85_000)
  for (const key of [gone, changed]) t.ok(await tiered.get(key) !== null, 'served from the copy once more')
  await until(() => tiered.refreshing.size === 0, 5000, 'the reads to land')
  t.equal(a.local.get(gone), undefined, 'the copy of an entry Redis no longer has went')
  t.equal(await a.cache.get('gone'), null)
  t.equal(await a.cache.get('changed'), 'v2', 'the copy of a changed entry was replaced')

  // The read goes out with the hit; the invalidation comes before its answer.
  t.ok(await tiered.get(raced) !== null)
  tiered.dropKeys([raced])
  await until(() => tiered.refreshing.size === 0, 5000, 'the read to land')
  t.equal(await raw.exists(raced), 1, 'Redis still has the entry the read brought back')
  t.equal(a.local.get(raced), undefined, 'not kept: an invalidation overtook the read')
})

t.test('a copy whose read again fails stays until it leaves; none is tried with Redis down', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const shift = shiftedClock(t)
  // Heartbeats far apart: the pause below must not get the tier bypassed (and emptied) first.
  const a = await instance(t, uniquePrefix('refresh-fail'), { commandTimeout: 200, local: { maxEntries: 100, ttl: 100, heartbeat: 10_000 } }, own)
  const tiered = a.cache.core.stack.entries as TieredStore
  const key = a.cache.redisKey('k')
  await until(async () => {
    await a.cache.set('k', 'v', { ttl: 1000 })
    return a.local.get(key) !== undefined
  }, 30_000, 'a to hold k')
  const leaves = a.local.expiresAt(key) as number
  shift(leaves - Date.now() - 5000)
  own.pause()
  t.equal(await a.cache.get('k'), 'v', 'a local hit')
  t.ok(tiered.refreshing.has(key), 'read again')
  await until(() => !tiered.refreshing.has(key), 5000, 'the read to fail')
  t.equal(a.local.expiresAt(key), leaves, 'the copy stays, no longer than it would have')
  own.resume()
  await own.kill()
  await until(() => !a.cache.getStatistics().connected, 30_000, 'the outage to be noticed')
  t.equal(await a.cache.get('k'), 'v', 'still a local hit')
  t.notOk(tiered.refreshing.has(key), 'not read again while Redis is down')
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
  await until(() => a.logs.find('cannot subscribe').length === 1, 30_000, 'the subscribe warning')
  t.equal(await a.cache.set('k', 'v'), true)
  await until(() => a.logs.find('cannot publish').length === 1, 30_000, 'the publish warning')
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
