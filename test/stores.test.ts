// The stores. One contract suite (test/helpers/store-suite.ts) runs against the memory store, the
// Redis store on a standalone server and the Redis store on a Redis Cluster; then what only one of
// them does: the memory store's clock arithmetic and sweep (with a controlled clock), the Redis
// store's read batching, locks, script errors and INFO parsing, and the Cluster's spread of keys
// over its masters. The plugin on a Cluster (options, closeClient) is test/cluster.test.ts.
import t from 'tap'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { startCluster, startRedis, type RedisCluster, type RedisServer } from './helpers/redis-server'
import { clock, EXPIRY_WAIT_MS, storeSuite, uniquePrefix, until } from './helpers/store-suite'
import { ENCODING_PLAIN, KIND_VALUE, writeEnvelope } from '../lib/envelope'
import { KeyLayout } from '../lib/keys'
import { Statistics } from '../lib/statistics'
import { MemoryStore } from '../lib/stores/memory'
import { BATCH_MAX, infoOf, parseInfo, RedisStore } from '../lib/stores/redis'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(async () => { await server?.stop() })

const layout = new KeyLayout('m')
const value = (text: string): Buffer => Buffer.from(text)

const MEMORY_BOUNDS = { maxEntries: 100_000, maxBytes: 64 * 1024 * 1024 }

function memory (t: tap.Test, over = layout): MemoryStore {
  const store = new MemoryStore(over, MEMORY_BOUNDS, new Statistics())
  t.teardown(() => store.close())
  return store
}

// As the plugin configures its own clients (lib/connection.ts), and ready before use, as the
// plugin hands a client to the store only once it is.
const clientOptions: RedisOptions = { maxRetriesPerRequest: 1, enableAutoPipelining: true, autoPipeliningIgnoredCommands: ['get', 'mget', 'set', 'evalsha', 'eval'] }

async function ready (client: Redis | Cluster): Promise<void> {
  await until(() => client.status === 'ready', 10_000, 'the client to be ready')
}

