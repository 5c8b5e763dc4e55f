// Cross-instance single-flight and busting with several app instances on one real Redis: a miss
// seen by many instances at once runs the handler (or getOrSet callback) once; waiters fall back
// to their own run when the lock holder dies (its lock expires), when their wait runs out, or
// when the holder's result is not storable. SingleFlight on its own covers the rest.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { DistributedLock } from '../lib/lock'
import type { EntryStore, LockStore } from '../lib/stores/store'
import type { RedisStore } from '../lib/stores/redis'
import type { CacheOptions } from '../types'
import { captureLogs, rawClient, sleep, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

/** Longer than any test may run (tap stops one after two minutes). */
const LONG = 10 * 60_000

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

interface Fleet {
  apps: FastifyInstance[]
  caches: CacheManager[]
  prefix: string
  /** Handler runs, over all instances. */
  runs: () => number
}

interface Behaviour {
  delay: number
  /** What the handler does on its nth run (1-based). */
  reply?: (run: number, reply: import('fastify').FastifyReply) => unknown
}

/** `count` app instances sharing one Redis and one prefix, each with the same cached route. */
async function fleet (t: tap.Test, count: number, options: CacheOptions, behaviour: Behaviour): Promise<Fleet> {
  const prefix = uniquePrefix('flight')
  let runs = 0
  const apps: FastifyInstance[] = []
  for (let i = 0; i < count; i++) {
    const logs = captureLogs()
    const app = Fastify({ logger: { level: 'warn', stream: logs.stream } })
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix, routes: false, ...options })
    app.get('/report', { config: { cache: { ttl: 60 } } }, async (_request, reply) => {
      const run = ++runs
      await sleep(behaviour.delay)
      return behaviour.reply === undefined ? { report: 'ready', run } : behaviour.reply(run, reply)
    })
    app.get('/greeting', { config: { cache: { ttl: 60, vary: ['accept-language'] } } }, async (request) => {
      ++runs
      await sleep(behaviour.delay)
      return { lang: request.headers['accept-language'] }
    })
    app.get('/items', { config: { cache: { ttl: 60, namespace: 'items', key: 'list' } } }, async () => ({ items: [...items] }))
    app.post('/items', { config: { cache: { bust: { namespace: 'items', keys: ['list'] } } } }, async (request) => {
      items.push((request.body as { name: string }).name)
      return { ok: true }
    })
    await app.ready()
    apps.push(app)
  }
  const items: string[] = ['a']
  return { apps, caches: apps.map((app) => app.cache as CacheManager), prefix, runs: () => runs }
}

/** `perInstance` concurrent GETs on every instance. */
function storm (apps: FastifyInstance[], perInstance: number, url = '/report'): Promise<Array<import('light-my-request').Response>> {
  return Promise.all(apps.flatMap((app) => Array.from({ length: perInstance }, () => app.inject(url))))
}

t.test('concurrent misses on three instances run the handler once', async (t) => {
  const { apps, runs } = await fleet(t, 3, {}, { delay: 300 })
  const responses = await storm(apps, 5)
  t.equal(runs(), 1, 'one handler run for 15 requests on 3 instances')
  t.ok(responses.every((r) => r.statusCode === 200), 'all answered')
  t.ok(responses.every((r) => r.body === responses[0].body), 'with the same body')
  const statuses = responses.map((r) => String(r.headers['cache-status']))
  t.equal(statuses.filter((s) => s.includes('stored')).length, 1, 'one request stored the entry')
  t.equal(statuses.filter((s) => s.includes('collapsed')).length, 14, 'the others got its result')
  t.ok(responses.every((r) => r.headers['x-cache'] === 'MISS'))
  const after = await storm(apps, 1)
  t.same(after.map((r) => r.headers['x-cache']), ['HIT', 'HIT', 'HIT'])
  t.equal(runs(), 1)
})

t.test('a route with vary: one handler run per variant across instances', async (t) => {
  const { apps, runs } = await fleet(t, 3, {}, { delay: 300 })
  const langs = apps.flatMap(() => ['en', 'fr', 'en', 'fr'])
  const responses = await Promise.all(langs.map((lang, i) => apps[Math.floor(i / 4)].inject({ url: '/greeting', headers: { 'accept-language': lang } })))
  t.equal(runs(), 2, 'one run for each of the two variants')
  t.ok(responses.every((r, i) => r.statusCode === 200 && r.json().lang === langs[i]), 'each got its own variant')
})

