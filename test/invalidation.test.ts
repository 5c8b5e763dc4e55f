// Invalidation guarantees (API.md): an invalidation that returned is never undone, not by a Redis
// that refused it for a while, not by work that began before it, not by Redis evicting the
// bookkeeping. Real redis-server processes throughout; nothing here asserts timing.
import t from 'tap'
import { MAX_VARIANTS } from '../lib/stores/redis-write-batch'
import { build, innerStore, rawClient, type Scope, uniquePrefix, until } from './helpers/app'
import { routeApp } from './helpers/route-app'
import { type RedisServer, startRedis } from './helpers/redis-server'

let server: RedisServer

t.before(async () => {
  server = await startRedis()
})
t.teardown(() => server.stop())

/** A promise and the function that settles it: work held open until the test says so. */
function gate (): { opened: Promise<void>, open: () => void } {
  let open!: () => void
  const opened = new Promise<void>((resolve) => { open = resolve })
  return { opened, open }
}

/**
 * Redis refuses every write of the default user (NOPERM) and still answers reads: the old entry
 * stays readable while the invalidation cannot land. Until `allowWrites`.
 */
async function refuseWrites (t: Scope): Promise<void> {
  await server.cli('acl', 'setuser', 'default', '-@write')
  t.teardown(allowWrites)
}

async function allowWrites (): Promise<void> {
  await server.cli('acl', 'setuser', 'default', '+@all')
}

async function twoInstances (t: Scope, prefix = uniquePrefix()) {
  const options = { redis: { url: server.url }, prefix }
  return [await build(t, options), await build(t, options)] as const
}

type Invalidation = [string, (cache: Awaited<ReturnType<typeof build>>['cache']) => Promise<number>]
const INVALIDATIONS: Invalidation[] = [
  ['delete', (cache) => cache.delete('k', { namespace: 'ns' })],
  ['invalidateTags', (cache) => cache.invalidateTags('t')],
  ['clear(namespace)', (cache) => cache.clear('ns')],
  ['clear()', (cache) => cache.clear()]
]

t.test('an invalidation Redis refuses for a while is kept, retried, and honoured meanwhile', async (t) => {
  for (const [name, invalidate] of INVALIDATIONS) {
    t.test(name, async (t) => {
      const [a, b] = await twoInstances(t)
      t.equal(await a.cache.set('k', 'old', { namespace: 'ns', tags: ['t'] }), true)
      await refuseWrites(t)
      t.equal(await invalidate(a.cache), 0, 'nothing removed yet')
      t.ok(a.cache.getStatistics().invalidationsPending >= 1, 'the invalidation is pending')
      t.equal(await a.cache.get('k', { namespace: 'ns' }), null, 'the instance that made it never serves the old value')
      t.ok(a.cache.getStatistics().invalidatedReads >= 1, 'the refused read is counted')
      t.ok(a.logs.find('kept and retried').length >= 1, 'and said once')
      await allowWrites()
      await until(() => a.cache.getStatistics().invalidationsPending === 0, 10_000, 'the retry')
      t.ok(a.cache.getStatistics().invalidationsRetried >= 1)
      t.equal(await b.cache.get('k', { namespace: 'ns' }), null, 'other instances see it once Redis took it')
      t.equal(await a.cache.set('k', 'new', { namespace: 'ns', tags: ['t'] }), true, 'later writes are stored')
      t.equal(await b.cache.get('k', { namespace: 'ns' }), 'new')
    })
  }
})

t.test('an invalidation while Redis hangs (SIGSTOP) lands once it is back', async (t) => {
  const hung = await startRedis()
  t.teardown(() => hung.stop())
  const { cache } = await build(t, { redis: { url: hung.url }, prefix: uniquePrefix() })
  await cache.set('k', 'old')
  hung.pause()
  await cache.delete('k')
  t.ok(cache.getStatistics().invalidationsPending >= 1)
  hung.resume()
  t.equal(await cache.get('k'), null, 'not served, whether the retry landed yet or not')
  await until(() => cache.getStatistics().invalidationsPending === 0, 15_000, 'the retry')
  t.equal(await hung.cli('exists', cache.redisKey('k')), '0', 'gone from Redis')
})

