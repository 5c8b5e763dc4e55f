// The stores on their own: the memory store (expiry, sweeping, tags, windows, locks) with a
// controlled clock, the Redis store against a real server, and a Redis Cluster through the plugin.
import t from 'tap'
import { Cluster, Redis } from 'ioredis'
import { build, rawClient, uniquePrefix, until } from './helpers/app'
import { startCluster, startRedis, type RedisCluster, type RedisServer } from './helpers/redis-server'
import { KeyLayout } from '../lib/keys'
import { MemoryStore } from '../lib/stores/memory'
import { infoOf, parseInfo, RedisStore } from '../lib/stores/redis'
import type { CacheStore } from '../lib/stores/store'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(async () => { await server?.stop() })

const layout = new KeyLayout('m')
const value = (text: string): Buffer => Buffer.from(text)

/** Replaces Date.now for one test; `advance` moves the clock. */
function clock (t: tap.Test): { advance: (ms: number) => void } {
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  return { advance: (ms) => { now += ms } }
}

function memory (t: tap.Test): MemoryStore {
  const store = new MemoryStore(layout)
  t.teardown(() => store.close())
  return store
}

t.test('memory store', async (t) => {
  t.test('entries expire with their ttl', async (t) => {
    const time = clock(t)
    const store = memory(t)
    await store.set('m:ns:a', value('1'), 10, [])
    t.same(await store.get('m:ns:a'), value('1'))
    t.equal(await store.ttl('m:ns:a'), 10)
    time.advance(4400)
    t.equal(await store.ttl('m:ns:a'), 6, 'seconds left, rounded')
    t.equal(await store.exists(['m:ns:a', 'm:ns:b']), 1)
    time.advance(5600)
    t.equal(await store.get('m:ns:a'), null, 'gone at its expiry')
    t.equal(await store.ttl('m:ns:a'), -2)
    t.equal(await store.exists(['m:ns:a']), 0)
    t.equal(await store.delete(['m:ns:a']), 0, 'an expired entry is not counted as removed')
    t.equal(await store.expire('m:ns:a', 10), false, 'nor can it be revived')
  })

  t.test('hash fields (the variants of a route with vary) and plain values do not mix', async (t) => {
    const store = memory(t)
    await store.set('plain', Buffer.from('p'), 60, [])
    await store.set('hash', Buffer.from('a'), 60, [], 'a')
    await store.set('hash', Buffer.from('b'), 30, [], 'b')
    t.equal(String(await store.get('hash', 'a')), 'a')
    t.equal(String(await store.get('hash', 'b')), 'b')
    t.equal(await store.get('hash', 'c'), null)
    t.equal(await store.get('hash'), null, 'a hash read as a plain value is a miss')
    t.equal(await store.get('plain', 'a'), null, 'a plain value read as a hash is a miss')
    t.equal(await store.ttl('hash'), 60, 'the hash lives as long as its longest field')
    t.equal(await store.delete(['hash']), 1, 'one key for all its fields')
  })

  t.test('expire and ttl', async (t) => {
    const time = clock(t)
    const store = memory(t)
    await store.set('m:ns:a', value('1'), 10, [])
    t.equal(await store.expire('m:ns:a', 100), true)
    time.advance(50_000)
    t.equal(await store.ttl('m:ns:a'), 50)
    t.equal(await store.expire('m:ns:missing', 100), false)
    time.advance(49_800)
    t.equal(await store.ttl('m:ns:a'), 0, 'never negative while present')
  })

  t.test('delete, exists, clear', async (t) => {
    const store = memory(t)
    for (const key of ['m:a:1', 'm:a:2', 'm:ab:1', 'm:b:1', 'other:a:1']) await store.set(key, value(key), 60, [])
    t.equal(await store.exists(['m:a:1', 'm:a:2', 'm:nope:1']), 2)
    t.equal(await store.delete(['m:a:2', 'm:a:2', 'm:nope:1']), 1)
    t.equal(await store.clear('a'), 1, 'namespace a only')
    t.equal(await store.exists(['m:ab:1', 'm:b:1']), 2, 'ab untouched')
    t.equal(await store.clear(), 2, 'everything under the prefix')
    t.equal(await store.exists(['other:a:1']), 1, 'other prefixes untouched')
  })

  t.test('tags', async (t) => {
    const store = memory(t)
    await store.set('m:a:1', value('1'), 60, ['t1', 't2'])
    await store.set('m:a:2', value('2'), 60, ['t1'])
    await store.set('m:a:3', value('3'), 60, [])
    t.same(await store.invalidateTags(['t1', 't2']), { removed: 2, keys: ['m:a:1', 'm:a:2'] })
    t.same(await store.invalidateTags(['t1']), { removed: 0, keys: [] })
    t.equal(await store.exists(['m:a:3']), 1)
    await store.set('m:a:4', value('4'), 60, ['t3'])
    await store.clear('a')
    t.same(await store.invalidateTags(['t3']), { removed: 0, keys: ['m:a:4'] }, 'members of a cleared namespace are not counted')
    await store.set('m:a:5', value('5'), 60, ['t4'])
    await store.clear()
    t.same(await store.invalidateTags(['t4']), { removed: 0, keys: [] }, 'clear() drops the tag sets')
  })

  t.test('rate-limit windows', async (t) => {
    const time = clock(t)
    const store = memory(t)
    t.same(await store.hitWindow('ip', 10), { count: 1, resetMs: 10_000 })
    time.advance(2500)
    t.same(await store.hitWindow('ip', 10), { count: 2, resetMs: 7500 })
    t.same(await store.hitWindow('other', 10), { count: 1, resetMs: 10_000 })
    time.advance(7500)
    t.same(await store.hitWindow('ip', 10), { count: 1, resetMs: 10_000 }, 'a new window once the old one ended')
    await store.clear()
    t.same(await store.hitWindow('ip', 10), { count: 1, resetMs: 10_000 }, 'clear() resets windows')
  })

  t.test('locks always succeed in one process', async (t) => {
    const store = memory(t)
    const generic: CacheStore = store
    t.equal(await generic.acquireLock('m:#lock:x', 'a', 1000), true)
    await generic.releaseLock('m:#lock:x', 'a')
    t.equal(store.connected, true)
    t.equal(store.kind, 'memory')
  })

  t.test('ping, info, close', async (t) => {
    const store = memory(t)
    await store.ping()
    await store.set('m:a:k', value('12345'), 60, [])
    t.match(await store.info(), { store: 'memory', usedMemory: 'm:a:k'.length + 5, redisVersion: null })
    await store.close()
    t.equal(await store.get('m:a:k'), null, 'close empties the store')
    t.equal((await store.info()).usedMemory, 0)
  })

  t.test('the sweep drops expired entries, windows and empty tag sets', async (t) => {
    const time = clock(t)
    // Capture the sweeper the store schedules, to run it without waiting 30 s.
    const realSetInterval = globalThis.setInterval
    const scheduled: Array<{ fn: () => void, ms: number | undefined }> = []
    globalThis.setInterval = ((fn: () => void, ms?: number) => {
      scheduled.push({ fn, ms })
      return realSetInterval(fn, ms)
    }) as typeof setInterval
    let store: MemoryStore
    try {
      store = memory(t)
    } finally {
      globalThis.setInterval = realSetInterval
    }
    t.equal(scheduled.length, 1)
    t.equal(scheduled[0].ms, 30_000, 'every 30 s')

    await store.set('m:a:short', value('1'), 1, ['t'])
    await store.set('m:a:long', value('2'), 100, ['t', 'u'])
    await store.hitWindow('w', 1)
    time.advance(2000)
    scheduled[0].fn()
    t.equal((await store.info()).usedMemory, 'm:a:long'.length + 1, 'the expired entry is gone without being read')
    t.same(await store.hitWindow('w', 1), { count: 1, resetMs: 1000 }, 'the expired window is gone')
    await store.delete(['m:a:long'])
    store.sweep()
    t.same(await store.invalidateTags(['t', 'u']), { removed: 0, keys: [] }, 'tag sets without live members are dropped')
  })
})

