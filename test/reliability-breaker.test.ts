// The circuit breaker (GuardedStore) on its own, around a store whose every answer the test
// decides: threshold, fast failures while open, the half-open probe, reply errors, timeouts,
// health checks, reconnects. Then the breaker in the plugin against a real Redis: a reply error
// (WRONGTYPE) is an answer, not an outage; the state shows in stats and metrics.
import t from 'tap'
import Fastify from 'fastify'
import fastifyRedisCache from '../index'
import { GuardedStore, type GuardableStore, type GuardOptions, type CircuitState } from '../lib/stores/guarded'
import { RedisConnectionError } from '../lib/errors'
import type { ClaimedRead, RateWindow } from '../lib/stores/store'
import type { CacheInfo } from '../types'
import { captureLogs, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

type Mode = 'ok' | 'fail' | 'reply-error' | 'hang' | 'manual'

interface Pending {
  resolve: () => void
  reject: (err: Error) => void
}

const INFO: CacheInfo = {
  store: 'redis',
  redisVersion: '7',
  usedMemory: 1,
  usedMemoryHuman: '1B',
  connectedClients: 1,
  evictedKeys: 0,
  expiredKeys: 0,
  keyspaceHits: 0,
  keyspaceMisses: 0,
  uptimeSeconds: 1
}

/** A store whose answers follow `mode`; it records every call by method name. */
class ScriptedStore implements GuardableStore {
  connected = true
  mode: Mode = 'ok'
  calls: string[] = []
  closed = false
  /** Calls made in 'manual' mode, settled by the test. */
  pending: Pending[] = []

  private answer<T> (method: string, value: T): Promise<T> {
    this.calls.push(method)
    if (this.mode === 'manual') {
      return new Promise<T>((resolve, reject) => this.pending.push({ resolve: () => resolve(value), reject }))
    }
    if (this.mode === 'fail') return Promise.reject(new Error('Connection is closed.'))
    if (this.mode === 'reply-error') return Promise.reject(Object.assign(new Error('WRONGTYPE Operation against a key holding the wrong kind of value'), { name: 'ReplyError' }))
    if (this.mode === 'hang') return new Promise<T>(() => {})
    return Promise.resolve(value)
  }

  get (): Promise<Buffer | null> { return this.answer('get', Buffer.from('v')) }
  readOrClaim (): Promise<ClaimedRead> { return this.answer('readOrClaim', { bytes: null, lock: null }) }
  set (): Promise<boolean> { return this.answer('set', true) }
  delete (keys: readonly string[]): Promise<number> { return this.answer('delete', keys.length) }
  exists (keys: readonly string[]): Promise<number> { return this.answer('exists', keys.length) }
  expire (): Promise<boolean> { return this.answer('expire', true) }
  ttl (): Promise<number> { return this.answer('ttl', 42) }
  clear (): Promise<number> { return this.answer('clear', 3) }
  invalidateTags (): Promise<{ removed: number, keys: string[] }> { return this.answer('invalidateTags', { removed: 1, keys: ['k'] }) }
  hitWindow (): Promise<RateWindow> { return this.answer('hitWindow', { count: 1, resetMs: 1000 }) }
  acquireLock (): Promise<boolean> { return this.answer('acquireLock', true) }
  releaseLock (): Promise<void> { return this.answer('releaseLock', undefined) }
  ping (): Promise<void> { return this.answer('ping', undefined) }
  info (): Promise<CacheInfo> { return this.answer('info', INFO) }
  readStamps (names: readonly string[]): Promise<Array<string | null>> { return this.answer('readStamps', names.map(() => null)) }
  async close (): Promise<void> { this.closed = true }
}

interface Guarded {
  store: GuardedStore
  inner: ScriptedStore
  transitions: Array<[CircuitState, CircuitState]>
}

function guarded (t: tap.Test, options: Partial<GuardOptions> = {}): Guarded {
  const inner = new ScriptedStore()
  const transitions: Array<[CircuitState, CircuitState]> = []
  const store = new GuardedStore(inner, {
    failureThreshold: 3,
    resetTimeout: 60,
    healthCheckInterval: 60_000,
    commandTimeout: 0,
    ...options
  }, { onStateChange: (state, previous) => transitions.push([previous, state]) })
  t.teardown(() => store.close())
  return { store, inner, transitions }
}

const failing = (promise: Promise<unknown>): Promise<unknown> => promise.then(() => 'resolved', (err: unknown) => err)

t.test('every method passes through to the store while closed', async (t) => {
  const { store, inner } = guarded(t)
  t.same(await store.get('k'), Buffer.from('v'))
  t.same(await store.readOrClaim('k', undefined, { lockKey: 'l', lockMs: 100, graceMs: 0 }), { bytes: null, lock: null })
  await store.set('k', Buffer.from('v'), 10, [])
  t.equal(await store.delete(['a', 'b']), 2)
  t.equal(await store.exists(['a']), 1)
  t.equal(await store.expire('k', 10), true)
  t.equal(await store.ttl('k'), 42)
  t.equal(await store.clear('ns'), 3)
  t.same(await store.invalidateTags(['t']), { removed: 1, keys: ['k'] })
  t.same(await store.hitWindow('id', 10), { count: 1, resetMs: 1000 })
  t.equal(await store.acquireLock('l', 'tok', 100), true)
  await store.releaseLock('l', 'tok')
  await store.ping()
  t.same(await store.info(), INFO)
  t.same(inner.calls, ['get', 'readOrClaim', 'set', 'delete', 'exists', 'expire', 'ttl', 'clear', 'invalidateTags', 'hitWindow', 'acquireLock', 'releaseLock', 'ping', 'info'])
  t.equal(store.state, 'closed')
  t.equal(store.connected, true)
  inner.connected = false
  t.equal(store.connected, false, 'connected follows the store while closed')
  await store.close()
  t.equal(inner.closed, true, 'close closes the store')
})

t.test('opens after failureThreshold failures in a row; a success in between resets the count', async (t) => {
  const { store, inner, transitions } = guarded(t, { failureThreshold: 3, resetTimeout: 60_000 })
  inner.mode = 'fail'
  t.match(await failing(store.get('k')), { message: 'Connection is closed.' }, 'the store error is passed on')
  await failing(store.get('k'))
  inner.mode = 'ok'
  await store.get('k')
  inner.mode = 'fail'
  await failing(store.get('k'))
  await failing(store.set('k', Buffer.from('v'), 1, []))
  t.equal(store.state, 'closed', 'two failures since the last success: still closed')
  await failing(store.exists(['k']))
  t.equal(store.state, 'open', 'the third failure in a row opens the circuit')
  t.same(transitions, [['closed', 'open']])
  t.equal(store.connected, false, 'not connected while open')

  // Open: calls fail at once with RedisConnectionError and never reach the store.
  inner.mode = 'ok'
  const before = inner.calls.length
  const errors = await Promise.all(Array.from({ length: 50 }, () => failing(store.get('k'))))
  t.ok(errors.every((err) => err instanceof RedisConnectionError && /circuit is open/.test(err.message)), 'RedisConnectionError, the circuit being open')
  t.equal(inner.calls.length, before, 'the store is not called while open: nothing to wait for')
  t.ok(await failing(store.readOrClaim('k', undefined, { lockKey: 'l', lockMs: 100, graceMs: 0 })) instanceof RedisConnectionError, 'nor for a read that claims')
})

t.test('after resetTimeout one probe (PING) is let through: failure reopens, success closes', async (t) => {
  const { store, inner, transitions } = guarded(t, { failureThreshold: 1, resetTimeout: 80 })
  inner.mode = 'fail'
  await failing(store.get('k'))
  t.equal(store.state, 'open')
  inner.calls = []
  await until(() => store.state === 'half-open' || inner.calls.includes('ping'), 30_000, 'the first probe')
  await until(() => store.state === 'open', 30_000, 'the failed probe to reopen the circuit')
  t.same(inner.calls, ['ping'], 'one PING, and nothing else reached the store')

  // Half-open while the probe hangs: calls still fail fast, and only one probe runs at a time.
  inner.mode = 'hang'
  inner.calls = []
  await until(() => store.state === 'half-open', 30_000, 'the second probe')
  t.match(await failing(store.get('k')), RedisConnectionError, 'half-open: calls fail fast')
  await sleep(200)
  t.same(inner.calls, ['ping'], 'a hanging probe is not joined by another one')
  t.equal(store.state, 'half-open')

  // A probe that hangs for good is the store's business (its command timeout); here the
  // connection comes back instead.
  inner.mode = 'ok'
  store.connectionRestored()
  t.equal(store.state, 'closed', 'a reconnect closes the circuit at once')
  t.same(await store.get('k'), Buffer.from('v'))
  t.same(transitions.slice(0, 4), [['closed', 'open'], ['open', 'half-open'], ['half-open', 'open'], ['open', 'half-open']])
  t.same(transitions.at(-1), ['half-open', 'closed'])
})

t.test('a successful probe closes the circuit by itself', async (t) => {
  const { store, inner, transitions } = guarded(t, { failureThreshold: 2, resetTimeout: 50 })
  inner.mode = 'fail'
  await failing(store.get('a'))
  await failing(store.get('b'))
  t.equal(store.state, 'open')
  inner.mode = 'ok'
  await until(() => store.state === 'closed', 30_000, 'the probe to close the circuit')
  t.same(transitions, [['closed', 'open'], ['open', 'half-open'], ['half-open', 'closed']])
  // The failure count starts over: one more failure does not reopen it.
  inner.mode = 'fail'
  await failing(store.get('c'))
  t.equal(store.state, 'closed')
})

t.test('a probe still running when the next one is due: the circuit is probed again later, never left open', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: 1, resetTimeout: 50 })
  inner.mode = 'fail'
  await failing(store.get('k'))
  inner.mode = 'manual'
  await until(() => store.state === 'half-open' && inner.pending.length === 1, 30_000, 'the probe')
  const probe = inner.pending[0]
  // An explicit ping (a health endpoint, say) fails while the probe is still waiting.
  const explicit = failing(store.ping())
  inner.pending[1].reject(new Error('Connection is closed.'))
  await explicit
  t.equal(store.state, 'open', 'its failure reopens the circuit and schedules a probe')
  await sleep(120)
  t.equal(inner.pending.length, 2, 'that probe found the first one still running: no second PING at once')
  // From here Redis answers; a probe that started meanwhile (a busy machine's timers fire late)
  // is answered too, so only the failure of the first one is left to judge.
  inner.mode = 'ok'
  probe.reject(new Error('Connection is closed.'))
  for (let i = 0; i < 20; i++) await Promise.resolve()
  t.not(store.state, 'closed', 'the first probe failed too: it closes nothing')
  for (const later of inner.pending.slice(2)) later.resolve()
  await until(() => store.state === 'closed', 30_000, 'a later probe to close the circuit')
  t.pass('probed again, and closed')
})

