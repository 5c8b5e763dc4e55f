// The failure policy against real outages: Redis down at start, killed mid-run, hung (SIGSTOP),
// restarted with a password nobody configured; degrading (misses, false, callbacks run, errors
// counted and logged) with throwOnError false, typed errors with throwOnError true, recovery by
// itself, and app.close() while Redis is gone.
import t from 'tap'
import { build, clientOf, LEVEL, sleep, until, uniquePrefix, type Built } from './helpers/app'
import { routeApp } from './helpers/route-app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import { CacheKeyError, RedisConnectionError } from '../lib/errors'
import type { CacheOptions } from '../types'

/** A Redis server that is not running now but can be restart()ed on its port. */
async function deadRedis (t: tap.Test, options: { password?: string } = {}): Promise<RedisServer> {
  const server = await startRedis(options)
  t.teardown(() => server.stop())
  await server.kill()
  return server
}

/** Every method once; each fails against a Redis that is gone. Returns how many failures that is. */
async function degradedCalls (t: tap.Test, { cache }: Built): Promise<number> {
  let runs = 0
  t.equal(await cache.get('k'), null, 'get is a miss')
  t.equal(await cache.set('k', 'v'), false, 'set returns false')
  t.equal(await cache.getOrSet('k', () => { runs++; return 'computed' }), 'computed', 'getOrSet runs its callback')
  t.equal(runs, 1)
  t.equal(await cache.exists('k'), 0, 'exists is 0')
  t.equal(await cache.delete('k'), 0, 'delete is 0')
  t.equal(await cache.expire('k', 10), false, 'expire is false')
  t.equal(await cache.ttl('k'), -2, 'ttl is -2')
  t.equal(await cache.clear(), 0, 'clear is 0')
  t.equal(await cache.clear('ns'), 0)
  t.equal(await cache.invalidateTags('t'), 0, 'invalidateTags is 0')
  t.same(await cache.rateLimit('ip', { max: 5, window: 30 }), { limit: 5, remaining: 5, reset: 30 }, 'rateLimit fails open')
  t.equal(await cache.ping(), false, 'ping is false')
  t.match(await cache.info(), { store: 'redis', redisVersion: null, usedMemory: null, connectedClients: null }, 'info has no Redis fields')
  await t.rejects(cache.get(''), CacheKeyError, 'programmer errors still throw')
  return 14 // getOrSet fails twice (lookup and store)
}

function options (server: RedisServer, extra: CacheOptions = {}): CacheOptions {
  return { redis: { url: server.url }, prefix: uniquePrefix(), commandTimeout: 200, ...extra }
}

t.test('Redis down at start', async (t) => {
  const server = await deadRedis(t)
  // Resolving at all is the point: the server stays dead.
  const built = await build(t, options(server))
  const { cache, logs } = built
  t.pass('registration succeeds with Redis down')
  t.equal(logs.find('Redis unreachable at start', LEVEL.warn).length, 1, 'logged')
  t.equal(cache.getStatistics().store, 'redis', 'never silently switches to memory')
  t.equal(cache.getStatistics().connected, false)

  const failures = await degradedCalls(t, built)
  const stats = cache.getStatistics()
  t.equal(stats.errors, failures, 'every failure counted')
  t.equal(stats.misses, 2)
  t.equal(stats.sets, 0)
  t.ok(logs.find(/fastify-redis-cache: \w+ failed/, LEVEL.warn).length >= 1, 'failures logged')

  await server.restart()
  await until(async () => await cache.set('k', 'back'), 30_000, 'the cache to recover by itself')
  t.equal(await cache.get('k'), 'back')
  t.equal(cache.getStatistics().connected, true)
  t.equal(await cache.ping(), true)
  t.equal(logs.find('Redis connection restored', LEVEL.info).length, 1, 'recovery logged')
})

