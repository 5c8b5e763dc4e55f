// The local tier's coherence against a real Redis: a write overtaken by an invalidation of its
// key never lands locally, and the tier is used only while heartbeats prove that invalidations
// arrive: a subscription frozen silently, refused by an ACL, or reconnected after an outage
// bypasses it until they do. Timings are never asserted: conditions are polled with deadlines.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import { DEADLINE_INTERVALS, Heartbeats } from '../lib/bus/heartbeat'
import { decodeMessage, encodeMessage } from '../lib/bus/messages'
import type { CacheManager } from '../lib/cache/manager'
import type { SegmentCache } from '../lib/local/segment-cache'
import type { GuardedStore } from '../lib/stores/guarded'
import type { CacheOptions } from '../types'
import { captureLogs, LEVEL, type Logs, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import { startTcpProxy } from './helpers/tcp-proxy'

/** Milliseconds between heartbeats in these tests. */
const HEARTBEAT = 200

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

interface Instance {
  app: FastifyInstance
  cache: CacheManager
  local: SegmentCache
  logs: Logs
}

interface InstanceOptions {
  url?: string
  options?: CacheOptions
  /** Wait until the tier is in use (the subscription proven). Default true. */
  proven?: boolean
}

async function instance (t: tap.Test, prefix: string, { url = server.url, options = {}, proven = true }: InstanceOptions = {}): Promise<Instance> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: { url }, prefix, routes: false, local: { maxEntries: 100, heartbeat: HEARTBEAT }, ...options })
  await app.ready()
  const cache = app.cache as CacheManager
  const local = cache.core.stack.local as SegmentCache
  if (proven) await until(() => !bypassed(cache), 30_000, 'the subscription to be proven')
  return { app, cache, local, logs }
}

function bypassed (cache: CacheManager): boolean {
  return cache.getStatistics().local?.bypassed === true
}

/** Reads until `inst` keeps a local copy of `key`. */
async function held (inst: Instance, key: string): Promise<void> {
  await until(async () => {
    await inst.cache.get(key)
    return inst.local.get(inst.cache.redisKey(key)) !== undefined
  }, 5000, `a local copy of ${key}`)
}

t.test('a set overtaken by a change of its key on this instance never lands locally', async (t) => {
  const a = await instance(t, uniquePrefix('race'))
  const changes: Array<[string, (key: string) => Promise<unknown>, unknown]> = [
    ['delete', (key) => a.cache.delete(key), null],
    ['clear', () => a.cache.clear(), null],
    ['clear of its namespace', () => a.cache.clear('default'), null],
    ['invalidateTags', () => a.cache.invalidateTags('t'), null],
    // The entry stays in Redis, with another ttl: only the local copy must not be the write's.
    ['expire', (key) => a.cache.expire(key, 30), 'v']
  ]
  // Tells when a write reaches the store behind the tier, on its way to Redis.
  const inner = a.cache.core.stack.breaker as GuardedStore
  const set = inner.set.bind(inner)
  t.teardown(() => { inner.set = set })
  let reached = (): void => {}
  inner.set = (...args) => {
    const stored = set(...args)
    reached()
    return stored
  }
  for (const [what, change, after] of changes) {
    let landed = 0
    let wrong = 0
    for (let i = 0; i < 20; i++) {
      const key = `${what}-${i}`
      const sent = new Promise<void>((resolve) => { reached = resolve })
      const setting = a.cache.set(key, 'v', { tags: ['t'] })
      // The change begins while the write is on the wire, its reply still to come.
      await sent
      await Promise.all([setting, change(key)])
      if (a.local.get(a.cache.redisKey(key)) !== undefined) landed++
      if (await a.cache.get(key) !== after) wrong++
    }
    t.equal(landed, 0, `${what}: the overtaken write is never kept locally`)
    t.equal(wrong, 0, `${what}: reads answer what Redis holds`)
  }
  t.notOk(bypassed(a.cache), 'the tier was in use all along')
  await a.cache.set('plain', 'v')
  t.ok(a.local.get(a.cache.redisKey('plain')) !== undefined, 'a write nothing overtook is kept')
})

t.test('a set overtaken by another instance\'s change of its key never lands locally', async (t) => {
  const prefix = uniquePrefix('race')
  const a = await instance(t, prefix)
  const raw = rawClient(t, server.url)
  const inner = a.cache.core.stack.breaker as GuardedStore
  const set = inner.set.bind(inner)
  t.teardown(() => { inner.set = set })
  /** a writes k while `message` arrives on the channel; returns whether a kept what it wrote. */
  const writeDuring = async (message: object): Promise<boolean> => {
    inner.set = async (...args) => {
      const stored = await set(...args)
      await raw.publish(`${prefix}:#invalidate`, JSON.stringify({ origin: 'elsewhere', ...message }))
      await sleep(50)
      return stored
    }
    await a.cache.set('k', 'v')
    inner.set = set
    return a.local.get(a.cache.redisKey('k')) !== undefined
  }
  t.equal(await writeDuring({ keys: [a.cache.redisKey('k')] }), false, 'its key: not kept')
  t.equal(await writeDuring({ prefix: `${prefix}:default:` }), false, 'its namespace: not kept')
  t.equal(await writeDuring({ keys: ['unrelated'] }), true, 'another key: kept')
  // Redis refuses a write that an invalidation overtook before it arrived: nothing lands either.
  await a.cache.delete('k')
  inner.set = async () => false
  t.equal(await a.cache.set('k', 'v'), false, 'refused by the store')
  inner.set = set
  t.equal(a.local.get(a.cache.redisKey('k')), undefined, 'not kept')
})