t.test('getOrSet across instances runs the callback once', async (t) => {
  // Waits far longer than the test: a waiter that waited it out would time the test out.
  const { caches, prefix } = await fleet(t, 3, { lock: { ttl: LONG, wait: LONG }, commandTimeout: LONG }, { delay: 0 })
  let runs = 0
  const callback = async (): Promise<{ value: number }> => {
    runs++
    await sleep(300)
    return { value: 42 }
  }
  const answers = await Promise.all(caches.flatMap((cache) => [cache.getOrSet('shared', callback), cache.getOrSet('shared', callback)]))
  t.equal(runs, 1)
  t.same(answers, Array(6).fill({ value: 42 }))
  const raw = rawClient(t, server.url)
  t.same(await raw.keys(`${prefix}:#lock:*`), [], 'the lock is released')

  // A callback that fails releases the lock: the waiters run their own callbacks.
  let failures = 0
  const failing = async (): Promise<string> => {
    failures++
    await sleep(200)
    if (failures === 1) throw new Error('first one fails')
    return 'second'
  }
  const first = caches[0].getOrSet('fragile', failing)
  await until(async () => (await raw.exists(`${prefix}:#lock:${caches[0].redisKey('fragile')}`)) === 1, 30_000, 'the lock')
  const others = caches.slice(1).map((cache) => cache.getOrSet('fragile', failing))
  await t.rejects(first, { message: 'first one fails' })
  t.same(await Promise.all(others), ['second', 'second'], 'without waiting out the lock wait')
  t.ok(failures >= 2 && failures <= 3, `the waiters ran their own callbacks (${failures} runs)`)
})

t.test('a lock holder that died: waiters run the handler once its lock expires', async (t) => {
  // A wait is bounded by commandTimeout too: both far longer than the test, so only the lock's
  // expiry can let the waiters go.
  const { apps, caches, prefix, runs } = await fleet(t, 3, { lock: { ttl: 5000, wait: LONG }, commandTimeout: LONG }, { delay: 20 })
  const raw = rawClient(t, server.url)
  // What a crashed holder leaves behind: a lock nobody releases.
  const lockKey = `${prefix}:#lock:${caches[0].redisKey('localhost:80/report')}`
  t.equal(await raw.set(lockKey, 'dead-holder', 'PX', 600, 'NX'), 'OK')
  const started = Date.now()
  const responses = await storm(apps, 2)
  t.ok(responses.every((r) => r.statusCode === 200), 'all answered, well before the wait limit')
  t.ok(Date.now() - started >= 550, 'after the lock expired, not before')
  t.ok(runs() >= 1 && runs() <= 3, `at most one run per instance (${runs()})`)
  t.equal(await raw.get(lockKey), null, 'no lock left behind')
  t.equal((await apps[0].inject('/report')).headers['x-cache'], 'HIT')
})

t.test('a wait that exceeds lock.wait gives up and runs the handler', async (t) => {
  const { apps, caches, prefix, runs } = await fleet(t, 2, { lock: { ttl: 5000, wait: 300 } }, { delay: 10 })
  const raw = rawClient(t, server.url)
  const lockKey = `${prefix}:#lock:${caches[0].redisKey('localhost:80/report')}`
  // Held far longer than the test: answering at all is giving up.
  await raw.set(lockKey, 'stuck-holder', 'PX', LONG)
  const started = Date.now()
  const responses = await storm(apps, 3)
  t.ok(responses.every((r) => r.statusCode === 200))
  t.ok(Date.now() - started >= 280, 'gave up after the wait, not before')
  t.equal(runs(), 2, 'one run per instance (the others collapse in process)')
  t.equal(await raw.get(lockKey), 'stuck-holder', 'someone else\'s lock is never released by a waiter')
})

t.test('a holder whose response is not storable: waiters run their own handlers at once', async (t) => {
  const { apps, caches, prefix, runs } = await fleet(t, 3, { lock: { ttl: LONG, wait: LONG }, commandTimeout: LONG }, {
    delay: 300,
    reply: (run, reply) => {
      if (run === 1) reply.header('set-cookie', 'session=1')
      return { run }
    }
  })
  const raw = rawClient(t, server.url)
  const lockKey = `${prefix}:#lock:${caches[0].redisKey('localhost:80/report')}`
  const holder = apps[0].inject('/report')
  await until(async () => (await raw.exists(lockKey)) === 1, 30_000, 'the holder to take the lock')
  const waiters = Promise.all(apps.slice(1).map((app) => app.inject('/report')))
  const first = await holder
  t.equal(first.headers['set-cookie'], 'session=1')
  t.match(first.headers['cache-status'], /detail=set-cookie/)
  const rest = await waiters
  t.ok(rest.every((r) => r.statusCode === 200 && r.headers['set-cookie'] === undefined), 'they ran their own handlers, without waiting out the lock')
  t.ok(runs() >= 2 && runs() <= 3, `the waiters ran the handler (${runs()} runs)`)
})