t.test('redis store', async (t) => {
  const client = rawClient(t, server.url)
  const prefix = uniquePrefix()
  const store = new RedisStore(client, new KeyLayout(prefix))
  const key = (k: string, ns = 'a'): string => `${prefix}:${ns}:${k}`

  t.test('basics', async (t) => {
    await client.ping()
    t.equal(store.kind, 'redis')
    t.equal(store.connected, true)
    await store.set(key('1'), value('one'), 30, [])
    t.same(await store.get(key('1')), value('one'))
    t.ok([29, 30].includes(await store.ttl(key('1'))))
    t.equal(await store.exists([key('1'), key('2')]), 1)
    t.equal(await store.exists([]), 0)
    t.equal(await store.delete([]), 0)
    t.equal(await store.expire(key('1'), 100), true)
    t.equal(await store.expire(key('2'), 100), false)
    t.equal(await store.delete([key('1'), key('2')]), 1)
    await store.ping()
    await store.close()
    t.equal(client.status, 'ready', 'close leaves the connection to its owner')
  })

  t.test('the reads of one event-loop turn go out as one MGET, each key once', async (t) => {
    await store.set(key('b1'), value('one'), 30, [])
    await store.set(key('b2'), value('two'), 30, [])
    const calls = async (command: string): Promise<number> => {
      const line = (await client.info('commandstats')).split('\r\n').find((l) => l.startsWith(`cmdstat_${command}:`))
      return line === undefined ? 0 : Number(/calls=(\d+)/.exec(line)?.[1])
    }
    const [mgetBefore, getBefore] = [await calls('mget'), await calls('get')]
    const reads = await Promise.all([store.get(key('b1')), store.get(key('b2')), store.get(key('b1')), store.get(key('none'))])
    t.same(reads, [value('one'), value('two'), value('one'), null], 'each caller gets its own key\'s value')
    t.equal(await calls('mget') - mgetBefore, 1, 'one MGET for the whole turn')
    t.equal(await calls('get') - getBefore, 0)

    const [first, second] = await Promise.all([store.get(key('b2')), store.get(key('b2'))])
    t.same(first, value('two'))
    t.equal(first, second, 'concurrent reads of one key share one reply')
    t.equal(await calls('get') - getBefore, 1, 'a turn with one key sends a plain GET')

    const down = rawClient(t, server.url)
    await down.ping()
    const offline = new RedisStore(down, new KeyLayout(prefix))
    down.disconnect()
    const failed = await Promise.allSettled([offline.get(key('b1')), offline.get(key('b2'))])
    t.same(failed.map((r) => r.status), ['rejected', 'rejected'], 'a failed batch fails every read in it')
    const single = await Promise.allSettled([offline.get(key('b1'))])
    t.equal(single[0].status, 'rejected')
  })

  t.test('locks belong to their owner', async (t) => {
    const lock = `${prefix}:#lock:x`
    t.equal(await store.acquireLock(lock, 'owner', 5000), true)
    t.equal(await store.acquireLock(lock, 'other', 5000), false, 'held')
    await store.releaseLock(lock, 'other')
    t.equal(await client.get(lock), 'owner', 'only the owner can release')
    t.ok(await client.pttl(lock) > 4000)
    await store.releaseLock(lock, 'owner')
    t.equal(await client.exists(lock), 0)
    t.equal(await store.acquireLock(lock, 'other', 50), true)
    await new Promise((resolve) => setTimeout(resolve, 80))
    t.equal(await store.acquireLock(lock, 'third', 5000), true, 'an expired lock is free')
  })

  t.test('a reply error from a script is passed on', async (t) => {
    await client.set(`${prefix}:#tag:wrongtype`, 'a string, not a set')
    await client.script('FLUSH')
    await t.rejects(store.set(key('t'), value('x'), 30, ['wrongtype']), { name: 'ReplyError', message: /WRONGTYPE/ }, 'from EVAL, loading the script')
    await t.rejects(store.set(key('t'), value('x'), 30, ['wrongtype']), { name: 'ReplyError', message: /WRONGTYPE/ }, 'from EVALSHA, the script loaded')
  })

  t.test('info', async (t) => {
    const info = await store.info()
    t.match(info, { store: 'redis', redisVersion: /^7\./, usedMemory: Number, usedMemoryHuman: String, uptimeSeconds: Number })
  })

  t.test('infoOf: counters summed over masters, missing fields null', async (t) => {
    const a = parseInfo('redis_version:7.0.0\r\nused_memory:100\r\nused_memory_human:100B\r\nconnected_clients:2\r\nevicted_keys:1\r\nexpired_keys:3\r\nkeyspace_hits:5\r\nkeyspace_misses:6\r\nuptime_in_seconds:9\r\n')
    const b = parseInfo('redis_version:7.0.0\r\nused_memory:50\r\nconnected_clients:1\r\n')
    t.same(infoOf([a]), {
      store: 'redis',
      redisVersion: '7.0.0',
      usedMemory: 100,
      usedMemoryHuman: '100B',
      connectedClients: 2,
      evictedKeys: 1,
      expiredKeys: 3,
      keyspaceHits: 5,
      keyspaceMisses: 6,
      uptimeSeconds: 9
    })
    t.match(infoOf([a, b]), { usedMemory: 150, usedMemoryHuman: null, connectedClients: 3, evictedKeys: 1 }, 'a cluster')
    t.same(infoOf([new Map()]), {
      store: 'redis',
      redisVersion: null,
      usedMemory: null,
      usedMemoryHuman: null,
      connectedClients: null,
      evictedKeys: null,
      expiredKeys: null,
      keyspaceHits: null,
      keyspaceMisses: null,
      uptimeSeconds: null
    }, 'a Redis-compatible server that reports nothing')
  })

  t.test('parseInfo', async (t) => {
    const fields = parseInfo('# Server\r\nredis_version:7.2.0\r\nexecutable:/usr/bin/redis-server\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0\r\nno colon here\r\n:leading colon\r\n')
    t.same([...fields], [['redis_version', '7.2.0'], ['executable', '/usr/bin/redis-server'], ['db0', 'keys=1,expires=0']])
  })
})

