// Every `fastify.cache` method of API.md, run as one table against the Redis store and the
// memory store, plus what only Redis can show (raw keys, foreign keys, persisted keys).
import t from 'tap'
import { build, rawClient, sleep, uniquePrefix, type Built, type Scope } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import { CacheKeyError, RateLimitError } from '../lib/errors'
import type { CacheOptions } from '../types'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(async () => { await server?.stop() })

type Kind = 'redis' | 'memory'

function make (t: Scope, kind: Kind, options: CacheOptions = {}): Promise<Built> {
  return build(t, { redis: kind === 'redis' ? { url: server.url } : false, prefix: uniquePrefix(), ...options })
}

const BAD_KEYS: Array<[string, unknown]> = [
  ['empty', ''],
  ['a number', 5],
  ['null', null],
  ['undefined', undefined],
  ['an object', {}],
  ['over 1024 bytes of ASCII', 'a'.repeat(1025)],
  ['over 1024 bytes of UTF-8', '€'.repeat(342)]
]
const BAD_NAMESPACES: Array<[string, unknown]> = [
  ['empty', ''],
  ['a space', 'a b'],
  ['a colon', 'a:b'],
  ['a glob', 'a*'],
  ['a question mark', 'a?'],
  ['a bracket', '[ab]'],
  ['a hash', '#tag'],
  ['too long', 'n'.repeat(129)],
  ['a number', 5]
]
const BAD_TTLS: unknown[] = [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '10', null]