t.test('work that began before an invalidation never stores its result after it', async (t) => {
  t.test('getOrSet on another instance (Redis refuses the write)', async (t) => {
    const [a, b] = await twoInstances(t)
    const held = gate()
    let started!: () => void
    const running = new Promise<void>((resolve) => { started = resolve })
    const slow = b.cache.getOrSet('k', async () => { started(); await held.opened; return 'old' })
    await running
    await a.cache.delete('k')
    held.open()
    t.equal(await slow, 'old', 'its caller still gets the result')
    t.equal(await a.cache.exists('k'), 0, 'but it is not stored')
    t.equal(await a.cache.getOrSet('k', () => 'new'), 'new')
  })

  for (const store of ['redis', 'memory'] as const) {
    t.test(`getOrSet on the same instance (${store})`, async (t) => {
      const { cache } = await build(t, store === 'redis' ? { redis: { url: server.url }, prefix: uniquePrefix() } : {})
      const held = gate()
      let runs = 0
      const slow = cache.getOrSet('k', async () => { runs++; await held.opened; return 'old' }, { tags: ['t'] })
      await until(() => runs === 1)
      await cache.invalidateTags('t')
      const after = cache.getOrSet('k', () => { runs++; return 'new' })
      held.open()
      t.equal(await slow, 'old')
      t.equal(await after, 'new', 'a caller after the invalidation does not join the older run')
      t.equal(await cache.get('k'), 'new')
    })
  }

  t.test('a route handler overtaken by a bust', async (t) => {
    let version = 1
    let held: ReturnType<typeof gate> | undefined
    let entered!: () => void
    const { app } = await routeApp(t, { redis: { url: server.url }, prefix: uniquePrefix() }, (app) => {
      app.get('/item', { config: { cache: { key: 'item', tags: ['item'] } } }, async () => {
        const seen = version
        if (held !== undefined) {
          entered()
          await held.opened
        }
        return { version: seen }
      })
      app.post('/item', { config: { cache: { bust: { tags: ['item'] } } } }, async () => {
        version++
        return { ok: true }
      })
    })
    held = gate()
    const inside = new Promise<void>((resolve) => { entered = resolve })
    const slow = app.inject('/item')
    await inside
    t.equal((await app.inject({ method: 'POST', url: '/item' })).statusCode, 200)
    const release = held
    held = undefined
    release.open()
    t.same((await slow).json(), { version: 1 })
    const next = await app.inject('/item')
    t.equal(next.headers['x-cache'], 'MISS', 'the old answer was not stored')
    t.same(next.json(), { version: 2 })
  })
})