t.test('redis cluster', async (t) => {
  let cluster: RedisCluster
  t.before(async () => { cluster = await startCluster() })
  t.teardown(async () => { await cluster?.stop() })

  const exercise = async (t: tap.Test, cache: Awaited<ReturnType<typeof build>>['cache']): Promise<void> => {
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`)
    for (const k of keys) t.equal(await cache.set(k, k, { tags: [`tag${k.length}`], namespace: k.length === 2 ? 'short' : 'long' }), true)
    t.equal(await cache.get('k5', { namespace: 'short' }), 'k5')
    t.equal(await cache.exists(keys.slice(0, 10), { namespace: 'short' }), 10, 'multi-key exists across slots')
    t.equal(await cache.delete(['k0', 'k1', 'k10'], { namespace: 'short' }), 2, 'multi-key delete across slots')
    t.equal(await cache.invalidateTags('tag2'), 8, 'tag members on several nodes')
    t.equal(await cache.clear('long'), 20, 'clear scans every master')
    await cache.set('x', 1)
    await cache.set('y', 2, { namespace: 'other' })
    t.equal(await cache.clear(), 2)
    t.equal((await cache.rateLimit('ip', { max: 2, window: 10 })).remaining, 1)
    t.equal(await cache.ping(), true)
    const info = await cache.info()
    t.match(info, { store: 'redis', redisVersion: /^\d/, usedMemoryHuman: null, usedMemory: Number, connectedClients: Number })
    t.ok((info.connectedClients ?? 0) >= 3, 'summed over the masters')
    t.equal(cache.getStatistics().connected, true)
  }

  t.test('through { cluster: { nodes } }', async (t) => {
    const { cache } = await build(t, { redis: { cluster: { nodes: cluster.startupNodes } }, prefix: uniquePrefix() })
    await exercise(t, cache)
  })

  t.test('through a Cluster client', async (t) => {
    const client = new Cluster(cluster.startupNodes)
    t.teardown(() => client.disconnect())
    const { app, cache } = await build(t, { redis: { client, closeClient: true }, prefix: uniquePrefix() })
    await exercise(t, cache)
    await app.close()
    await until(() => client.status === 'end', 3000, 'the cluster client to end')
    t.pass('closed with closeClient: true')
  })

  t.test('a standalone client in cluster mode is refused by the nodes', async (t) => {
    // Sanity check that the cluster really is one: a plain client gets MOVED for foreign slots.
    const plain = new Redis(cluster.startupNodes[0].port, '127.0.0.1')
    t.teardown(() => plain.disconnect())
    const replies = await Promise.allSettled(['a', 'b', 'c', 'd', 'e'].map((k) => plain.get(k)))
    t.ok(replies.some((r) => r.status === 'rejected' && /MOVED/.test(String(r.reason))))
  })
})
