// The whole plugin on a real 3-master Redis Cluster (redis-cli --cluster create), through
// `redis: { cluster: { nodes } }` and through a Cluster client the application passes in: every
// fastify.cache method with keys on all three masters, route caching and busting, the
// cross-instance lock, the local tier's Pub/Sub, and a master that dies and comes back under load.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import fastifyRedisCache, { RateLimitError } from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { KeyLayout } from '../lib/keys'
import { InvalidationBus } from '../lib/bus/invalidation-bus'
import { SegmentCache } from '../lib/local/segment-cache'
import { TieredStore } from '../lib/stores/tiered'
import { Statistics } from '../lib/statistics'
import { RedisStore } from '../lib/stores/redis'
import type { CacheOptions } from '../types'
import { captureLogs, innerStore, sleep, uniquePrefix, until } from './helpers/app'
import { startCluster, type RedisCluster } from './helpers/redis-server'

/** How long a condition may take to come true on a loaded machine; nothing here asserts time. */
const PATIENCE = 30_000

let cluster: RedisCluster
t.before(async () => { cluster = await startCluster() })
t.teardown(() => cluster?.stop())

interface App {
  app: FastifyInstance
  cache: CacheManager
}

let version = 1
let reportRuns = 0

async function app (t: tap.Test, options: CacheOptions): Promise<App> {
  const logs = captureLogs()
  const instance = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(() => instance.close())
  // A busy machine may take longer than the default 500 ms command timeout for a Cluster round
  // trip; these tests are about results, so they wait (the fault test sets its own timeout).
  await instance.register(fastifyRedisCache, { routes: false, commandTimeout: PATIENCE, ...options })
  instance.get('/products/:id', {
    config: { cache: { ttl: 60, namespace: 'products', tags: (request) => [`product:${(request.params as { id: string }).id}`, 'products'] } }
  }, async (request) => ({ id: (request.params as { id: string }).id, version }))
  instance.get('/products', { config: { cache: { ttl: 60, namespace: 'products', key: 'list' } } }, async () => ({ list: true, version }))
  instance.put('/products/:id', {
    config: { cache: { bust: { namespace: 'products', keys: ['list'], tags: (request) => [`product:${(request.params as { id: string }).id}`] } } }
  }, async () => { version++; return { ok: true } })
  instance.delete('/products', { config: { cache: { bust: { namespace: 'products' } } } }, async () => { version++; return { ok: true } })
  instance.get('/greeting', { config: { cache: { ttl: 60, vary: ['accept-language'] } } }, async (request) => ({ lang: request.headers['accept-language'] ?? null }))
  instance.get('/report', { config: { cache: { ttl: 60 } } }, async () => {
    reportRuns++
    await sleep(200)
    return { version }
  })
  await instance.ready()
  return { app: instance, cache: instance.cache as CacheManager }
}

/** How many keys under `prefix` each master holds. */
async function spread (prefix: string): Promise<number[]> {
  return Promise.all(cluster.nodes.map(async (node) => {
    const keys = await node.cli('--scan', '--pattern', `${prefix}:*`)
    // The stamps of clears outlive them on purpose (docs/invalidation.md).
    return keys === '' ? 0 : keys.split('\n').filter((key) => !key.startsWith(`${prefix}:#ns:`) && key !== `${prefix}:#all`).length
  }))
}