t.test('tags survive the loss of their bookkeeping', async (t) => {
  t.test('an evicted index: the stamp still refuses the entries', async (t) => {
    const [a, b] = await twoInstances(t)
    for (const key of ['x', 'y', 'z']) await a.cache.set(key, key, { tags: ['t'] })
    t.equal(await b.cache.get('x'), 'x')
    await server.cli('del', `${a.cache.core.layout.tag('t')}`)
    t.equal(await a.cache.invalidateTags('t'), 0, 'nothing to count: the index is gone')
    for (const key of ['x', 'y', 'z']) {
      t.equal(await a.cache.get(key), null, `${key}: not served here`)
      await until(async () => await b.cache.get(key) === null, 10_000, `${key} refused on the other instance`)
    }
  })

  t.test('an evicted stamp: its entries count as invalidated', async (t) => {
    const prefix = uniquePrefix()
    const [a] = await twoInstances(t, prefix)
    await a.cache.set('x', 'old', { tags: ['t'] })
    await server.cli('del', a.cache.core.layout.tagStamp('t'))
    const fresh = await build(t, { redis: { url: server.url }, prefix })
    t.equal(await fresh.cache.get('x'), null, 'an entry whose tag has no stamp is not served')
    t.equal(await fresh.cache.set('x', 'new', { tags: ['t'] }), true)
    t.equal(await fresh.cache.get('x'), 'new', 'a write makes the stamp again')
  })

  t.test('under allkeys-lru, no invalidated entry is served', async (t) => {
    const tight = await startRedis({ args: ['--maxmemory', '2mb', '--maxmemory-policy', 'allkeys-lru'] })
    t.teardown(() => tight.stop())
    const { cache } = await build(t, { redis: { url: tight.url }, prefix: uniquePrefix() })
    const value = 'v'.repeat(2000)
    for (let i = 0; i < 3000; i++) await cache.set(`k${i}`, value, { tags: ['all', `g${i % 10}`], compress: false })
    t.ok(cache.getStatistics().sets > 0)
    t.ok(Number((await tight.cli('info', 'stats')).match(/evicted_keys:(\d+)/)?.[1]) > 0, 'Redis evicted keys')
    await cache.invalidateTags('all')
    let served = 0
    for (let i = 0; i < 3000; i++) if (await cache.get(`k${i}`) !== null) served++
    t.equal(served, 0, 'no entry that carried the tag is served')
  })
})

t.test('bookkeeping stays bounded by the live entries', async (t) => {
  for (const scripting of [true, false]) {
    t.test(`a tag index drops members that expired (${scripting ? 'one script' : 'command by command'})`, async (t) => {
      const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
    ;(innerStore(cache) as { scripting: boolean }).scripting = scripting
      const raw = rawClient(t, server.url)
      // A long-lived entry first: the index outlives the short ones, so only pruning empties it.
      await cache.set('long', 1, { ttl: 60, tags: ['t'] })
      for (let i = 0; i < 20; i++) await cache.set(`short${i}`, i, { ttl: 1, tags: ['t'] })
      await until(async () => await raw.exists(cache.redisKey('short19')) === 0, 10_000, 'the entries to expire')
      // Each write prunes what has expired by its clock: write until the last short one has.
      await until(async () => {
        await cache.set('long', 1, { ttl: 60, tags: ['t'] })
        return (await raw.zrange(cache.core.layout.tag('t'), '0', '-1')).length === 1
      }, 5000, 'the index to be pruned')
      t.same(await raw.zrange(cache.core.layout.tag('t'), '0', '-1'), [cache.redisKey('long')])
    })
  }

  t.test('a large tag is invalidated in batches', async (t) => {
    // Generous timeouts: a busy machine must not turn 5,000 writes into failures.
    const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), commandTimeout: 10_000 })
    const raw = rawClient(t, server.url)
    for (let i = 0; i < 5000; i += 250) {
      await Promise.all(Array.from({ length: 250 }, (_, j) => cache.set(`k${i + j}`, i + j, { tags: ['big'] })))
    }
    t.equal(await cache.invalidateTags('big'), 5000)
    t.equal(await raw.exists(cache.core.layout.tag('big')), 0, 'the index is emptied')
    t.equal(cache.getStatistics().errors, 0)
  })

  t.test('a route keeps at most MAX_VARIANTS variants of one entry', async (t) => {
    const { app, cache } = await routeApp(t, { redis: { url: server.url }, prefix: uniquePrefix() }, (app) => {
      app.get('/v', { config: { cache: { key: 'v', vary: ['x-variant'] } } }, async (request) => ({ v: request.headers['x-variant'] }))
    })
    const raw = rawClient(t, server.url)
    for (let i = 0; i < MAX_VARIANTS + 6; i++) await app.inject({ url: '/v', headers: { 'x-variant': String(i) } })
    const fields = await raw.hlen(cache.redisKey('v'))
    t.ok(fields > 0 && fields <= MAX_VARIANTS, `${fields} variants kept`)
  })

  t.test('pending deletes past the bound become a clear of their namespace', async (t) => {
    const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
    await cache.set('other', 'old', { namespace: 'big' })
    await refuseWrites(t)
    const keys = Array.from({ length: 10_001 }, (_, i) => `k${i}`)
    await cache.delete(keys, { namespace: 'big' })
    t.equal(cache.getStatistics().invalidationsPending, 1, 'one clear instead of 10,001 deletes')
    t.equal(await cache.get('other', { namespace: 'big' }), null, 'which covers the rest of the namespace')
    t.equal(await cache.get('other', { namespace: 'big' }), null, 'not even once Redis reads it back')
    await allowWrites()
    await until(() => cache.getStatistics().invalidationsPending === 0, 10_000, 'the clear')
    t.equal(await cache.exists('other', { namespace: 'big' }), 0)
  })
})