t.test('a probe due after the circuit closed by itself does not reopen it', async (t) => {
  const { store, inner, transitions } = guarded(t, { failureThreshold: 1, resetTimeout: 60 })
  inner.mode = 'fail'
  await failing(store.get('k'))
  inner.mode = 'ok'
  store.connectionRestored()
  inner.calls = []
  await sleep(150)
  t.equal(store.state, 'closed')
  t.same(inner.calls, [], 'no probe')
  t.same(transitions, [['closed', 'open'], ['open', 'closed']], 'never half-open')
})

t.test('reply errors are answers: they never open the circuit', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: 2 })
  inner.mode = 'reply-error'
  for (let i = 0; i < 10; i++) t.match(await failing(store.get('k')), { name: 'ReplyError' })
  t.equal(store.state, 'closed')
  // Nor do they count towards the threshold between connection failures.
  inner.mode = 'fail'
  await failing(store.get('k'))
  inner.mode = 'reply-error'
  await failing(store.get('k'))
  t.equal(store.state, 'closed')
  inner.mode = 'fail'
  await failing(store.get('k'))
  t.equal(store.state, 'open', 'two connection failures, reply errors aside')
})

t.test('commandTimeout: a hanging call fails after the timeout and counts as a failure', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: 2, commandTimeout: 60, resetTimeout: 60_000 })
  inner.mode = 'hang'
  const started = Date.now()
  const err = await failing(store.get('k'))
  t.match(err, RedisConnectionError)
  t.match(err, { message: /did not answer within 60 ms/ })
  // The store never answers: failing at all is the timeout; it never fails before it.
  t.ok(Date.now() - started >= 55, 'failed after the timeout, not before')
  await failing(store.ping())
  t.equal(store.state, 'open', 'timeouts open the circuit')

  // clear() runs many SCAN rounds: it has no overall timeout.
  const { store: other, inner: otherInner } = guarded(t, { commandTimeout: 30 })
  otherInner.mode = 'hang'
  const clearing = failing(other.clear())
  const winner = await Promise.race([clearing, sleep(150).then(() => 'still running')])
  t.equal(winner, 'still running', 'clear is not cut short')
  otherInner.mode = 'ok'
  t.equal(await other.clear(), 3)
})