async function exercise (t: tap.Test, { app: instance, cache }: App): Promise<void> {
  const prefix = cache.core.layout.prefix
  const keys = Array.from({ length: 60 }, (_, i) => `key-${i}`)
  for (const key of keys) t.equal(await cache.set(key, { key }, { namespace: 'a', tags: [`t${key.length}`] }), true)
  for (const key of keys.slice(0, 20)) await cache.set(key, key, { namespace: 'b' })
  const perNode = await spread(prefix)
  t.ok(perNode.every((n) => n > 0), `keys on every master (${perNode.join(', ')})`)

  t.same(await cache.get('key-7', { namespace: 'a' }), { key: 'key-7' })
  t.equal(await cache.exists(keys, { namespace: 'a' }), 60, 'multi-key exists across slots')
  t.equal(await cache.exists(['key-1', 'missing-1', 'missing-2'], { namespace: 'a' }), 1)
  t.equal(await cache.delete(['key-0', 'key-1', 'key-2', 'nothing'], { namespace: 'a' }), 3, 'multi-key delete across slots')
  t.equal(await cache.expire('key-3', 500, { namespace: 'a' }), true)
  t.equal(await cache.ttl('key-3', { namespace: 'a' }), 500)
  t.equal(await cache.ttl('key-0', { namespace: 'a' }), -2)

  // Tags: key-3..key-9 have 5 characters (tag t5), key-10.. have 6 (tag t6).
  t.equal(await cache.invalidateTags(['t5']), 7, 'tag members spread over the masters')
  t.equal(await cache.exists(['key-3', 'key-9'], { namespace: 'a' }), 0)
  t.equal(await cache.invalidateTags(['t5', 'missing']), 0)

  t.equal(await cache.clear('b'), 20, 'clear(namespace) scans every master')
  t.equal(await cache.exists(keys.slice(10, 20), { namespace: 'a' }), 10, 'other namespaces untouched')
  t.equal(await cache.exists(keys.slice(0, 20), { namespace: 'b' }), 0)

  // getOrSet with the cross-instance lock (its key is in another slot than the entry).
  let runs = 0
  const values = await Promise.all([1, 2, 3].map(() => cache.getOrSet('computed', async () => { runs++; await sleep(50); return 'v' })))
  t.same(values, ['v', 'v', 'v'])
  t.equal(runs, 1)
  t.same(await spread(`${prefix}:#lock`), [0, 0, 0], 'the lock was released')

  // Rate limits, one window per id wherever it hashes.
  for (const id of ['alice', 'bob', 'carol']) {
    t.same(await cache.rateLimit(id, { max: 2, window: 30 }), { limit: 2, remaining: 1, reset: 30 })
    t.equal((await cache.rateLimit(id, { max: 2, window: 30 })).remaining, 0)
    await t.rejects(cache.rateLimit(id, { max: 2, window: 30 }), RateLimitError)
  }

  // Route caching and busting.
  const first = await instance.inject('/products/1')
  t.equal(first.headers['x-cache'], 'MISS')
  // On a Cluster the entry and its tags' bookkeeping are written node by node, not awaited by
  // the response: a request sent before they all land waits for them (a MISS), or misses.
  await until(async () => (await instance.inject('/products/1')).headers['x-cache'] === 'HIT', PATIENCE, 'the entry to be stored')
  await instance.inject('/products/2')
  await instance.inject('/products')
  await until(async () => (await instance.inject('/products')).headers['x-cache'] === 'HIT', PATIENCE, 'the list to be stored')
  t.equal((await instance.inject({ method: 'PUT', url: '/products/1' })).statusCode, 200)
  t.equal((await instance.inject('/products/1')).headers['x-cache'], 'MISS', 'busted by tag')
  t.equal((await instance.inject('/products')).headers['x-cache'], 'MISS', 'busted by key')
  t.equal((await instance.inject('/products/2')).headers['x-cache'], 'HIT', 'others stay')
  t.equal(await cache.invalidateTags('products'), 2, 'route tags')
  await instance.inject('/products/3')
  t.equal((await instance.inject({ method: 'DELETE', url: '/products' })).statusCode, 200)
  t.equal((await instance.inject('/products/3')).headers['x-cache'], 'MISS', 'a namespace bust clears every master')

  // A route with vary keeps its variants in one hash at the route's key.
  for (const lang of ['en', 'fr', 'de']) {
    t.equal((await instance.inject({ url: '/greeting', headers: { 'accept-language': lang } })).headers['x-cache'], 'MISS')
  }
  const variant = await instance.inject({ url: '/greeting', headers: { 'accept-language': 'fr' } })
  t.equal(variant.headers['x-cache'], 'HIT')
  t.same(variant.json(), { lang: 'fr' })
  t.equal(await cache.delete('localhost:80/greeting'), 1, 'one delete reaches every variant')
  t.equal((await instance.inject({ url: '/greeting', headers: { 'accept-language': 'en' } })).headers['x-cache'], 'MISS')

  const info = await cache.info()
  t.match(info, { store: 'redis', redisVersion: /^\d/, usedMemoryHuman: null })
  t.ok((info.connectedClients ?? 0) >= 3, 'connected clients summed over the masters')
  t.ok((info.usedMemory ?? 0) > 0)
  t.equal(await cache.ping(), true)
  t.match(cache.getStatistics(), { store: 'redis', connected: true, circuit: 'closed' })

  const removed = await cache.clear()
  t.ok(removed >= 40, `clear() removed ${removed} entries`)
  t.same(await spread(prefix), [0, 0, 0], 'nothing left under the prefix on any master, tag sets and windows included')
}

