// A Redis that refuses part of what the cache needs, against real servers: an ACL without
// @scripting or without the invalidation channel, INFO renamed away, maxmemory reached with
// noeviction, a failover behind one address (a primary demoted to a replica answering READONLY),
// and a single-flight lock left behind by a failover. What is missing is found at start and
// reported once; what still works keeps working (rate limits included, command by command);
// a rateLimit Redis cannot count fails open, counted, unless told not to.
import { once } from 'node:events'
import t from 'tap'
import { Redis, type RedisOptions } from 'ioredis'
import { build, clientOf, innerStore, LEVEL, rawClient, until, uniquePrefix, type Built, type Scope } from './helpers/app'
import { startCluster, startRedis, type RedisServer } from './helpers/redis-server'
import { startTcpProxy } from './helpers/tcp-proxy'
import { reconnectOnReadonly } from '../lib/connection'
import { RedisConnectionError } from '../lib/errors'
import type { RedisStore } from '../lib/stores/redis'
import type { CacheOptions } from '../types'

const CAPABILITY_WARNING = 'missing Redis capabilities'
const ALL_ALLOWED = 'Redis allows every capability'

async function server (t: Scope, args: string[] = []): Promise<RedisServer> {
  const redis = await startRedis({ args })
  t.teardown(() => redis.stop())
  return redis
}

/** An ACL user `app` (password `secret`) with every right but those `rules` take away. */
async function aclUser (redis: RedisServer, ...rules: string[]): Promise<string> {
  await redis.cli('ACL', 'SETUSER', 'app', 'on', '>secret', '~*', '&*', '+@all', ...rules)
  return `redis://app:secret@${redis.host}:${redis.port}`
}

/** Waits until the capability probe has answered: a warning, or the line saying all is there. */
async function probed ({ logs }: Built): Promise<void> {
  await until(() => logs.find(CAPABILITY_WARNING, LEVEL.warn).length + logs.find(ALL_ALLOWED).length > 0, 5000, 'the capability probe')
}