for (const kind of ['redis', 'memory'] as const) {
  t.test(`${kind} store`, async (t) => {
    t.test('set and get round-trip JSON values', async (t) => {
      const { cache } = await make(t, kind)
      const values: unknown[] = ['text', '', 0, 42.5, -1, true, false, null, [], [1, 'two', { three: 3 }], { nested: { deep: [null, 'ü€😀'] } }]
      for (const [i, value] of values.entries()) {
        t.equal(await cache.set(`k${i}`, value), true, `set ${JSON.stringify(value)}`)
        t.same(await cache.get(`k${i}`), value, `get ${JSON.stringify(value)}`)
      }
      t.equal(await cache.get('missing'), null, 'a miss is null')
      t.equal(await cache.set('k0', 'overwritten'), true)
      t.equal(await cache.get<string>('k0'), 'overwritten')
      const date = new Date(0)
      await cache.set('date', { date })
      t.same(await cache.get('date'), { date: '1970-01-01T00:00:00.000Z' }, 'JSON semantics')
    })

    t.test('undefined is never stored', async (t) => {
      const { cache } = await make(t, kind)
      t.equal(await cache.set('u', undefined), false)
      t.equal(await cache.exists('u'), 0)
      t.equal(cache.getStatistics().sets, 0)
    })

    t.test('keys are used literally, up to 1024 bytes', async (t) => {
      const { cache } = await make(t, kind)
      const keys = ['*', 'a*', 'a?', '[ab]', 'ab', 'x:y', 'with space', '\\', 'ü€😀', 'a'.repeat(1024), '€'.repeat(341)]
      for (const key of keys) t.equal(await cache.set(key, key), true, `set ${key.slice(0, 20)}`)
      for (const key of keys) t.equal(await cache.get(key), key, `get ${key.slice(0, 20)}`)
      t.equal(await cache.delete('*'), 1, 'deleting * deletes only the key *')
      t.equal(await cache.exists(keys), keys.length - 1)
      t.equal(await cache.delete('a?'), 1)
      t.equal(await cache.get('ab'), 'ab')
    })

    t.test('namespaces keep entries apart', async (t) => {
      const { cache } = await make(t, kind)
      const prefix = cache.core.layout.prefix
      t.equal(cache.redisKey('k'), `${prefix}:default:k`)
      t.equal(cache.redisKey('k', 'users'), `${prefix}:users:k`)
      await cache.set('k', 'default')
      await cache.set('k', 'users', { namespace: 'users' })
      await cache.set('k', 'explicit default', { namespace: 'default' })
      t.equal(await cache.get('k'), 'explicit default', 'default is the namespace named default')
      t.equal(await cache.get('k', { namespace: 'users' }), 'users')
      t.equal(await cache.get('k', { namespace: 'other' }), null)
      t.equal(await cache.exists('k', { namespace: 'users' }), 1)
      t.equal(await cache.delete('k', { namespace: 'users' }), 1)
      t.equal(await cache.get('k'), 'explicit default')
      for (const ns of ['a', 'A-b_c.d', '0', 'n'.repeat(128)]) {
        t.equal(await cache.set('k', ns, { namespace: ns }), true, `namespace ${ns.slice(0, 10)}`)
        t.equal(await cache.get('k', { namespace: ns }), ns)
      }
    })

    t.test('ttl: default, per call, clamped to maxTtl, RangeError when bad', async (t) => {
      const { cache } = await make(t, kind, { defaultTtl: 100, maxTtl: 1000 })
      await cache.set('default', 1)
      t.ok([99, 100].includes(await cache.ttl('default')), 'defaultTtl')
      await cache.set('own', 1, { ttl: 50 })
      t.ok([49, 50].includes(await cache.ttl('own')), 'ttl option')
      await cache.set('long', 1, { ttl: 5000 })
      t.ok([999, 1000].includes(await cache.ttl('long')), 'clamped to maxTtl')
      t.equal(await cache.ttl('missing'), -2)
      for (const ttl of BAD_TTLS) {
        await t.rejects(cache.set('bad', 1, { ttl: ttl as number }), RangeError, `set ttl ${String(ttl)}`)
        await t.rejects(cache.getOrSet('bad', () => 1, { ttl: ttl as number }), RangeError, `getOrSet ttl ${String(ttl)}`)
        await t.rejects(cache.expire('default', ttl as number), RangeError, `expire ${String(ttl)}`)
      }
      t.equal(await cache.exists('bad'), 0, 'nothing stored with a bad ttl')
      t.equal(cache.core.resolveTtl(undefined), 100)
    })

    t.test('entries and rate-limit windows expire', async (t) => {
      // One wait for both, to keep the suite fast.
      const { cache } = await make(t, kind)
      await cache.set('short', 'v', { ttl: 1 })
      t.equal(await cache.get('short'), 'v')
      const opts = { max: 1, window: 1 }
      t.same(await cache.rateLimit('w', opts), { limit: 1, remaining: 0, reset: 1 })
      const err = await t.rejects(cache.rateLimit('w', opts), RateLimitError) as unknown as RateLimitError
      t.equal(err.retryAfter, 1)
      await sleep(1100)
      t.equal(await cache.get('short'), null)
      t.equal(await cache.exists('short'), 0)
      t.equal(await cache.ttl('short'), -2)
      t.same(await cache.rateLimit('w', opts), { limit: 1, remaining: 0, reset: 1 }, 'a new window')
    })

    t.test('expire', async (t) => {
      const { cache } = await make(t, kind, { maxTtl: 500 })
      await cache.set('k', 1, { ttl: 10 })
      t.equal(await cache.expire('k', 200), true)
      t.ok([199, 200].includes(await cache.ttl('k')))
      t.equal(await cache.expire('k', 100000), true)
      t.ok([499, 500].includes(await cache.ttl('k')), 'clamped to maxTtl')
      t.equal(await cache.expire('missing', 10), false)
      await cache.set('n', 1, { namespace: 'ns' })
      t.equal(await cache.expire('n', 30, { namespace: 'ns' }), true)
      t.ok([29, 30].includes(await cache.ttl('n', { namespace: 'ns' })))
    })

    t.test('delete and exists', async (t) => {
      const { cache } = await make(t, kind)
      await cache.set('a', 1)
      await cache.set('b', 2)
      await cache.set('c', 3)
      t.equal(await cache.exists('a'), 1)
      t.equal(await cache.exists(['a', 'b', 'missing']), 2)
      t.equal(await cache.exists([]), 0)
      t.equal(await cache.delete([]), 0)
      t.equal(await cache.delete('missing'), 0)
      t.equal(await cache.delete(['a', 'b', 'missing']), 2)
      t.equal(await cache.exists(['a', 'b', 'c']), 1)
      t.equal(await cache.delete('c'), 1)
      t.equal(await cache.get('c'), null)
      t.equal(cache.getStatistics().deletes, 3)
    })

    t.test('getOrSet', async (t) => {
      t.test('a miss runs the callback and stores its result', async (t) => {
        const { cache } = await make(t, kind)
        let runs = 0
        const value = await cache.getOrSet('k', () => { runs++; return { n: runs } }, { ttl: 60 })
        t.same(value, { n: 1 })
        t.same(await cache.get('k'), { n: 1 }, 'stored')
        t.ok([59, 60].includes(await cache.ttl('k')), 'with the ttl')
        t.same(await cache.getOrSet('k', () => { runs++; return { n: runs } }), { n: 1 }, 'a hit')
        t.equal(runs, 1)
      })

      t.test('concurrent callers share one callback run', async (t) => {
        const { cache } = await make(t, kind)
        let runs = 0
        const callback = async (): Promise<string> => {
          const run = ++runs
          await sleep(30)
          return `value ${run}`
        }
        const results = await Promise.all(Array.from({ length: 20 }, () => cache.getOrSet('k', callback)))
        t.equal(runs, 1)
        t.same(new Set(results), new Set(['value 1']))
        const other = await Promise.all([cache.getOrSet('k', callback, { namespace: 'other' }), cache.getOrSet('k2', callback)])
        t.equal(runs, 3, 'other keys and namespaces are not shared')
        t.same(other.sort(), ['value 2', 'value 3'])
      })

      t.test('a stored null is a hit', async (t) => {
        const { cache } = await make(t, kind)
        await cache.set('n', null)
        let runs = 0
        t.equal(await cache.getOrSet('n', () => { runs++; return 'computed' }), null)
        t.equal(runs, 0)
        t.equal(await cache.getOrSet('m', () => null), null)
        t.equal(await cache.exists('m'), 1, 'a null result is stored')
      })

      t.test('undefined is returned but not stored', async (t) => {
        const { cache } = await make(t, kind)
        let runs = 0
        const callback = async (): Promise<undefined> => { runs++ }
        t.equal(await cache.getOrSet('u', callback), undefined)
        t.equal(await cache.getOrSet('u', callback), undefined)
        t.equal(runs, 2, 'runs again since nothing was stored')
        t.equal(await cache.exists('u'), 0)
      })

      t.test('a failing callback is not cached and reaches every waiter', async (t) => {
        const { cache } = await make(t, kind)
        let runs = 0
        const boom = new Error('boom')
        const callback = async (): Promise<string> => {
          runs++
          await sleep(20)
          throw boom
        }
        const results = await Promise.allSettled(Array.from({ length: 5 }, () => cache.getOrSet('k', callback)))
        t.equal(runs, 1)
        for (const result of results) t.same(result, { status: 'rejected', reason: boom })
        t.equal(await cache.exists('k'), 0, 'nothing stored')
        await t.rejects(cache.getOrSet('k', () => { throw new TypeError('sync') }), { name: 'TypeError', message: 'sync' }, 'a synchronous throw too')
        t.equal(await cache.getOrSet('k', () => 'ok'), 'ok', 'the next call runs the callback again')
        t.equal(cache.getStatistics().errors, 0, 'callback errors are not cache errors')
      })

      t.test('forceRefresh runs the callback and stores the new value', async (t) => {
        const { cache } = await make(t, kind)
        await cache.set('k', 'old')
        t.equal(await cache.getOrSet('k', () => 'new', { forceRefresh: true, ttl: 30 }), 'new')
        t.equal(await cache.get('k'), 'new')
        t.ok([29, 30].includes(await cache.ttl('k')))
        t.equal(await cache.getOrSet('k', () => 'newer', { forceRefresh: false }), 'new')
      })

      t.test('tags, namespace and compress options reach the stored entry', async (t) => {
        const { cache } = await make(t, kind)
        await cache.getOrSet('k', () => 'tagged', { tags: ['t1'], namespace: 'ns', compress: false })
        t.equal(await cache.get('k', { namespace: 'ns' }), 'tagged')
        t.equal(await cache.invalidateTags('t1'), 1)
        t.equal(await cache.get('k', { namespace: 'ns' }), null)
      })

      t.test('the callback must be a function', async (t) => {
        const { cache } = await make(t, kind)
        await t.rejects(cache.getOrSet('k', 'value' as unknown as () => string), { name: 'TypeError', message: /callback function/ })
      })
    })

    t.test('clear', async (t) => {
      t.test('one namespace, never its look-alikes', async (t) => {
        const { cache } = await make(t, kind)
        await cache.set('1', 1, { namespace: 'a' })
        await cache.set('2', 2, { namespace: 'a' })
        await cache.set('x:y', 3, { namespace: 'a' })
        await cache.set('1', 1, { namespace: 'ab' })
        await cache.set('1', 1, { namespace: 'a-b' })
        await cache.set('1', 1, { namespace: 'b' })
        await cache.set('1', 1)
        t.equal(await cache.clear('a'), 3)
        t.equal(await cache.exists(['1', '2', 'x:y'], { namespace: 'a' }), 0)
        t.equal(await cache.exists('1', { namespace: 'ab' }), 1, 'namespace ab untouched')
        t.equal(await cache.exists('1', { namespace: 'a-b' }), 1)
        t.equal(await cache.exists('1', { namespace: 'b' }), 1)
        t.equal(await cache.exists('1'), 1)
        t.equal(await cache.clear('a'), 0, 'nothing left')
        t.equal(await cache.clear('never-used'), 0)
      })

      t.test('everything under the prefix', async (t) => {
        const { cache } = await make(t, kind)
        await cache.set('1', 1, { namespace: 'a', tags: ['t'] })
        await cache.set('2', 2, { namespace: 'b' })
        await cache.set('3', 3)
        await cache.rateLimit('client', { max: 5, window: 60 })
        t.equal(await cache.clear(), 3, 'counts entries only')
        t.equal(await cache.exists(['1', '2', '3']), 0)
        t.equal((await cache.rateLimit('client', { max: 5, window: 60 })).remaining, 4, 'rate-limit windows are gone too')
        t.equal(await cache.invalidateTags('t'), 0, 'tag sets are gone too')
        t.equal(cache.getStatistics().deletes, 3)
      })

      t.test('patterns are not namespaces', async (t) => {
        const { cache } = await make(t, kind)
        await cache.set('1', 1, { namespace: 'ab' })
        for (const [what, ns] of BAD_NAMESPACES) {
          await t.rejects(cache.clear(ns as string), CacheKeyError, what)
        }
        t.equal(await cache.exists('1', { namespace: 'ab' }), 1)
      })
    })

    t.test('tags', async (t) => {
      const { cache } = await make(t, kind)
      await cache.set('u1', 1, { tags: ['user:1'] })
      await cache.set('u1', 1, { tags: ['user:1', 'all'], namespace: 'profiles' })
      await cache.set('u2', 2, { tags: ['user:2', 'all'] })
      await cache.set('plain', 3)
      t.equal(await cache.invalidateTags('user:1'), 2)
      t.equal(await cache.exists('u1'), 0)
      t.equal(await cache.exists('u1', { namespace: 'profiles' }), 0)
      t.equal(await cache.exists('u2'), 1)
      t.equal(await cache.invalidateTags('user:1'), 0, 'the tag is gone')
      t.equal(await cache.invalidateTags(['all', 'user:2', 'unknown']), 1, 'entries are counted once')
      t.equal(await cache.get('plain'), 3, 'untagged entries stay')
      t.equal(await cache.invalidateTags([]), 0)
      await cache.set('again', 1, { tags: ['user:1'] })
      t.equal(await cache.invalidateTags('user:1'), 1, 'a tag can be used again after invalidation')
      await cache.set('gone', 1, { tags: ['t'] })
      await cache.delete('gone')
      t.equal(await cache.invalidateTags('t'), 0, 'entries already removed are not counted')
      for (const tag of ['', 5, 'x'.repeat(1025)]) {
        await t.rejects(cache.set('k', 1, { tags: [tag as string] }), CacheKeyError, `set with tag ${String(tag).slice(0, 5)}`)
        await t.rejects(cache.getOrSet('k', () => 1, { tags: [tag as string] }), CacheKeyError)
        await t.rejects(cache.invalidateTags(tag as string), CacheKeyError)
      }
      t.equal(await cache.exists('k'), 0)
    })

    t.test('rateLimit', async (t) => {
      t.test('counts down, then throws RateLimitError', async (t) => {
        const { cache } = await make(t, kind)
        const opts = { max: 3, window: 60 }
        t.same(await cache.rateLimit('ip:1', opts), { limit: 3, remaining: 2, reset: 60 })
        t.match(await cache.rateLimit('ip:1', opts), { limit: 3, remaining: 1 })
        const third = await cache.rateLimit('ip:1', opts)
        t.equal(third.remaining, 0)
        t.ok(third.reset >= 59 && third.reset <= 60)
        const err = await t.rejects(cache.rateLimit('ip:1', opts), RateLimitError) as unknown as RateLimitError
        t.equal(err.statusCode, 429)
        t.equal(err.code, 'CACHE_RATE_LIMITED')
        t.equal(err.limit, 3)
        t.ok(err.retryAfter >= 59 && err.retryAfter <= 60, `retryAfter ${err.retryAfter}`)
        t.match(err.message, /Rate limit of 3 per 60s exceeded for ip:1/)
        await t.rejects(cache.rateLimit('ip:1', opts), RateLimitError, 'stays limited')
        t.same(await cache.rateLimit('ip:2', opts), { limit: 3, remaining: 2, reset: 60 }, 'ids are independent')
      })

      t.test('parallel calls count exactly', async (t) => {
        const { cache } = await make(t, kind)
        const results = await Promise.allSettled(Array.from({ length: 50 }, () => cache.rateLimit('burst', { max: 30, window: 60 })))
        const passed = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.remaining).sort((a, b) => a - b)
        t.same(passed, Array.from({ length: 30 }, (_, i) => i), 'each remaining value once')
        const limited = results.filter((r) => r.status === 'rejected')
        t.equal(limited.length, 20)
        t.ok(limited.every((r) => r.reason instanceof RateLimitError))
      })

      t.test('bad arguments are programmer errors', async (t) => {
        const { cache } = await make(t, kind, { throwOnError: false })
        await t.rejects(cache.rateLimit('', { max: 1, window: 1 }), CacheKeyError)
        for (const max of [0, -1, 1.5, '3', undefined]) {
          await t.rejects(cache.rateLimit('id', { max: max as number, window: 1 }), { name: 'RangeError', message: /rateLimit max/ }, `max ${String(max)}`)
        }
        for (const window of [0, 0.5, '60', undefined]) {
          await t.rejects(cache.rateLimit('id', { max: 1, window: window as number }), { name: 'RangeError', message: /rateLimit window/ }, `window ${String(window)}`)
        }
        await t.rejects(cache.rateLimit('id', undefined as unknown as { max: number, window: number }), RangeError)
      })
    })

    t.test('ping and info', async (t) => {
      const { cache } = await make(t, kind)
      t.equal(await cache.ping(), true)
      await cache.set('k', 'v')
      const info = await cache.info()
      t.equal(info.store, kind)
      t.type(info.usedMemory, 'number')
      t.ok((info.usedMemory ?? 0) > 0)
      if (kind === 'redis') {
        t.match(info, {
          redisVersion: /^\d+\.\d+\.\d+$/,
          usedMemoryHuman: /^[\d.]+[KMG]?$/,
          connectedClients: Number,
          evictedKeys: 0,
          expiredKeys: Number,
          keyspaceHits: Number,
          keyspaceMisses: Number,
          uptimeSeconds: Number
        })
        t.ok((info.connectedClients ?? 0) >= 1)
      } else {
        t.same(info, {
          store: 'memory',
          redisVersion: null,
          usedMemory: info.usedMemory,
          usedMemoryHuman: null,
          connectedClients: null,
          evictedKeys: null,
          expiredKeys: null,
          keyspaceHits: null,
          keyspaceMisses: null,
          uptimeSeconds: null
        })
      }
    })

    t.test('statistics', async (t) => {
      const { cache } = await make(t, kind)
      const fresh = cache.getStatistics()
      t.match(fresh, {
        hits: 0,
        misses: 0,
        sets: 0,
        deletes: 0,
        evictions: 0,
        errors: 0,
        oversized: 0,
        bytesRead: 0,
        bytesWritten: 0,
        hitRate: 0,
        compressedBytesIn: 0,
        compressedBytesOut: 0,
        compressionRatio: 1,
        namespaces: {},
        store: kind,
        connected: true,
        uptime: 0
      }, 'hitRate is 0 with no traffic')

      await cache.set('k', { x: 1 }) // {"x":1} is 7 bytes, plus the 13-byte envelope header
      t.same(await cache.get('k'), { x: 1 })
      t.same(await cache.get('k'), { x: 1 })
      await cache.get('miss1')
      await cache.get('miss2')
      await cache.delete(['k', 'nothing'])
      const stats = cache.getStatistics()
      t.match(stats, { hits: 2, misses: 2, sets: 1, deletes: 1, errors: 0, bytesWritten: 20, bytesRead: 40, hitRate: 0.5 })

      const big = 'abc'.repeat(2000)
      await cache.set('big', big)
      const after = cache.getStatistics()
      t.equal(after.compressedBytesIn, big.length + 2, 'the serialized size, quotes included')
      t.ok(after.compressedBytesOut > 13 && after.compressedBytesOut < 200, `compressed to ${after.compressedBytesOut}`)
      t.equal(after.compressionRatio, after.compressedBytesOut / after.compressedBytesIn)
      t.equal(after.bytesWritten, 20 + after.compressedBytesOut)
      t.equal(await cache.get('big'), big)
      t.equal(cache.getStatistics().bytesRead, 40 + after.compressedBytesOut, 'bytes read as stored')

      cache.resetStatistics()
      t.same(cache.getStatistics(), fresh, 'reset to the fresh state')
    })

    t.test('namespace views', async (t) => {
      const { cache } = await make(t, kind)
      const users = cache.namespace('users')
      t.equal(users.name, 'users')
      t.equal(users.redisKey('1'), cache.redisKey('1', 'users'))
      t.equal(await users.set('1', { name: 'ada' }, { ttl: 40, tags: ['people'] }), true)
      t.same(await users.get('1'), { name: 'ada' })
      t.same(await cache.get('1', { namespace: 'users' }), { name: 'ada' })
      t.equal(await cache.get('1'), null)
      t.equal(await users.exists(['1', '2']), 1)
      t.ok([39, 40].includes(await users.ttl('1')))
      t.equal(await users.expire('1', 80), true)
      t.ok([79, 80].includes(await users.ttl('1')))
      t.equal(await users.getOrSet('2', () => 'computed', { ttl: 5 }), 'computed')
      t.equal(await cache.get('2', { namespace: 'users' }), 'computed')
      t.equal(await users.delete('2'), 1)
      await users.set('3', 3)
      await cache.set('3', 'outside')
      t.equal(await users.clear(), 2)
      t.equal(await cache.get('3'), 'outside', 'clear stays in the namespace')
      await users.set('4', 4, { namespace: 'elsewhere' } as object)
      t.equal(await users.get('4'), 4, 'the view fixes the namespace')
      t.equal(await cache.invalidateTags('people'), 0)
      for (const [what, ns] of BAD_NAMESPACES) {
        t.throws(() => cache.namespace(ns as string), CacheKeyError, what)
      }
    })

    for (const throwOnError of [false, true]) {
      t.test(`bad keys, namespaces and tags throw CacheKeyError (throwOnError: ${throwOnError})`, async (t) => {
        const { cache } = await make(t, kind, { throwOnError })
        for (const [what, bad] of BAD_KEYS) {
          const key = bad as string
          let runs = 0
          await t.rejects(cache.get(key), CacheKeyError, `get: ${what}`)
          await t.rejects(cache.set(key, 1), CacheKeyError, `set: ${what}`)
          await t.rejects(cache.delete(key), CacheKeyError, `delete: ${what}`)
          await t.rejects(cache.delete(['ok', key]), CacheKeyError, `delete list: ${what}`)
          await t.rejects(cache.exists(key), CacheKeyError, `exists: ${what}`)
          await t.rejects(cache.exists(['ok', key]), CacheKeyError, `exists list: ${what}`)
          await t.rejects(cache.getOrSet(key, () => { runs++; return 1 }), CacheKeyError, `getOrSet: ${what}`)
          await t.rejects(cache.expire(key, 10), CacheKeyError, `expire: ${what}`)
          await t.rejects(cache.ttl(key), CacheKeyError, `ttl: ${what}`)
          await t.rejects(cache.rateLimit(key, { max: 1, window: 1 }), CacheKeyError, `rateLimit: ${what}`)
          t.throws(() => cache.redisKey(key), CacheKeyError, `redisKey: ${what}`)
          t.equal(runs, 0, 'the callback never runs')
        }
        for (const [what, bad] of BAD_NAMESPACES) {
          const namespace = bad as string
          await t.rejects(cache.get('k', { namespace }), CacheKeyError, `get in namespace: ${what}`)
          await t.rejects(cache.set('k', 1, { namespace }), CacheKeyError, `set in namespace: ${what}`)
          await t.rejects(cache.getOrSet('k', () => 1, { namespace }), CacheKeyError, `getOrSet in namespace: ${what}`)
          await t.rejects(cache.delete('k', { namespace }), CacheKeyError, `delete in namespace: ${what}`)
          t.throws(() => cache.redisKey('k', namespace), CacheKeyError, `redisKey in namespace: ${what}`)
        }
        const err = await t.rejects(cache.get('')) as unknown as CacheKeyError
        t.equal(err.statusCode, 400)
        t.equal(err.code, 'CACHE_KEY_INVALID')
        t.equal(cache.getStatistics().errors, 0, 'programmer errors are not counted as cache errors')
        t.equal(cache.getStatistics().misses, 0)
      })
    }
  })
}