/** A standalone client, also for looking at (and tampering with) what the store wrote. */
function redisClient (t: tap.Test, url: string): Redis {
  const client = new Redis(url, clientOptions)
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

storeSuite(t, 'memory store', {
  kind: 'memory',
  make: (t, over) => memory(t, over),
  dropsRemovedMembers: true
})

t.test('memory store', async (t) => {
  t.test('has no locks: with one process there is nothing to lock against', async (t) => {
    const store = memory(t)
    t.equal('acquireLock' in store, false)
    t.equal('releaseLock' in store, false)
  })

  // The contract suite checks expiry by waiting; with a controlled clock the memory store's
  // arithmetic can be checked to the millisecond.
  t.test('entries expire with their ttl, to the second', async (t) => {
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

  t.test('expire, ttl and a hash\'s ttl, to the second', async (t) => {
    const time = clock(t)
    const store = memory(t)
    await store.set('m:ns:a', value('1'), 10, [])
    t.equal(await store.expire('m:ns:a', 100), true)
    time.advance(50_000)
    t.equal(await store.ttl('m:ns:a'), 50)
    t.equal(await store.expire('m:ns:missing', 100), false)
    time.advance(49_800)
    t.equal(await store.ttl('m:ns:a'), 0, 'never negative while present')

    await store.set('hash', value('a'), 60, [], 'a')
    await store.set('hash', value('b'), 30, [], 'b')
    t.equal(await store.ttl('hash'), 60, 'the hash lives as long as its longest field')
  })

  t.test('rate-limit windows, to the millisecond', async (t) => {
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

  t.test('info reports the bytes held; close empties the store', async (t) => {
    const store = memory(t)
    await store.ping()
    t.equal((await store.info()).usedMemory, 0, 'nothing held yet')
    await store.set('m:a:k', value('12345'), 60, [])
    const held = store.describe().bytes
    t.match(await store.info(), { store: 'memory', usedMemory: held, redisVersion: null })
    t.ok(held > 'm:a:k'.length + 5, 'the segment and the entry\'s objects, not just its bytes')
    await store.close()
    t.equal(await store.get('m:a:k'), null, 'close empties the store')
    t.equal((await store.info()).usedMemory, 0)
  })

  t.test('the sweep drops expired entries, with their tags, and ended windows', async (t) => {
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
    await store.set('m:a:hash', value('1'), 1, ['h'], 'f')
    await store.set('m:a:long', value('2'), 100, ['t', 'u'])
    await store.hitWindow('w', 1)
    await store.hitWindow('v', 100)
    time.advance(2000)
    scheduled[0].fn()
    t.equal(store.describe().entries, 1, 'the expired entries are gone without being read')
    t.same(await store.hitWindow('w', 1), { count: 1, resetMs: 1000 }, 'the ended window is gone')
    t.same(await store.hitWindow('v', 100), { count: 2, resetMs: 98_000 }, 'the other one counts on')
    t.same(await store.invalidateTags(['t', 'h']), { removed: 1, keys: ['m:a:long'] }, 'the expired entries left their tags')
    t.equal(store.indexBytes, 0, 'and nothing is left in the indexes')
  })
})

storeSuite(t, 'redis store', {
  kind: 'redis',
  make: async (t, over) => {
    const client = redisClient(t, server.url)
    await ready(client)
    return new RedisStore(client, over)
  }
})

t.test('redis store', async (t) => {
  const client = redisClient(t, server.url)
  const prefix = uniquePrefix()
  const store = new RedisStore(client, new KeyLayout(prefix))
  const key = (k: string, ns = 'a'): string => `${prefix}:${ns}:${k}`

  t.test('connected while its client is; close leaves the connection to its owner', async (t) => {
    await client.ping()
    t.equal(store.connected, true)
    await store.close()
    t.equal(client.status, 'ready', 'close leaves the connection to its owner')
    t.equal(store.connected, true)

    const other = redisClient(t, server.url)
    await ready(other)
    const closed = new RedisStore(other, new KeyLayout(prefix))
    other.disconnect()
    await until(() => !closed.connected, 5000, 'the store to see its client closed')
    t.equal(closed.connected, false, 'not once its client is closed')
  })

  /** How many times Redis ran `command` so far (INFO commandstats). */
  const calls = async (command: string): Promise<number> => {
    const line = (await client.info('commandstats')).split('\r\n').find((l) => l.startsWith(`cmdstat_${command}:`))
    return line === undefined ? 0 : Number(/calls=(\d+)/.exec(line)?.[1])
  }

  t.test('the reads of one event-loop turn go out as one MGET, each key once', async (t) => {
    await store.set(key('b1'), value('one'), 30, [])
    await store.set(key('b2'), value('two'), 30, [])
    const [mgetBefore, getBefore] = [await calls('mget'), await calls('get')]
    const reads = await Promise.all([store.get(key('b1')), store.get(key('b2')), store.get(key('b1')), store.get(key('none'))])
    t.same(reads, [value('one'), value('two'), value('one'), null], 'each caller gets its own key\'s value')
    t.equal(await calls('mget') - mgetBefore, 1, 'one MGET for the whole turn')
    t.equal(await calls('get') - getBefore, 0)

    const [first, second] = await Promise.all([store.get(key('b2')), store.get(key('b2'))])
    t.same(first, value('two'))
    t.equal(first, second, 'concurrent reads of one key share one reply')
    t.equal(await calls('get') - getBefore, 1, 'a turn with one key sends a plain GET')

    const many = await Promise.all(Array.from({ length: BATCH_MAX + 2 }, (_, i) => store.get(key(`many${i}`))))
    t.same(many, Array.from({ length: BATCH_MAX + 2 }, () => null))
    t.equal(await calls('mget') - mgetBefore, 3, 'a full batch goes at once, the rest at the end of the turn')

    const down = redisClient(t, server.url)
    await ready(down)
    const offline = new RedisStore(down, new KeyLayout(prefix))
    down.disconnect()
    const failed = await Promise.allSettled([offline.get(key('b1')), offline.get(key('b2'))])
    t.same(failed.map((r) => r.status), ['rejected', 'rejected'], 'a failed batch fails every read in it')
    const single = await Promise.allSettled([offline.get(key('b1'))])
    t.equal(single[0].status, 'rejected')
  })

  t.test('the writes of one event-loop turn go out as one script call, each judged on its own', async (t) => {
    await client.set(`${prefix}:#ti:foreign`, 'a string, not a sorted set')
    await store.delete([key('wb-old')])
    const old = writeEnvelope(ENCODING_PLAIN, KIND_VALUE, { storedAt: Date.now() - 10_000, freshFor: 30 }, value('x'))
    const before = await calls('evalsha')
    const writes = Promise.allSettled([
      store.set(key('wb1'), value('one'), 30, []),
      store.set(key('wb-old'), old, 30, []),
      store.set(key('wb2'), value('two'), 30, ['foreign']),
      store.set(key('wb3'), value('three'), 30, [], 'variant')
    ])
    t.same(await store.get(key('wb1')), value('one'), 'a read asked after a write in the same turn finds it')
    const results = (await writes).map((r) => r.status === 'fulfilled' ? r.value : (r.reason as Error).message)
    t.same(results.slice(0, 2), [true, false], 'stored; refused, its work overtaken by the delete')
    t.match(results[2], /^WRONGTYPE/, 'an error at one entry\'s keys fails that entry alone')
    t.equal(results[3], true)
    t.equal(await calls('evalsha') - before, 1, 'one script call for the turn')
    t.same(await client.hgetBuffer(key('wb3'), 'variant'), value('three'))
    t.equal(await client.exists(key('wb2')), 0)

    const many = await Promise.all(Array.from({ length: 40 }, (_, i) => store.set(key(`wm${i}`), value(String(i)), 30, [])))
    t.ok(many.every(Boolean))
    t.equal(await calls('evalsha') - before, 3, 'a full batch (32 writes) goes at once, the rest at the end of the turn')
    const large = Buffer.alloc(512 * 1024, 'x')
    await Promise.all([1, 2, 3].map((i) => store.set(key(`wl${i}`), large, 30, [])))
    t.equal(await calls('evalsha') - before, 5, 'so does a batch of 1 MiB of values')

    const down = redisClient(t, server.url)
    await ready(down)
    const offline = new RedisStore(down, new KeyLayout(prefix))
    down.disconnect()
    const failed = await Promise.allSettled([offline.set(key('wf1'), value('1'), 30, []), offline.set(key('wf2'), value('2'), 30, [])])
    t.same(failed.map((r) => r.status), ['rejected', 'rejected'], 'a failed call fails every write in it')

    const closing = redisClient(t, server.url)
    await ready(closing)
    const closed = new RedisStore(closing, new KeyLayout(prefix))
    const queued = closed.set(key('wc'), value('queued'), 30, [])
    await closed.close()
    await closing.quit()
    t.equal(await queued, true, 'close sends the writes still queued, before the connection goes')
    t.same(await client.getBuffer(key('wc')), value('queued'))
  })

  t.test('a batch of writes: each keeps its place in line, its tags and its lock', async (t) => {
    const queued = store.set(key('wo'), value('written'), 30, [])
    const reads = await Promise.all(Array.from({ length: 8 }, (_, i) => store.get(key(i === 0 ? 'wo' : `wo${i}`))))
    t.same(reads[0], value('written'), 'a full batch of reads sent at once still goes after the write')
    t.equal(await queued, true)
    const overwritten = store.set(key('wo'), value('again'), 30, [])
    t.equal(await store.delete([key('wo')]), 1, 'a delete asked for after a write removes what it wrote')
    t.equal(await overwritten, true)
    t.equal(await client.exists(key('wo')), 0)

    const locks = ['l1', 'l2', 'l3'].map((name) => ({ key: `${prefix}:#lock:${name}`, token: 'mine', released: false }))
    for (const lock of locks) t.equal(await store.acquireLock(lock.key, 'mine', 60_000), true)
    await store.delete([key('wt-old')])
    const old = writeEnvelope(ENCODING_PLAIN, KIND_VALUE, { storedAt: Date.now() - 10_000, freshFor: 30 }, value('x'))
    const stored = await Promise.all([
      store.set(key('wt1'), value('one'), 30, ['batch-a', 'batch-b'], undefined, locks[0]),
      store.set(key('wt-old'), old, 30, ['batch-a'], undefined, locks[1]),
      store.set(key('wt2'), value('two'), 30, ['batch-b'], undefined, locks[2])
    ])
    t.same(stored, [true, false, true])
    t.same(locks.map((lock) => lock.released), [true, true, true], 'each lock let go, stored or refused')
    t.equal(await client.exists(...locks.map((lock) => lock.key)), 0)
    t.same((await store.invalidateTags(['batch-b'])).keys.sort(), [key('wt1'), key('wt2')], 'each filed under its own tags')
  })

  t.test('over maxmemory, a batch that lets go of a lock stores nothing past the limit', async (t) => {
    const lock = { key: `${prefix}:#lock:oom`, token: 'mine', released: false }
    t.equal(await store.acquireLock(lock.key, 'mine', 60_000), true)
    // Far over the limit whatever the server holds: every write that may grow memory is refused.
    await server.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
    await server.cli('CONFIG', 'SET', 'maxmemory', '1')
    t.teardown(() => server.cli('CONFIG', 'SET', 'maxmemory', '0'))
    const large = Buffer.alloc(200 * 1024, 'x')
    const results = await Promise.allSettled([
      store.set(key('oom1'), value('small'), 30, [], undefined, lock),
      store.set(key('oom2'), large, 30, []),
      store.set(key('oom3'), large, 30, [])
    ])
    t.same(results.map((r) => r.status === 'rejected' && /^OOM/.test((r.reason as Error).message)), [true, true, true], 'refused, each with OOM')
    t.equal(await client.exists(key('oom1'), key('oom2'), key('oom3'), lock.key), 0, 'nothing stored; the lock let go all the same')
  })

  t.test('an ACL that denies one write\'s keys fails that write alone', async (t) => {
    await server.cli('ACL', 'SETUSER', 'batch', 'on', '>secret', `~${prefix}:a:ok*`, `~${prefix}:#*`, '+@all')
    t.teardown(() => server.cli('ACL', 'DELUSER', 'batch'))
    const limited = redisClient(t, server.url.replace('redis://', 'redis://batch:secret@'))
    await ready(limited)
    const confined = new RedisStore(limited, new KeyLayout(prefix))
    const results = await Promise.allSettled([
      confined.set(key('ok1'), value('1'), 30, []),
      confined.set(key('denied'), value('2'), 30, []),
      confined.set(key('ok2'), value('3'), 30, [])
    ])
    t.same(results.map((r) => r.status === 'fulfilled' ? r.value : (r.reason as Error).message.slice(0, 6)), [true, 'NOPERM', true])
    t.same(await client.mgetBuffer(key('ok1'), key('ok2')), [value('1'), value('3')])
  })

  t.test('locks belong to their owner', async (t) => {
    const lock = `${prefix}:#lock:x`
    t.equal(await store.acquireLock(lock, 'owner', 60_000), true)
    t.equal(await store.acquireLock(lock, 'other', 60_000), false, 'held')
    await store.releaseLock(lock, 'other')
    t.equal(await client.get(lock), 'owner', 'only the owner can release')
    t.ok(await client.pttl(lock) > 50_000, 'nor shorten it')
    await store.releaseLock(lock, 'owner')
    t.equal(await client.exists(lock), 0)
    await store.releaseLock(lock, 'owner')
    t.pass('releasing a lock no longer held is harmless')
    t.equal(await store.acquireLock(lock, 'other', 50), true)
    await until(() => store.acquireLock(lock, 'third', 60_000), EXPIRY_WAIT_MS, 'the 50 ms lock to expire')
    t.equal(await client.get(lock), 'third', 'an expired lock is free')
  })

  t.test('readOrClaim: one script per turn reads and, unless fresh, takes the lock', async (t) => {
    const fresh = writeEnvelope(ENCODING_PLAIN, KIND_VALUE, { storedAt: Date.now(), freshFor: 60 }, value('fresh'))
    const stale = writeEnvelope(ENCODING_PLAIN, KIND_VALUE, { storedAt: Date.now() - 120_000, freshFor: 60 }, value('stale'))
    await client.set(key('c-fresh'), fresh)
    await client.set(key('c-stale'), stale)
    await client.set(key('c-foreign'), 'foreign')
    await client.hset(key('c-hash'), 'f', 'v')
    await client.set(`${prefix}:#lock:c-held`, 'someone')
    const claim = (name: string, graceMs = 0): { lockKey: string, lockMs: number, graceMs: number } => ({ lockKey: `${prefix}:#lock:${name}`, lockMs: 60_000, graceMs })
    const [freshRead, staleRead, foreign, hash, missing, again, held] = await Promise.all([
      store.readOrClaim(key('c-fresh'), undefined, claim('c-fresh')),
      store.readOrClaim(key('c-stale'), undefined, claim('c-stale')),
      store.readOrClaim(key('c-foreign'), undefined, claim('c-foreign')),
      store.readOrClaim(key('c-hash'), undefined, claim('c-hash')),
      store.readOrClaim(key('c-missing'), undefined, claim('c-missing')),
      store.readOrClaim(key('c-missing'), undefined, claim('c-missing')),
      store.readOrClaim(key('c-held'), undefined, claim('c-held'))
    ])
    t.same(freshRead, { bytes: fresh, lock: undefined }, 'a fresh entry: no lock asked for')
    t.same(await store.readOrClaim(key('c-stale'), undefined, claim('c-grace', 120_000)), { bytes: stale, lock: undefined }, 'a stale entry within its grace: none either')
    t.equal(await client.exists(claim('c-grace').lockKey), 0)
    t.same(staleRead.bytes, stale)
    t.equal(staleRead.lock?.key, claim('c-stale').lockKey, 'a stale entry: the lock is taken')
    t.equal(await client.get(claim('c-stale').lockKey), staleRead.lock?.token)
    t.same(foreign.bytes, Buffer.from('foreign'))
    t.ok(foreign.lock, 'foreign bytes are not fresh')
    t.same(hash, { bytes: null, lock: hash.lock }, 'a key of another type reads as no entry')
    t.ok(hash.lock)
    t.equal(missing.bytes, null)
    t.ok(missing.lock, 'a missing entry: the lock is taken')
    t.same(again, { bytes: null, lock: null }, 'asked twice in one turn: the second finds it held')
    t.same(held, { bytes: null, lock: null }, 'held by another')

    t.same(await store.readOrClaim(key('c-fresh'), undefined, undefined), { bytes: fresh, lock: undefined }, 'no claim: a plain read')
    t.same(await store.readOrClaim(key('c-hash'), 'f', claim('c-hash2')), { bytes: Buffer.from('v'), lock: undefined }, 'a field: a plain read')
    t.equal(await client.exists(claim('c-hash2').lockKey), 0)

    await client.script('FLUSH')
    const reloaded = await store.readOrClaim(key('c-fresh'), undefined, claim('c-fresh'))
    t.same(reloaded.bytes, fresh, 'a server that forgot the script gets it again')

    const down = redisClient(t, server.url)
    await ready(down)
    const offline = new RedisStore(down, new KeyLayout(prefix))
    down.disconnect()
    const failed = await Promise.allSettled([offline.readOrClaim(key('x'), undefined, claim('x')), offline.readOrClaim(key('y'), undefined, claim('y'))])
    t.same(failed.map((r) => r.status), ['rejected', 'rejected'], 'a failed script fails every read in it')
  })

  t.test('a write releases the lock its work held, stored or refused, and only if still held', async (t) => {
    const lock = `${prefix}:#lock:w`
    const held = { key: lock, token: 'mine', released: false }
    t.equal(await store.acquireLock(lock, 'mine', 60_000), true)
    t.equal(await store.set(key('w1'), value('one'), 30, [], undefined, held), true)
    t.equal(await client.exists(lock), 0, 'released by the write')
    t.equal(held.released, true)

    const again = { key: lock, token: 'mine', released: false }
    t.equal(await store.acquireLock(lock, 'other', 60_000), true)
    await store.set(key('w1'), value('two'), 30, [], undefined, again)
    t.equal(await client.get(lock), 'other', 'another holder\'s lock stays')
    await client.del(lock)

    const refused = { key: lock, token: 'mine', released: false }
    t.equal(await store.acquireLock(lock, 'mine', 60_000), true)
    await store.delete([key('w2')])
    const old = writeEnvelope(ENCODING_PLAIN, KIND_VALUE, { storedAt: Date.now() - 10_000, freshFor: 30 }, value('x'))
    t.equal(await store.set(key('w2'), old, 30, [], undefined, refused), false, 'work overtaken by the delete')
    t.equal(await client.exists(lock), 0, 'released all the same')

    const noScripts = new RedisStore(client, new KeyLayout(prefix))
    noScripts.scripting = false
    const plain = { key: lock, token: 'mine', released: false }
    t.equal(await store.acquireLock(lock, 'mine', 60_000), true)
    t.equal(await noScripts.set(key('w3'), value('three'), 30, [], undefined, plain), true)
    t.equal(plain.released, false, 'without scripts the caller releases it')
    t.equal(await client.get(lock), 'mine')
    await client.del(lock)
  })

  t.test('a tag index lives as long as its longest-lived entry', async (t) => {
    const tag = `${prefix}:#ti:lifetime`
    await store.set(key('l1'), value('1'), 60, ['lifetime'])
    await store.set(key('l2'), value('2'), 30, ['lifetime'])
    t.ok(await client.ttl(tag) > 30, 'a shorter-lived entry does not shorten it')
    await store.set(key('l3'), value('3'), 600, ['lifetime'])
    t.ok(await client.ttl(tag) > 60, 'a longer-lived one extends it')
    t.same((await store.invalidateTags(['lifetime'])).removed, 3)
  })

  t.test('a reply error from a script is passed on', async (t) => {
    await client.set(`${prefix}:#ti:wrongtype`, 'a string, not a sorted set')
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

  const clusterClient = async (t: tap.Test): Promise<Cluster> => {
    const client = new Cluster(cluster.startupNodes, { enableAutoPipelining: true, redisOptions: { maxRetriesPerRequest: 1 } })
    client.on('error', () => {})
    t.teardown(() => client.disconnect())
    await ready(client)
    return client
  }

  storeSuite(t, 'redis store on a cluster', {
    kind: 'redis',
    make: async (t, over) => new RedisStore(await clusterClient(t), over)
  })

  t.test('entries on every master: multi-key commands, tags, clear and info reach them all', async (t) => {
    const keyLayout = new KeyLayout(uniquePrefix())
    const store = new RedisStore(await clusterClient(t), keyLayout)
    const entry = (k: string): string => keyLayout.entry(k, k.length === 2 ? 'short' : 'long')
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`)
    for (const k of keys) await store.set(entry(k), value(k), 60, [`tag${k.length}`])
    const spread = await Promise.all(cluster.nodes.map(async (node) => {
      const found = await node.cli('--scan', '--pattern', `${keyLayout.prefix}:*`)
      return found === '' ? 0 : found.split('\n').length
    }))
    t.ok(spread.every((n) => n > 0), `keys on every master (${spread.join(', ')})`)

    t.same(await store.get(entry('k5')), value('k5'))
    t.equal(await store.exists(keys.slice(0, 10).map(entry)), 10, 'multi-key exists across slots')
    t.equal(await store.delete(['k0', 'k1'].map(entry).concat(keyLayout.entry('k10', 'short'))), 2, 'multi-key delete across slots')
    t.equal((await store.invalidateTags(['tag2'])).removed, 8, 'tag members on several nodes')
    t.equal(await store.clear('long'), 20, 'clear scans every master')
    await store.set(keyLayout.entry('x', 'default'), value('1'), 60, [])
    await store.set(keyLayout.entry('y', 'other'), value('2'), 60, [])
    t.equal(await store.clear(), 2)
    t.equal((await store.hitWindow('ip', 10)).count, 1)
    await t.resolves(store.ping())
    const info = await store.info()
    t.match(info, { store: 'redis', redisVersion: /^\d/, usedMemoryHuman: null, usedMemory: Number, connectedClients: Number })
    t.ok((info.connectedClients ?? 0) >= 3, 'summed over the masters')
    t.equal(store.connected, true)
  })

  t.test('a standalone client in cluster mode is refused by the nodes', async (t) => {
    // Sanity check that the cluster really is one: a plain client gets MOVED for foreign slots.
    const plain = new Redis(cluster.startupNodes[0].port, '127.0.0.1')
    t.teardown(() => plain.disconnect())
    const replies = await Promise.allSettled(['a', 'b', 'c', 'd', 'e'].map((k) => plain.get(k)))
    t.ok(replies.some((r) => r.status === 'rejected' && /MOVED/.test(String(r.reason))))
  })
})