t.test('heartbeats: only our own count; other instances\' are not invalidations', async (t) => {
  const prefix = uniquePrefix('beat')
  const a = await instance(t, prefix)
  const raw = rawClient(t, server.url)
  const channel = `${prefix}:#invalidate`
  await a.cache.set('k', 'v')
  await raw.publish(channel, JSON.stringify({ origin: 'elsewhere', heartbeat: 7 }))
  await a.cache.set('marker', 'v')
  // A message naming the marker, sent after the heartbeat, proves the heartbeat was handled.
  await raw.publish(channel, JSON.stringify({ origin: 'elsewhere', keys: [a.cache.redisKey('marker')] }))
  await until(() => a.local.get(a.cache.redisKey('marker')) === undefined, 30_000, 'the marker to go')
  t.ok(a.local.get(a.cache.redisKey('k')) !== undefined, 'another instance\'s heartbeat flushes nothing')
  await raw.publish(channel, JSON.stringify({ origin: 'elsewhere', heartbeat: 'x' }))
  await until(() => a.local.describe().entries === 0, 30_000, 'a malformed heartbeat to flush')
})

t.test('bus messages: heartbeats are their own kind', async (t) => {
  t.same(decodeMessage(encodeMessage({ origin: 'a', heartbeat: 3 })), { origin: 'a', keys: undefined, prefix: undefined, heartbeat: 3 })
  const flush = { origin: 'a', keys: undefined, prefix: undefined }
  t.same(decodeMessage(JSON.stringify({ origin: 'a', heartbeat: 1.5 })), flush, 'a heartbeat that is not a whole number flushes')
  t.same(decodeMessage(JSON.stringify({ origin: 'a', heartbeat: 1, keys: ['k', 2] })), flush, 'with unreadable keys, it flushes')
  t.same(decodeMessage(JSON.stringify({ origin: 'a', heartbeat: 1, keys: ['k'] })), { origin: 'a', keys: ['k'], prefix: undefined }, 'with keys, it is an invalidation')
  t.same(decodeMessage(JSON.stringify({ origin: 'a', heartbeat: 1, prefix: 'p:' })), { origin: 'a', keys: undefined, prefix: 'p:' })
})

t.test('Heartbeats: what is expected back, and when it is overdue', async (t) => {
  const beats = new Heartbeats(100)
  const deadline = 100 * DEADLINE_INTERVALS
  t.equal(beats.overdue(), false, 'nothing sent, nothing overdue')
  const first = beats.take()
  const second = beats.take()
  t.equal(second, first + 1)
  beats.sent(first, 1000)
  beats.sent(second, 1100)
  t.equal(beats.overdue(1000 + deadline), false, 'within the deadline')
  t.equal(beats.overdue(1001 + deadline), true, 'past it')
  beats.heard(first, 1050)
  t.equal(beats.overdue(1050 + deadline), false, 'heard back: silent since then')
  t.equal(beats.overdue(1051 + deadline), true, 'the next one is late')
  beats.heard(second + 5, 1200)
  t.equal(beats.overdue(1e9), false, 'a later heartbeat accounts for the earlier ones: none expected')
  beats.sent(beats.take(), 1450)
  t.equal(beats.overdue(1200 + deadline), false)
  t.equal(beats.overdue(1201 + deadline), true, 'the silence counts from the last heartbeat heard, not from the next one sent')
  beats.forget()
  t.equal(beats.overdue(1e9), false, 'forgotten')
  // A long silence after a forget: counted from the first sent. Only the last 64 are kept.
  for (let i = 0; i < 100; i++) beats.sent(beats.take(), 5000 + i * 100)
  t.equal(beats.overdue(5000 + deadline), false)
  t.equal(beats.overdue(5001 + deadline), true, 'forgetting the oldest expected hides nothing')
})