t.test('Redis down at start with throwOnError', async (t) => {
  const server = await deadRedis(t)
  const { cache } = await build(t, options(server, { throwOnError: true }))
  let runs = 0
  const err = await t.rejects(cache.get('k'), RedisConnectionError) as unknown as RedisConnectionError
  t.equal(err.statusCode, 503)
  t.equal(err.code, 'CACHE_REDIS_CONNECTION')
  await t.rejects(cache.set('k', 1), RedisConnectionError)
  await t.rejects(cache.getOrSet('k', () => { runs++; return 1 }), RedisConnectionError)
  t.equal(runs, 0, 'the lookup failed before the callback')
  await t.rejects(cache.exists('k'), RedisConnectionError)
  await t.rejects(cache.delete(['k']), RedisConnectionError)
  await t.rejects(cache.expire('k', 1), RedisConnectionError)
  await t.rejects(cache.ttl('k'), RedisConnectionError)
  await t.rejects(cache.clear(), RedisConnectionError)
  await t.rejects(cache.invalidateTags(['t']), RedisConnectionError)
  await t.rejects(cache.rateLimit('ip', { max: 1, window: 1 }), RedisConnectionError)
  await t.rejects(cache.info(), RedisConnectionError)
  t.equal(await cache.ping(), false, 'ping answers false rather than throwing')
  t.equal(cache.getStatistics().errors, 12)
})

t.test('circuitBreaker: false sends every call to Redis', async (t) => {
  const server = await deadRedis(t)
  const { cache } = await build(t, options(server, { throwOnError: true, circuitBreaker: false }))
  for (let i = 0; i < 12; i++) {
    await t.rejects(cache.get('k'), { name: 'RedisConnectionError', message: /^(?!.*circuit)/ }, `call ${i + 1} reaches the client`)
  }
  t.equal(cache.getStatistics().circuit, 'closed')
})

t.test('with the circuit breaker, repeated failures skip Redis', async (t) => {
  const server = await deadRedis(t)
  const { cache, logs } = await build(t, options(server, { throwOnError: true, circuitBreaker: { failureThreshold: 3, resetTimeout: 60_000 } }))
  for (let i = 0; i < 3; i++) await t.rejects(cache.get('k'), RedisConnectionError)
  t.equal(cache.getStatistics().circuit, 'open')
  await t.rejects(cache.get('k'), { name: 'RedisConnectionError', message: /circuit is open/ })
  t.equal(logs.find('circuit closed -> open', LEVEL.warn).length, 1)
  await server.restart()
  await until(() => cache.getStatistics().circuit === 'closed', 30_000, 'the reconnect to close the circuit')
  t.equal(await cache.set('k', 1), true)
  t.equal(logs.find('-> closed: using Redis again', LEVEL.info).length, 1)
})

t.test('Redis hung at start: registration waits connectTimeout at most', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  server.pause()
  // Resolving while Redis still hangs is the point: it is resumed only below.
  const { cache, logs } = await build(t, options(server, { redis: { url: server.url, connectTimeout: 300 } }))
  t.pass('registration succeeds while Redis hangs')
  t.equal(logs.find('Redis unreachable at start', LEVEL.warn).length, 1)
  t.equal(await cache.get('k'), null)
  server.resume()
  await until(async () => await cache.set('k', 1), 30_000, 'the cache to recover')
  t.equal(await cache.get('k'), 1)
})

t.test('REDIS_CONNECT_TIMEOUT bounds the wait at start', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  server.pause()
  process.env.REDIS_CONNECT_TIMEOUT = '0.2'
  t.teardown(() => { delete process.env.REDIS_CONNECT_TIMEOUT })
  const { cache } = await build(t, options(server))
  t.equal((clientOf(cache).options as { connectTimeout?: number }).connectTimeout, 200, 'the client waits 200 ms to connect')
  server.resume()
})

t.test('Redis killed mid-run, then restarted', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const built = await build(t, options(server))
  const { cache, logs } = built
  t.equal(await cache.set('k', 'v'), true)
  t.equal(await cache.get('k'), 'v')

  await server.kill()
  await until(() => !cache.getStatistics().connected, 30_000, 'the client to notice')
  const failures = await degradedCalls(t, built)
  t.ok(cache.getStatistics().errors >= failures, 'errors counted')
  await until(() => logs.find('Redis connection error', LEVEL.warn).length >= 1, 30_000, 'the connection error to be logged')

  await server.restart()
  await until(async () => await cache.set('k', 'again'), 30_000, 'the cache to recover')
  t.equal(await cache.get('k'), 'again')
  t.equal(logs.find('Redis connection restored', LEVEL.info).length, 1)
})