t.test('a holder whose handler fails: waiters run their own handlers', async (t) => {
  const { apps, caches, prefix, runs } = await fleet(t, 2, { lock: { ttl: LONG, wait: LONG }, commandTimeout: LONG }, {
    delay: 200,
    reply: (run, reply) => run === 1 ? reply.code(500).send({ error: 'boom' }) : { run }
  })
  const raw = rawClient(t, server.url)
  const lockKey = `${prefix}:#lock:${caches[0].redisKey('localhost:80/report')}`
  const holder = apps[0].inject('/report')
  await until(async () => (await raw.exists(lockKey)) === 1, 30_000, 'the holder to take the lock')
  const waiter = apps[1].inject('/report')
  t.equal((await holder).statusCode, 500)
  const answer = await waiter
  t.equal(answer.statusCode, 200, 'without waiting out the lock')
  t.equal(runs(), 2)
})

t.test('lock: false: every instance runs its own handler', async (t) => {
  const { apps, runs } = await fleet(t, 3, { lock: false }, { delay: 150 })
  const responses = await storm(apps, 2)
  t.ok(responses.every((r) => r.statusCode === 200))
  t.equal(runs(), 3, 'once per instance: in-process collapsing only')
})

t.test('busting on one instance is seen by the others', async (t) => {
  const { apps } = await fleet(t, 3, {}, { delay: 0 })
  for (const app of apps) await app.inject('/items')
  t.same((await storm(apps, 1, '/items')).map((r) => r.headers['x-cache']), ['HIT', 'HIT', 'HIT'])
  const post = await apps[1].inject({ method: 'POST', url: '/items', payload: { name: 'b' } })
  t.equal(post.statusCode, 200)
  const after = await apps[2].inject('/items')
  t.equal(after.headers['x-cache'], 'MISS', 'the next read anywhere misses')
  t.same(after.json(), { items: ['a', 'b'] })
  t.same((await apps[0].inject('/items')).json(), { items: ['a', 'b'] })
})

t.test('DistributedLock on its own', async (t) => {
  const calls: string[] = []
  let acquireFails = false
  let getFails = false
  let acquired = false
  let locked = 1
  let entry: Buffer | null = null
  const store = {
    acquireLock: async () => { calls.push('acquire'); if (acquireFails) throw new Error('down'); return acquired },
    releaseLock: async () => { calls.push('release'); throw new Error('down') },
    get: async () => { if (getFails) throw new Error('down'); return entry },
    exists: async () => locked
  } as unknown as EntryStore & LockStore
  const reset = (): void => {
    calls.length = 0
    acquireFails = getFails = acquired = false
    locked = 1
    entry = null
  }

  t.test('Redis cannot be asked for the lock: the caller does the work', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 1000 })
    acquireFails = true
    const claim = await flight.claim('p:ns:k', () => true)
    t.ok(claim.lease, 'a lease')
    await claim.lease?.release()
    t.same(calls, ['acquire'], 'the no-op lease touches nothing')
  })

  t.test('Redis failing while waiting: the caller does the work', async (t) => {
    t.teardown(reset)
    // A wait longer than the test: answering at all is not waiting.
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: LONG })
    getFails = true
    t.same(await flight.claim('p:ns:k', () => true), { bytes: null })
  })

  t.test('the lock taken and nothing stored yet: a lease that releases through the store and never throws', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 1000 })
    acquired = true
    const claim = await flight.claim('p:ns:k', () => true)
    t.ok(claim.lease)
    await claim.lease?.release()
    t.same(calls, ['acquire', 'release'])
  })

  t.test('the lock taken, but the entry landed meanwhile: the lock is let go and the entry used', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 1000 })
    acquired = true
    entry = Buffer.from('landed')
    const claim = await flight.claim('p:ns:k', (b) => b.toString() === 'landed')
    t.same(claim, { bytes: Buffer.from('landed') })
    t.same(calls, ['acquire', 'release'])
  })

  t.test('the lock taken, and the second look fails or finds an unusable entry: do the work', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 1000 })
    acquired = true
    getFails = true
    t.ok((await flight.claim('p:ns:k', () => true)).lease)
    getFails = false
    entry = Buffer.from('stale')
    t.ok((await flight.claim('p:ns:k', () => false)).lease)
  })

  t.test('polls until a usable entry lands; an unusable one does not count', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 2000 })
    entry = Buffer.from('old')
    setTimeout(() => { entry = Buffer.from('new') }, 100)
    t.same(await flight.claim('p:ns:k', (b) => b.toString() === 'new'), { bytes: Buffer.from('new') })
  })

  t.test('wait 0: nothing to wait for', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: 0 })
    t.same(await flight.claim('p:ns:k', () => false), { bytes: null })
  })

  t.test('the lock disappears without an entry: do the work', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(store, store, 'p:#lock:', { ttl: 1000, wait: LONG })
    setTimeout(() => { locked = 0 }, 50)
    t.same(await flight.claim('p:ns:k', () => true), { bytes: null }, 'without waiting out the wait')
  })

  t.test('the memory store has nobody to coordinate with', async (t) => {
    t.teardown(reset)
    const flight = new DistributedLock(undefined, store, 'p:#lock:', { ttl: 1000, wait: 1000 })
    const claim = await flight.claim('p:ns:k', () => true)
    t.ok(claim.lease)
    await claim.lease?.release()
    t.same(calls, [], 'no lock asked for')
  })
})