t.test('a subscription frozen silently bypasses the tier until heartbeats come through again', async (t) => {
  const prefix = uniquePrefix('frozen')
  const proxy = await startTcpProxy(server.port)
  t.teardown(() => proxy.close())
  const a = await instance(t, prefix)
  const b = await instance(t, prefix, {
    url: `redis://127.0.0.1:${proxy.port}`,
    options: { commandTimeout: 200, circuitBreaker: { failureThreshold: 2, resetTimeout: 100 } }
  })
  await a.cache.set('k', 'v1')
  await held(b, 'k')
  t.equal(await b.cache.get('k'), 'v1')

  // Nothing is forwarded to or from b any more, and no connection closes.
  proxy.freeze()
  await a.cache.set('k', 'v2')
  await until(() => bypassed(b.cache), 20 * HEARTBEAT, 'b to bypass its tier')
  t.equal(b.local.describe().entries, 0, 'b flushed its tier')
  t.not(await b.cache.get('k'), 'v1', 'b no longer serves the old value')
  t.equal(b.local.get(b.cache.redisKey('k')), undefined, 'and keeps nothing')
  t.equal(b.logs.find('local tier flushed and bypassed', LEVEL.warn).length, 1, 'logged once')

  proxy.thaw()
  await until(() => !bypassed(b.cache), 40 * HEARTBEAT, 'b to use its tier again')
  await until(async () => await b.cache.get('k') === 'v2', 30_000, 'b to read the new value')
  await held(b, 'k')
  t.equal(b.logs.find('local tier back in use', LEVEL.info).length, 1, 'the return logged once')
  t.equal(b.logs.find('local tier flushed and bypassed', LEVEL.warn).length, 1, 'no more warnings')
  // Coherent again: a's next change reaches b.
  await a.cache.set('k', 'v3')
  await until(() => b.local.get(b.cache.redisKey('k')) === undefined, 30_000, 'the change to reach b')
  t.equal(await b.cache.get('k'), 'v3')
  t.notOk(bypassed(a.cache), 'a was never affected')
  t.equal(a.logs.find('bypassed').length, 0)
})

t.test('without the right to subscribe: the tier is bypassed and answers come from Redis', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  await own.cli('acl', 'setuser', 'cacher', 'on', '>secret', '~*', '+@all', 'resetchannels')
  const prefix = uniquePrefix('acl')
  const url = `redis://cacher:secret@127.0.0.1:${own.port}`
  const a = await instance(t, prefix, { url, proven: false })
  await until(() => a.logs.find('cannot subscribe', LEVEL.warn).length === 1, 30_000, 'the refusal to be reported')
  t.ok(bypassed(a.cache), 'bypassed')
  t.equal(await a.cache.set('k', 'v1'), true)
  t.equal(await a.cache.get('k'), 'v1')
  t.equal(a.local.describe().entries, 0, 'nothing is kept locally')
  // Another writer, whose change a cannot hear of: a answers from Redis.
  const raw = rawClient(t, own.url)
  await raw.del(a.cache.redisKey('k'))
  t.equal(await a.cache.get('k'), null, 'a sees the change at once')
  // Retried at each heartbeat: once allowed, the subscription is proven and the tier used.
  await sleep(2 * HEARTBEAT)
  t.equal(a.logs.find('cannot subscribe').length, 1, 'reported once')
  await own.cli('acl', 'setuser', 'cacher', 'allchannels')
  await until(() => !bypassed(a.cache), 40 * HEARTBEAT, 'the subscription')
  t.equal(a.logs.find('local tier back in use', LEVEL.info).length, 1)
  await a.cache.set('k', 'v2')
  t.ok(a.local.get(a.cache.redisKey('k')) !== undefined, 'kept locally again')
})

t.test('Redis down: local hits keep serving; back: bypassed until the subscription is proven', async (t) => {
  const own = await startRedis()
  t.teardown(() => own.stop())
  const a = await instance(t, uniquePrefix('down'), { url: own.url, options: { commandTimeout: 200 } })
  await a.cache.set('k', 'v')
  await own.kill()
  await until(() => !a.cache.getStatistics().connected, 30_000, 'the outage to be noticed')
  // Many heartbeat intervals: none is sent, none is missed, the tier stays in use.
  for (let i = 0; i < 10; i++) {
    await sleep(HEARTBEAT / 2)
    t.equal(await a.cache.get('k'), 'v')
  }
  t.notOk(bypassed(a.cache), 'not bypassed while Redis is down')
  t.equal(a.logs.find('bypassed').length, 0, 'no flapping')
  await own.restart()
  await until(() => a.logs.find('reconnected; local tier flushed and bypassed', LEVEL.warn).length === 1, 30_000, 'the bypass on reconnection')
  await until(() => !bypassed(a.cache), 40 * HEARTBEAT, 'the subscription to be proven')
  t.equal(a.logs.find('local tier back in use', LEVEL.info).length, 1)
  t.equal(a.local.describe().entries, 0, 'what was held before was flushed')
  t.equal(await a.cache.get('k'), null, 'Redis lost it')
})

t.test('a stalled process does not take its own heartbeats for lost ones', async (t) => {
  const a = await instance(t, uniquePrefix('stall'), { options: { local: { heartbeat: 100 } } })
  await a.cache.set('k', 'v')
  // Heartbeats come back while the event loop is blocked; they are read only after it.
  const end = Date.now() + 1000
  while (Date.now() < end) { /* busy */ }
  await sleep(500)
  t.notOk(bypassed(a.cache))
  t.equal(a.logs.find('bypassed').length, 0)
  t.ok(a.local.get(a.cache.redisKey('k')) !== undefined, 'the tier kept what it held')
})