t.test('Redis hung mid-run: commands time out, then recover', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  // The connection stays up, so the circuit breaker's probe (after resetTimeout) is what closes it.
  const { cache } = await build(t, options(server, { commandTimeout: 150, circuitBreaker: { resetTimeout: 200 } }))
  await cache.set('k', 'v')
  server.pause()
  t.teardown(() => { try { server.resume() } catch {} })
  // Answered while Redis still hangs (it is resumed below), and not before the timeout.
  const started = Date.now()
  t.equal(await cache.get('k'), null, 'a miss')
  t.ok(Date.now() - started >= 100, 'after commandTimeout')
  t.equal(await cache.set('k2', 'v'), false)
  t.equal(await cache.getOrSet('k3', () => 'computed'), 'computed')
  t.ok(cache.getStatistics().errors >= 3)
  server.resume()
  await until(async () => await cache.get('k') === 'v', 30_000, 'the cache to answer again')
  t.pass('recovered with the data intact')
})

t.test('Redis hung mid-run with throwOnError: RedisConnectionError', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { cache } = await build(t, options(server, { commandTimeout: 100, throwOnError: true }))
  await cache.set('k', 'v')
  server.pause()
  t.teardown(() => { try { server.resume() } catch {} })
  await t.rejects(cache.get('k'), { name: 'RedisConnectionError', message: /timed out|Redis/i })
  server.resume()
  await until(async () => await cache.get('k').catch(() => null) === 'v', 30_000, 'the cache to answer again')
  t.pass('recovered')
})

t.test('a Redis that comes back asking for a password keeps the cache degraded, never crashes', async (t) => {
  const server = await deadRedis(t, { password: 'surprise' })
  const url = `redis://127.0.0.1:${server.port}` // no password
  const { cache } = await build(t, { redis: { url }, prefix: uniquePrefix(), commandTimeout: 200 })
  const errors: Error[] = []
  clientOf(cache).on('error', (err: Error) => errors.push(err))
  await server.restart()
  await until(() => errors.some((err) => /NOAUTH/.test(err.message)), 30_000, 'the client to be refused')
  t.equal(await cache.get('k'), null)
  t.equal(await cache.set('k', 1), false)
  t.equal(cache.getStatistics().connected, false)
  t.not(clientOf(cache).status, 'end', 'the client keeps trying')
})

/** After close, the client must not connect again, even once Redis is back. */
async function staysClosed (t: tap.Test, server: RedisServer, client: ReturnType<typeof clientOf>): Promise<void> {
  if (server.pid === undefined) await server.restart()
  else server.resume()
  await sleep(700) // longer than the reconnect delays so far
  t.notMatch(await server.cli('client', 'list'), /name=fastify-redis-cache/, 'no connection from the closed app')
  t.not(client.status, 'ready')
}

t.test('app.close() while Redis is down', async (t) => {
  t.test('down since the start', async (t) => {
    const server = await deadRedis(t)
    const { app, cache } = await build(t, options(server))
    const client = clientOf(cache)
    await sleep(300)
    await app.close()
    t.pass('closes with Redis still down')
    await staysClosed(t, server, client)
  })

  t.test('killed mid-run', async (t) => {
    const server = await startRedis()
    t.teardown(() => server.stop())
    const { app, cache } = await build(t, options(server))
    const client = clientOf(cache)
    await server.kill()
    await until(() => client.status !== 'ready', 30_000, 'the client to notice')
    await app.close()
    await staysClosed(t, server, client)
  })

  t.test('hung', async (t) => {
    const server = await startRedis()
    t.teardown(() => server.stop())
    const { app, cache } = await build(t, options(server, { commandTimeout: 100 }))
    const client = clientOf(cache)
    server.pause()
    t.teardown(() => { try { server.resume() } catch {} })
    await app.close()
    t.pass('close does not wait for the hung Redis')
    await staysClosed(t, server, client)
  })
})

t.test('Redis down: a Range request reaches the handler with its Range', async (t) => {
  const server = await deadRedis(t)
  const { app } = await routeApp(t, options(server), (app) => {
    app.get('/file', { config: { cache: { ttl: 60, freshness: 'response' } } }, async (request) => ({ range: request.headers.range ?? null }))
  })
  const response = await app.inject({ url: '/file', headers: { range: 'bytes=0-3' } })
  t.equal(response.headers['x-cache'], 'BYPASS')
  t.same(response.json(), { range: 'bytes=0-3' }, 'not taken away for a cut that will not happen')
})