t.test('without scripting (a locked-down Redis), writes go command by command and stay bounded', async (t) => {
  const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
  const store = innerStore(cache)
  t.ok('scripting' in store)
  ;(store as { scripting: boolean }).scripting = false
  const raw = rawClient(t, server.url)
  t.equal(await cache.set('k', 'v', { tags: ['t'] }), true)
  t.equal(await cache.get('k'), 'v')
  const key = cache.redisKey('variants')
  const entryOf = (i: number): Buffer => Buffer.from(`v${i}`)
  for (let i = 0; i < MAX_VARIANTS + 3; i++) t.equal(await store.set(key, entryOf(i), 60, [], `f${i}`), true)
  const fields = await raw.hlen(key)
  t.ok(fields > 0 && fields <= MAX_VARIANTS, `${fields} variants kept`)
  await refuseWrites(t)
  await t.rejects(store.set(key, entryOf(0), 60, [], 'f0'), { message: /NOPERM/ }, 'a refused write fails, half-written or not')
  await allowWrites()
  t.equal(await cache.invalidateTags('t'), 1)
  t.equal(await cache.get('k'), null)
})

t.test('a local copy is refused once its tag is invalidated, whatever became of the index', async (t) => {
  const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), local: { maxEntries: 100 } })
  await until(() => cache.getStatistics().local?.bypassed === false, 10_000, 'the local tier')
  let runs = 0
  const load = (): Promise<number> => cache.getOrSet('k', () => ++runs, { tags: ['t'] })
  t.equal(await load(), 1)
  t.equal(await load(), 1, 'from the local tier')
  await server.cli('del', cache.core.layout.tag('t'))
  await cache.invalidateTags('t')
  t.equal(await load(), 2, 'the callback runs again')
})

t.test('pending tag invalidations past the bound become a clear of everything', async (t) => {
  const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
  await cache.set('other', 'old', { namespace: 'elsewhere' })
  await refuseWrites(t)
  await cache.invalidateTags(Array.from({ length: 10_001 }, (_, i) => `t${i}`))
  t.equal(cache.getStatistics().invalidationsPending, 1, 'one clear instead of 10,001 tags')
  t.equal(await cache.get('other', { namespace: 'elsewhere' }), null)
  await allowWrites()
  await until(() => cache.getStatistics().invalidationsPending === 0, 10_000, 'the clear')
  t.equal(await cache.exists('other', { namespace: 'elsewhere' }), 0)
})

t.test('invalidations made in one millisecond all return after it, and a write after them sticks', async (t) => {
  const { cache } = await build(t, { redis: false })
  await cache.set('a', 1, { tags: ['t'] })
  const asked = Date.now()
  const returned = await Promise.all([cache.delete('a'), cache.delete('b'), cache.invalidateTags('t')].map((done) => done.then(() => Date.now())))
  for (const at of returned) t.ok(at > asked, 'returned after the millisecond it was asked in')
  await cache.set('a', 2)
  t.equal(await cache.get('a'), 2)
})