t.test('redis: { cluster: { nodes } }', async (t) => {
  const built = await app(t, { redis: { cluster: { nodes: cluster.startupNodes } }, prefix: uniquePrefix('cl') })
  t.ok(innerStore(built.cache) && (built.app.redis.cache as unknown as Cluster).isCluster, 'a Cluster client')
  await exercise(t, built)
})

t.test('redis: { client: new Cluster(...), closeClient: true }', async (t) => {
  const client = new Cluster(cluster.startupNodes)
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const built = await app(t, { redis: { client, closeClient: true }, prefix: uniquePrefix('cc'), commandTimeout: 1000 })
  await exercise(t, built)
  await built.app.close()
  await until(() => client.status === 'end', PATIENCE, 'the client to end')
  t.pass('closed with the app')
})

t.test('cross-instance single-flight on the Cluster', async (t) => {
  const prefix = uniquePrefix('clf')
  const apps = await Promise.all([1, 2, 3].map(() => app(t, { redis: { cluster: { nodes: cluster.startupNodes } }, prefix })))
  let runs = 0
  const callback = async (): Promise<number> => { runs++; await sleep(200); return 7 }
  const answers = await Promise.all(apps.flatMap(({ cache }) => [cache.getOrSet('shared', callback), cache.getOrSet('shared', callback)]))
  t.same(answers, [7, 7, 7, 7, 7, 7])
  t.equal(runs, 1)
  version = 100
  reportRuns = 0
  const pages = await Promise.all(apps.flatMap(({ app: instance }) => [instance.inject('/report'), instance.inject('/report')]))
  t.ok(pages.every((p) => p.statusCode === 200 && p.json().version === 100))
  t.equal(reportRuns, 1, 'one handler run for 6 requests on 3 instances')
  t.equal(pages.filter((p) => String(p.headers['cache-status']).includes('collapsed')).length, 5)
})

/** Two instances with the local tier on the Cluster, once a change on `a` reaches `b`'s tier. */
async function coherentPair (t: tap.Test): Promise<{ a: App, b: App, localB: SegmentCache }> {
  const options: CacheOptions = { redis: { cluster: { nodes: cluster.startupNodes } }, prefix: uniquePrefix('cll'), local: {} }
  const a = await app(t, options)
  const b = await app(t, options)
  t.ok(b.cache.core.stack.local)
  const localB = b.cache.core.stack.local as SegmentCache
  await until(async () => {
    await a.cache.set('probe', Date.now())
    await sleep(20)
    await b.cache.get('probe')
    await a.cache.set('probe', Date.now())
    await sleep(50)
    return localB.get(b.cache.redisKey('probe')) === undefined
  }, PATIENCE, 'the invalidation channel')
  return { a, b, localB }
}

/** Checks that `change` on `a` drops `b`'s local copy of `key` (how fast: `npm run chaos`). */
async function dropsOnChange (t: tap.Test, { a, b, localB }: { a: App, b: App, localB: SegmentCache }, what: string, key: string, change: () => Promise<unknown>): Promise<void> {
  await a.cache.set(key, 'v1', { tags: [`tag-${key}`] })
  const fullKey = b.cache.redisKey(key)
  // The set's own message may reach b after b's first read, and drop what that read kept.
  await until(async () => (await b.cache.get(key)) === 'v1' && localB.get(fullKey) !== undefined, PATIENCE, `b to hold ${key}`)
  await change()
  await until(() => localB.get(fullKey) === undefined, PATIENCE, `${what} to reach b`)
  t.pass(`${what}: b's copy dropped`)
}

t.test('the local tier stays coherent over Cluster Pub/Sub', async (t) => {
  const pair = await coherentPair(t)
  const { a, b } = pair
  await dropsOnChange(t, pair, 'set', 'k1', () => a.cache.set('k1', 'v2'))
  await until(async () => (await b.cache.get('k1')) === 'v2', PATIENCE, 'b to read the new value')
  await dropsOnChange(t, pair, 'delete', 'k2', () => a.cache.delete('k2'))
  await dropsOnChange(t, pair, 'tags', 'k3', () => a.cache.invalidateTags('tag-k3'))
  await dropsOnChange(t, pair, 'clear', 'k4', () => a.cache.clear('default'))
})