t.test('health checks ping the store while closed and open the circuit when it is gone', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: 2, healthCheckInterval: 25, resetTimeout: 60_000 })
  await until(() => inner.calls.filter((c) => c === 'ping').length >= 2, 30_000, 'health-check pings')
  t.equal(store.state, 'closed', 'answered pings keep it closed')
  inner.mode = 'fail'
  await until(() => store.state === 'open', 30_000, 'failed health checks to open the circuit')
  const pings = inner.calls.length
  await sleep(120)
  t.equal(inner.calls.length, pings, 'no health checks while open: the probe does that')
})

t.test('an explicit ping reaches the store whatever the state, and closes the circuit when answered', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: 1, resetTimeout: 60_000 })
  inner.mode = 'fail'
  await failing(store.get('k'))
  t.equal(store.state, 'open')
  await t.rejects(store.ping(), { message: 'Connection is closed.' })
  t.equal(store.state, 'open')
  inner.mode = 'ok'
  await store.ping()
  t.equal(store.state, 'closed')
})

t.test('failureThreshold Infinity (circuitBreaker: false) never opens', async (t) => {
  const { store, inner } = guarded(t, { failureThreshold: Infinity, resetTimeout: 0 })
  inner.mode = 'fail'
  for (let i = 0; i < 100; i++) await failing(store.get('k'))
  t.equal(store.state, 'closed')
})