t.test('redis only', async (t) => {
  t.test('clear never touches keys outside the prefix', async (t) => {
    // Database 5 of the shared server is this test's alone.
    const url = `${server.url}/5`
    const raw = rawClient(t, url)
    const a = await build(t, { redis: { url }, prefix: 'a' })
    const ab = await build(t, { redis: { url }, prefix: 'ab' })
    await raw.set('foreign', 'keep')
    await raw.set('a', 'keep')
    await raw.set('a-default:k', 'keep')
    await raw.set('A:default:k', 'keep')
    await a.cache.set('k', 1)
    await a.cache.set('k', 1, { namespace: 'x', tags: ['t'] })
    await ab.cache.set('k', 2)
    await ab.cache.set('k', 2, { namespace: 'x' })
    t.equal(await a.cache.clear('x'), 1)
    t.equal(await a.cache.clear(), 1)
    t.same((await raw.keys('a:*')).sort(), ['a:#all', 'a:#ns:x'], 'nothing of prefix a is left but the stamps of the clears')
    await raw.del('a:#all', 'a:#ns:x')
    t.same((await raw.keys('*')).sort(), ['A:default:k', 'a', 'a-default:k', 'ab:default:k', 'ab:x:k', 'foreign'])
    t.equal(await raw.get('foreign'), 'keep')
    t.equal(await ab.cache.get('k'), 2)
    await raw.del('foreign', 'a', 'a-default:k', 'A:default:k')
    t.equal(await ab.cache.clear(), 2)
  })

  t.test('entries live under redisKey, with their TTL', async (t) => {
    const raw = rawClient(t, server.url)
    const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
    await cache.set('k', 'v', { ttl: 30, namespace: 'ns', tags: ['t'] })
    const key = cache.redisKey('k', 'ns')
    t.equal(await raw.exists(key), 1)
    t.ok([29, 30].includes(await raw.ttl(key)))
    const index = `${cache.core.layout.prefix}:#ti:t`
    const stamp = `${cache.core.layout.prefix}:#ts:t`
    t.same(await raw.zrange(index, '0', '-1'), [key], 'the tag index lists the entry')
    t.ok(Number(await raw.get(stamp)) < Date.now(), 'the tag has a stamp from before the write')
    for (const bookkeeping of [index, stamp]) t.ok(await raw.ttl(bookkeeping) >= 29, 'the bookkeeping lives as long as its entries')
    await cache.set('k2', 'v', { ttl: 300, tags: ['t'] })
    for (const bookkeeping of [index, stamp]) t.ok(await raw.ttl(bookkeeping) >= 299, 'and is extended for longer ones')
    await cache.set('k3', 'v', { ttl: 10, tags: ['t'] })
    for (const bookkeeping of [index, stamp]) t.ok(await raw.ttl(bookkeeping) >= 299, 'but never shortened')
    t.equal(cache.getStatistics().bytesWritten, 3 * await raw.strlen(key), 'bytesWritten counts the stored bytes of the three entries')
    await raw.persist(key)
    t.equal(await cache.ttl('k', { namespace: 'ns' }), -1, 'no expiry')
    const rl = `${cache.core.layout.prefix}:#rl:client`
    await cache.rateLimit('client', { max: 2, window: 30 })
    t.equal(await raw.get(rl), '1')
    t.ok(await raw.pttl(rl) > 29000)
  })

  t.test('the scripts are loaded again after SCRIPT FLUSH', async (t) => {
    const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
    await cache.set('k', 1, { tags: ['t'] })
    await server.cli('script', 'flush')
    await cache.set('k2', 1, { tags: ['t'] })
    t.equal(await cache.invalidateTags('t'), 2)
    await server.cli('script', 'flush')
    t.equal((await cache.rateLimit('x', { max: 2, window: 5 })).remaining, 1)
  })

  t.test('clear scans past one SCAN page', async (t) => {
    const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
    await Promise.all(Array.from({ length: 2500 }, (_, i) => cache.set(`k${i}`, i, { namespace: i % 2 === 0 ? 'even' : 'odd' })))
    t.equal(await cache.clear('even'), 1250)
    t.equal(await cache.clear(), 1250)
  })
})