t.test('a miss that raced another instance\'s store does not run the work again (real Redis)', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const prefix = uniquePrefix('race')
  const apps: FastifyInstance[] = []
  let runs = 0
  for (let i = 0; i < 2; i++) {
    const app = Fastify()
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix, routes: false })
    app.get('/race', { config: { cache: { ttl: 60 } } }, async () => { runs++; return { run: runs } })
    await app.ready()
    apps.push(app)
  }
  const [a, b] = apps
  // A's read misses; before A claims the lock, B misses too, stores and lets go. (A route's read
  // takes the lock in the same script where Redis runs scripts: without, it reads, then claims.)
  const store = (a.cache as unknown as CacheManager).core.stack.store as RedisStore
  store.scripting = false
  const read = store.get.bind(store)
  let race: (() => Promise<unknown>) | null = () => b.inject('/race')
  store.get = async (key, field) => {
    const bytes = await read(key, field)
    const run = race
    race = null
    if (run !== null) await run()
    return bytes
  }
  const res = await a.inject('/race')
  t.same(res.json(), { run: 1 }, 'A answered with B\'s response')
  t.match(res.headers['cache-status'], /collapsed/)
  race = () => b.cache.getOrSet('value', () => { runs++; return 'from b' })
  t.equal(await a.cache.getOrSet('value', () => { runs++; return 'from a' }), 'from b', 'getOrSet took B\'s value')
  t.equal(runs, 2, 'each piece of work ran once')
})

t.test('a lock taken by a read and not needed after all is let go at once', async (t) => {
  const prefix = uniquePrefix('abandon')
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix, routes: false, lock: { ttl: 60_000, wait: 30_000 } })
  let runs = 0
  let open: () => void = () => {}
  let started: () => void = () => {}
  const handlerStarted = new Promise<void>((resolve) => { started = resolve })
  app.get('/slow', { config: { cache: { ttl: 60 } } }, async () => {
    runs++
    started()
    await new Promise<void>((resolve) => { open = resolve })
    return { runs }
  })
  app.get('/swr', { config: { cache: { ttl: 1, staleWhileRevalidate: 600 } } }, async () => ({ run: ++runs }))
  await app.ready()
  const raw = rawClient(t, server.url)
  const lockKey = `${prefix}:#lock:${app.cache.redisKey('localhost:80/slow')}`

  // Another instance holds the lock: the first request waits for it, as the flight of this process.
  await raw.set(lockKey, 'another instance', 'PX', 60_000)
  const first = app.inject('/slow')
  await until(() => app.cache.getStatistics().misses === 1, 30_000, 'the first request to have read')
  // That instance goes away without storing: the first request runs the handler.
  await raw.del(lockKey)
  await handlerStarted
  // A second request takes the free lock in its read, then finds the flight under way.
  const second = app.inject('/slow')
  await until(() => app.cache.getStatistics().misses === 2, 30_000, 'the second request to have read')
  // Held, the lock would stay its whole minute while the handler is blocked.
  await until(async () => (await raw.exists(lockKey)) === 0, 30_000, 'the lock it took to be let go')
  t.pass('the lock it took is let go: no other instance waits on it')
  open()
  const [a, b] = await Promise.all([first, second])
  t.equal(runs, 1, 'one handler run')
  t.same(b.json(), a.json())

  // A stale entry served while it is refreshed: the read that found it takes no lock (the
  // refresh takes one, for every instance).
  await app.inject('/swr')
  const swrKey = app.cache.redisKey('localhost:80/swr')
  await until(async () => (await raw.exists(swrKey)) === 1, 30_000, 'the entry to be stored')
  await until(async () => (await app.inject('/swr')).headers['x-cache'] === 'STALE', 30_000, 'the entry to go stale')
  await until(async () => (await raw.exists(`${prefix}:#lock:${swrKey}`)) === 0, 30_000, 'the lock to be let go')
  t.pass('no lock left behind by a stale hit')
})