t.test('in the plugin, against a real Redis', async (t) => {
  let server: RedisServer
  t.before(async () => { server = await startRedis() })
  t.teardown(() => server?.stop())

  t.test('WRONGTYPE at a key is a miss and an error, never an open circuit', async (t) => {
    const logs = captureLogs()
    const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
    t.teardown(() => app.close())
    const prefix = uniquePrefix('breaker')
    await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix, routes: false, circuitBreaker: { failureThreshold: 2, resetTimeout: 60_000 } })
    await app.ready()
    const raw = rawClient(t, server.url)
    await raw.rpush(app.cache.redisKey('list'), 'a', 'b')
    for (let i = 0; i < 10; i++) t.equal(await app.cache.get('list'), null)
    const stats = app.cache.getStatistics()
    t.equal(stats.errors, 10)
    t.equal(stats.circuit, 'closed')
    t.equal(stats.connected, true)
    t.equal(await app.cache.set('other', 1), true, 'the cache keeps working')
  })

  t.test('circuitBreaker: false keeps asking Redis; the state stays closed', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix: uniquePrefix('nobreaker'), routes: false, circuitBreaker: false })
    await app.ready()
    t.equal(app.cache.getStatistics().circuit, 'closed')
    t.equal(await app.cache.ping(), true)
  })
})