function user (t: Scope, url: string, options: RedisOptions = {}): Redis {
  const client = new Redis(url, { maxRetriesPerRequest: 1, ...options })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

t.test('an ACL without @scripting: found at start, writes and rate limits go command by command', async (t) => {
  const redis = await server(t)
  const url = await aclUser(redis, '-@scripting')
  const built = await build(t, { redis: { url }, prefix: uniquePrefix() })
  const { cache, logs } = built
  await probed(built)
  const warnings = logs.find(CAPABILITY_WARNING, LEVEL.warn)
  t.equal(warnings.length, 1, 'one warning')
  t.match(warnings[0].msg, /scripting \(writes, rate-limit windows and lock releases go command by command/)
  t.notMatch(warnings[0].msg, /info|pubsub/, 'names only what is missing')
  t.same(cache.getStatistics().missingCapabilities, ['scripting'])
  t.equal((innerStore(cache) as RedisStore).scripting, false, 'the store knows')

  t.equal(await cache.set('k', 'v', { tags: ['t'] }), true, 'writes work')
  t.equal(await cache.get('k'), 'v', 'reads work')
  t.equal(await cache.invalidateTags('t'), 1, 'tags work')
  t.same(await cache.rateLimit('ip', { max: 1, window: 30 }), { limit: 1, remaining: 0, reset: 30 })
  await t.rejects(cache.rateLimit('ip', { max: 1, window: 30 }), { name: 'RateLimitError' }, 'rate limits are enforced')
  t.ok(await redis.cli('PTTL', `${cache.core.layout.prefix}:#rl:ip`) > '0', 'the window expires')
  t.equal(await cache.getOrSet('report', () => 'built'), 'built', 'locks are taken and released')
  t.equal(await redis.cli('EXISTS', `${cache.core.layout.lockPrefix}${cache.redisKey('report')}`), '0')
  t.equal(cache.getStatistics().errors, 0)
})

t.test('a rateLimit Redis cannot count fails open and counts it', async (t) => {
  const redis = await server(t)
  const url = await aclUser(redis, '-@scripting', '-incr')
  const built = await build(t, { redis: { url }, prefix: uniquePrefix(), commandTimeout: 500 })
  const { cache, logs } = built
  await probed(built)
  for (let i = 0; i < 8; i++) {
    t.same(await cache.rateLimit('ip', { max: 1, window: 30 }), { limit: 1, remaining: 1, reset: 30 }, 'let through')
  }
  const stats = cache.getStatistics()
  t.equal(stats.rateLimitFailedOpen, 8, 'each counted')
  t.equal(stats.errors, 8, 'and counted as errors')
  t.equal(stats.circuit, 'closed', 'a refusal is an answer: the circuit stays closed')
  t.equal(logs.find('rateLimit (request let through) failed', LEVEL.warn).length, 1, 'logged once (throttled)')

  const err = await t.rejects(cache.rateLimit('ip', { max: 1, window: 30, failClosed: true }), RedisConnectionError) as unknown as RedisConnectionError
  t.match(err.message, /NOPERM/, 'failClosed rejects, saying why')
  t.equal(cache.getStatistics().rateLimitFailedOpen, 8, 'a rejected call is not counted as let through')
  t.equal(cache.getStatistics().errors, 9)
})

t.test('failClosed: false lets through even with throwOnError, which otherwise throws', async (t) => {
  const redis = await server(t)
  const url = await aclUser(redis, '-@scripting', '-incr')
  const { cache } = await build(t, { redis: { url }, prefix: uniquePrefix(), throwOnError: true })
  await t.rejects(cache.rateLimit('ip', { max: 1, window: 30 }), RedisConnectionError, 'throwOnError throws')
  t.same(await cache.rateLimit('ip', { max: 1, window: 30, failClosed: false }), { limit: 1, remaining: 1, reset: 30 })
  t.equal(cache.getStatistics().rateLimitFailedOpen, 1)
})

t.test('an ACL denying the invalidation channel, with the local tier on: pubsub is missing', async (t) => {
  const redis = await server(t)
  const url = await aclUser(redis, 'resetchannels', '&other:*')
  const built = await build(t, { redis: { url }, prefix: uniquePrefix(), local: { maxEntries: 100 } })
  await probed(built)
  t.same(built.cache.getStatistics().missingCapabilities, ['pubsub'])
  t.match(built.logs.find(CAPABILITY_WARNING, LEVEL.warn)[0].msg, /pubsub \(the local tier is bypassed\)/)
  t.equal(await built.cache.set('k', 1), true, 'the cache works')
  t.equal(await built.cache.get('k'), 1)
})

t.test('INFO renamed away: registration succeeds, the warning says so, info() reports null', async (t) => {
  const redis = await server(t, ['--rename-command', 'INFO', ''])
  const built = await build(t, { redis: { url: redis.url }, prefix: uniquePrefix() })
  const { cache, logs } = built
  await probed(built)
  t.same(cache.getStatistics().missingCapabilities, ['info'])
  t.match(logs.find(CAPABILITY_WARNING, LEVEL.warn)[0].msg, /info \(info\(\) and the server figures of the statistics report null\)/)
  t.equal(logs.find('Redis refuses INFO').length, 1, 'the ready check was dropped, once')
  t.equal(cache.getStatistics().connected, true)
  t.equal(await cache.set('k', 'v'), true)
  t.equal(await cache.get('k'), 'v')
  t.match(await cache.info(), { store: 'redis', redisVersion: null, usedMemory: null })
  t.equal(cache.getStatistics().errors, 1, 'the failed INFO is counted')
})

t.test('INFO renamed away, with a client passed in: the same', async (t) => {
  const redis = await server(t, ['--rename-command', 'INFO', ''])
  const client = user(t, redis.url, { enableOfflineQueue: false })
  const built = await build(t, { redis: { client }, prefix: uniquePrefix() })
  await probed(built)
  t.same(built.cache.getStatistics().missingCapabilities, ['info'])
  t.equal(await built.cache.set('k', 'v'), true)
})

t.test('a probe without an answer asks again on the next connection, and warns once', async (t) => {
  const redis = await server(t)
  const url = await aclUser(redis, '-@scripting')
  const client = user(t, url, { enableOfflineQueue: false, commandTimeout: 200 })
  await until(() => client.status === 'ready', 5000, 'the client')
  redis.pause()
  t.teardown(() => { try { redis.resume() } catch {} })
  const built = await build(t, { redis: { client }, prefix: uniquePrefix() })
  await until(() => built.logs.find('no answer to the capability probe').length === 1, 5000, 'the probe to time out')
  redis.resume()
  client.disconnect(true)
  await probed(built)
  t.same(built.cache.getStatistics().missingCapabilities, ['scripting'])
  const ready = once(client, 'ready')
  client.disconnect(true)
  await ready
  t.equal(await built.cache.set('k', 1), true)
  t.equal(built.logs.find(CAPABILITY_WARNING, LEVEL.warn).length, 1, 'no second probe, no second warning')
  t.same(built.cache.getStatistics().missingCapabilities, ['scripting'])
})

t.test('maxmemory reached with noeviction: rateLimit fails open, reads work, the circuit stays closed', async (t) => {
  const redis = await server(t)
  const prefix = uniquePrefix()
  const { cache, logs } = await build(t, { redis: { url: redis.url }, prefix, circuitBreaker: { failureThreshold: 3, resetTimeout: 60_000 } })
  t.equal(await cache.set('kept', 'before'), true)
  await redis.cli('CONFIG', 'SET', 'maxmemory', '1mb')
  await redis.cli('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
  const raw = rawClient(t, redis.url)
  let full = false
  for (let i = 0; i < 1000 && !full; i++) {
    full = await raw.set(`filler:${i}`, 'x'.repeat(16 * 1024)).then(() => false, (err: Error) => /^OOM/.test(err.message))
  }
  t.ok(full, 'Redis is full')

  for (let i = 0; i < 6; i++) {
    t.same(await cache.rateLimit('ip', { max: 1, window: 30 }), { limit: 1, remaining: 1, reset: 30 }, 'let through')
    t.equal(await cache.set(`new${i}`, 'x'), false, 'writes fail')
  }
  t.equal(await cache.get('kept'), 'before', 'reads still work')
  const stats = cache.getStatistics()
  t.equal(stats.rateLimitFailedOpen, 6)
  t.equal(stats.errors, 12, 'every refused write counted')
  t.equal(stats.circuit, 'closed', 'OOM does not open the circuit')
  t.ok(logs.find(/OOM/, LEVEL.warn).length >= 1, 'logged')
})

/** A primary and its replica, in sync. */
async function pair (t: Scope): Promise<[RedisServer, RedisServer]> {
  // Without the default 5 s wait for more replicas before a diskless full sync.
  const a = await server(t, ['--repl-diskless-sync-delay', '0'])
  const b = await server(t, ['--repl-diskless-sync-delay', '0'])
  await b.cli('REPLICAOF', a.host, String(a.port))
  await until(async () => (await b.cli('INFO', 'replication')).includes('master_link_status:up'), 10_000, 'the replica to sync')
  return [a, b]
}

/** Promotes `b`, demotes `a` to its replica: a failover as Sentinel or a cloud service does it. */
async function failover (a: RedisServer, b: RedisServer): Promise<void> {
  await b.cli('REPLICAOF', 'NO', 'ONE')
  await a.cli('REPLICAOF', b.host, String(b.port))
}

const failoverCases: Array<[string, (t: Scope, url: string) => CacheOptions['redis']]> = [
  ['a client the plugin creates (reconnectOnError)', (_t, url) => ({ url })],
  ['a client passed in (the store reconnects it)', (t, url) => ({ client: user(t, url, { enableOfflineQueue: false }) })]
]

for (const [name, redisOption] of failoverCases) {
  t.test(`failover behind one address, ${name}: READONLY makes it reconnect to the new primary`, async (t) => {
    const [a, b] = await pair(t)
    const proxy = await startTcpProxy(a.port)
    t.teardown(() => proxy.close())
    const prefix = uniquePrefix()
    const { cache, logs } = await build(t, { redis: redisOption(t, `redis://127.0.0.1:${proxy.port}`), prefix, commandTimeout: 500 })
    t.equal(await cache.set('before', 1), true)
    const rawB = rawClient(t, b.url)
    await until(async () => (await rawB.exists(cache.redisKey('before'))) === 1, 5000, 'the write to replicate')
    const client = clientOf(cache)
    let closes = 0
    client.on('close', () => { closes++ })

    await failover(a, b)
    // New connections reach b; the open one stays with a, now a replica.
    proxy.setTarget(b.port)
    const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => cache.set(`burst${i}`, i)))
    // Writes the client resends once it has reconnected may land on the new primary already.
    const refused = burst.filter((stored) => !stored).length
    t.ok(refused >= 1, 'the demoted primary refuses writes')
    t.ok(logs.find(/READONLY/, LEVEL.warn).length >= 1, 'READONLY logged')
    t.ok(cache.getStatistics().errors >= refused, 'and counted as errors')

    await until(async () => await cache.set('after', 2), 10_000, 'a write to reach the new primary')
    t.equal(await cache.get('after'), 2)
    t.equal(await rawB.exists(cache.redisKey('after')), 1, 'the write is on the new primary')
    t.equal(await cache.get('before'), 1, 'with what was replicated before')
    t.equal(closes, 1, 'the burst of READONLY replies made one reconnect')
  })
}

t.test('reconnectOnError: once per connection, resending only when ioredis can queue it', async (t) => {
  const readonly = new Error("READONLY You can't write against a read only replica.")
  const queued = reconnectOnReadonly(true)
  t.equal(queued(readonly), 2, 'with the offline queue: reconnect and resend')
  t.equal(queued(readonly), false, 'the rest of the burst: no second reconnect')
  queued.ready()
  t.equal(queued(readonly), 2, 'a new connection may reconnect again')
  const unqueued = reconnectOnReadonly(false)
  t.equal(unqueued(new Error('WRONGTYPE Operation against a key')), false, 'other replies: no reconnect')
  t.equal(unqueued(readonly), 1, 'without: reconnect, the command fails with READONLY')
})

t.test('a lock left behind by a failover stalls a waiter no longer than lock.wait', async (t) => {
  const redis = await server(t)
  const prefix = uniquePrefix()
  const { cache } = await build(t, { redis: { url: redis.url }, prefix, lock: { ttl: 600_000, wait: 200 } })
  const lockKey = cache.core.layout.lockPrefix + cache.redisKey('report')
  const raw = rawClient(t, redis.url)
  t.equal(await raw.set(lockKey, 'holder-lost-in-failover', 'PX', 600_000), 'OK')
  let runs = 0
  // The lock lives 600 s, far past the test's timeout: the wait ends with lock.wait.
  t.equal(await cache.getOrSet('report', () => { runs++; return 'fresh' }), 'fresh')
  t.equal(runs, 1, 'the waiter ran the work itself')
  t.equal(await raw.get(lockKey), 'holder-lost-in-failover', 'another holder\'s lock is left alone')
})

t.test('a waiter stops waiting once the connection came back (a failover)', async (t) => {
  const redis = await server(t)
  // Offline queue on: the waiter's polls during the reconnect wait for it instead of failing,
  // so what ends the wait is the reconnect itself.
  const client = user(t, redis.url, { enableOfflineQueue: true })
  const prefix = uniquePrefix()
  const { cache } = await build(t, { redis: { client }, prefix, commandTimeout: 600_000, lock: { ttl: 600_000, wait: 600_000 } })
  const lockKey = cache.core.layout.lockPrefix + cache.redisKey('report')
  const raw = rawClient(t, redis.url)
  t.equal(await raw.set(lockKey, 'holder-lost-in-failover', 'PX', 600_000), 'OK')
  let runs = 0
  const result = cache.getOrSet('report', () => { runs++; return 'fresh' })
  // The waiter polls the lock with EXISTS: once it does, it is waiting.
  await until(async () => /cmdstat_exists:calls=[1-9]/.test(await redis.cli('INFO', 'commandstats')), 5000, 'the waiter to poll')
  t.equal(runs, 0, 'still waiting')
  client.disconnect(true)
  t.equal(await result, 'fresh', 'the wait ended')
  t.equal(runs, 1)
})

t.test('a Cluster: the probe asks one master', async (t) => {
  const cluster = await startCluster(3)
  t.teardown(() => cluster.stop())
  await Promise.all(cluster.nodes.map((node) => node.cli('ACL', 'SETUSER', 'default', '-@scripting')))
  const built = await build(t, { redis: { cluster: { nodes: cluster.startupNodes } }, prefix: uniquePrefix() })
  await probed(built)
  t.same(built.cache.getStatistics().missingCapabilities, ['scripting'])
  t.equal(await built.cache.set('k', 1), true)
})

t.test('the memory store is never probed', async (t) => {
  const { cache, logs } = await build(t, { redis: false })
  t.same(cache.getStatistics().missingCapabilities, [])
  t.equal(logs.find(/capabilit/).length, 0)
})