t.test('the local tier is flushed when its Cluster subscription drops, and kept coherent after', async (t) => {
  const pair = await coherentPair(t)
  const { a, b, localB } = pair
  await b.cache.set('k', 'v')
  t.equal(localB.describe().entries, 1)
  // Every node drops its Pub/Sub connections: messages may be missed until the tier subscribes
  // through a node again, so it flushes then.
  await Promise.all(cluster.nodes.map((node) => node.cli('client', 'kill', 'type', 'pubsub')))
  await until(() => localB.describe().entries === 0, PATIENCE, 'the flush')
  // Subscribed again: invalidations flow.
  await until(async () => {
    await b.cache.get('again')
    await a.cache.set('again', Date.now())
    await sleep(50)
    return localB.get(b.cache.redisKey('again')) === undefined
  }, PATIENCE, 'the resubscription')
  await dropsOnChange(t, pair, 'set after the resubscription', 'k5', () => a.cache.set('k5', 'v2'))
})

t.test('on a Cluster not connected yet, the tier subscribes once it is', async (t) => {
  const client = new Cluster(cluster.startupNodes, { lazyConnect: true })
  client.on('error', () => {})
  // Closed before the cluster stops: a client left open retries its nodes forever.
  t.teardown(() => client.disconnect())
  const prefix = uniquePrefix('cllz')
  const local = new SegmentCache({ maxEntries: 10, maxBytes: 1024 * 1024, ttl: 60 }, new Statistics())
  const { log } = Fastify({ logger: { level: 'warn', stream: captureLogs().stream } })
  const tiered = new TieredStore(new RedisStore(client, new KeyLayout(prefix)), local, prefix)
  const bus = tiered.bus = new InvalidationBus(client, prefix, tiered, log)
  t.teardown(() => bus.close())
  await client.connect()
  await until(async () => {
    const subscribers = await client.nodes('master')[0].pubsub('NUMSUB', `${prefix}:#invalidate`) as [string, number]
    return subscribers[1] >= 1
  }, PATIENCE, 'the subscription')
})

t.test('a master killed and restarted under load: every request answered, hits resume', async (t) => {
  const built = await app(t, { redis: { cluster: { nodes: cluster.startupNodes } }, prefix: uniquePrefix('clk'), commandTimeout: 200, circuitBreaker: { failureThreshold: 3, resetTimeout: 300 } })
  await built.app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = built.app.server.address() as { port: number }
  const urls = Array.from({ length: 12 }, (_, i) => `http://127.0.0.1:${port}/products/${i}`)
  for (const url of urls) await fetch(url).then((res) => res.arrayBuffer())

  const samples: Array<{ start: number, end: number, status: number, cache: string | null }> = []
  const flag = { running: true }
  const deadline = Date.now() + 5 * PATIENCE
  const workers = Array.from({ length: 8 }, async (_, w) => {
    let i = w
    while (flag.running && Date.now() < deadline) {
      const start = Date.now()
      try {
        const res = await fetch(urls[i++ % urls.length], { signal: AbortSignal.timeout(5000) })
        await res.arrayBuffer()
        samples.push({ start, end: Date.now(), status: res.status, cache: res.headers.get('x-cache') })
      } catch {
        samples.push({ start, end: Date.now(), status: 0, cache: null })
      }
    }
  })
  await until(() => samples.filter((s) => s.cache === 'HIT').length > 20, PATIENCE, 'hits before the fault')
  const victim = cluster.nodes[1]
  const killedAt = Date.now()
  await victim.kill()
  await until(() => samples.filter((s) => s.start > killedAt).length >= 20, PATIENCE, 'requests while the master is dead')
  const restartedAt = Date.now()
  await victim.restart()
  await until(async () => (await victim.cli('cluster', 'info')).includes('cluster_state:ok'), PATIENCE, 'the cluster to be whole again')
  await until(() => samples.some((s) => s.start > restartedAt && s.cache === 'HIT'), PATIENCE, 'hits after the restart')
  // Every master answers again: the keys of the restarted one are gone (no persistence), so
  // they are stored anew and hit.
  await until(() => {
    const recent = samples.filter((s) => s.start > restartedAt).slice(-20)
    return recent.length === 20 && recent.every((s) => s.cache === 'HIT')
  }, PATIENCE, 'hits on every master')
  flag.running = false
  await Promise.all(workers)

  const failed = samples.filter((s) => s.status < 200 || s.status > 299)
  t.equal(failed.length, 0, `no failed request out of ${samples.length}`)
  const during = samples.filter((s) => s.start > killedAt && s.start < restartedAt)
  t.ok(during.length > 0, `${during.length} requests while a master was dead`)
  t.comment(`slowest request while a master was dead: ${Math.max(...during.map((s) => s.end - s.start))} ms`)
})
