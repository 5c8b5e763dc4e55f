// The management routes (GET stats, GET ping, DELETE clear, GET/POST reset-stats, GET metrics)
// on the memory store and on a real Redis, including Redis going away and hanging.
import Fastify from 'fastify'
import t from 'tap'
import fastifyRedisCache from '../index'
import { build, rawClient, uniquePrefix } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import type { CacheManager } from '../lib/cache/manager'
import { connectionStatus } from '../lib/management/routes'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor (check: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(20)
  }
}

const STAT_FIELDS = ['hits', 'misses', 'sets', 'deletes', 'evictions', 'errors', 'oversized', 'bytesRead', 'bytesWritten',
  'hitRate', 'compressedBytesIn', 'compressedBytesOut', 'compressionRatio', 'namespaces', 'store', 'connected', 'uptime']
const INFO_FIELDS = ['store', 'connected', 'status', 'redisVersion', 'usedMemory', 'usedMemoryHuman', 'connectedClients',
  'evictedKeys', 'expiredKeys', 'keyspaceHits', 'keyspaceMisses', 'uptimeSeconds']

t.test('memory store', async (t) => {
  const { app, cache } = await build(t, { redis: false, routes: {} })

  t.test('GET /cache/stats: statistics plus store info', async (t) => {
    cache.resetStatistics()
    await cache.set('a', { x: 1 })
    await cache.get('a')
    await cache.get('nope')
    const res = await app.inject('/cache/stats')
    t.equal(res.statusCode, 200)
    t.equal(res.headers['cache-control'], 'no-store', 'never stored by browsers or proxies')
    const body = res.json()
    t.same(Object.keys(body).sort(), ['redis', 'statistics'])
    for (const field of STAT_FIELDS) t.ok(field in body.statistics, `statistics.${field}`)
    for (const field of INFO_FIELDS) t.ok(field in body.redis, `redis.${field}`)
    t.match(body.statistics, { hits: 1, misses: 1, sets: 1, hitRate: 0.5, store: 'memory', connected: true })
    t.match(body.redis, { store: 'memory', connected: true, status: 'ready', redisVersion: null, connectedClients: null })
    t.ok(body.redis.usedMemory > 0, 'the memory store reports what it holds')
  })

  t.test('GET /cache/ping', async (t) => {
    const res = await app.inject('/cache/ping')
    t.equal(res.statusCode, 200)
    const body = res.json()
    t.equal(body.status, 'ok')
    t.equal(body.circuit, 'closed')
    t.type(body.latencyMs, 'number')
    t.ok(Number.isFinite(body.latencyMs) && body.latencyMs >= 0, 'a latency in ms')
  })

  t.test('DELETE /cache/clear: one namespace, then everything', async (t) => {
    await cache.set('1', 1, { namespace: 'a' })
    await cache.set('2', 2, { namespace: 'a' })
    await cache.set('3', 3, { namespace: 'ab' })
    await cache.set('4', 4)
    t.same((await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=a' })).json(), { cleared: 2 })
    t.equal(await cache.exists('3', { namespace: 'ab' }), 1, 'namespace ab untouched by clearing a')
    t.same((await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=a' })).json(), { cleared: 0 })
    const all = await app.inject({ method: 'DELETE', url: '/cache/clear' })
    t.equal(all.statusCode, 200)
    t.ok(all.json().cleared >= 2)
    t.equal(await cache.exists(['3', '4']), 0)
    t.equal(await cache.exists('3', { namespace: 'ab' }), 0)
  })

  t.test('DELETE /cache/clear: a namespace that is not a plain name is a 400', async (t) => {
    await cache.set('keep', 1, { namespace: 'safe' })
    for (const namespace of ['a*', '*', 'a:b', '#tag', 'a b', '', 'x'.repeat(129), 'a?', '[ab]', 'é']) {
      const res = await app.inject({ method: 'DELETE', url: `/cache/clear?namespace=${encodeURIComponent(namespace)}` })
      t.equal(res.statusCode, 400, `${JSON.stringify(namespace)} refused`)
      t.match(res.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION', error: 'Bad Request', message: /namespace/ })
    }
    const repeated = await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=a&namespace=b' })
    t.equal(repeated.statusCode, 400, 'a repeated namespace is refused')
    for (const query of ['pattern=*', 'namspace=safe', 'namespace=safe&extra=1']) {
      const unknown = await app.inject({ method: 'DELETE', url: `/cache/clear?${query}` })
      t.equal(unknown.statusCode, 400, `?${query}: unknown parameters are refused, not ignored`)
      t.match(unknown.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION', error: 'Bad Request', message: /additional properties/ })
    }
    t.equal(await cache.exists('keep', { namespace: 'safe' }), 1, 'nothing was cleared')
  })

  t.test('GET and POST /cache/reset-stats', async (t) => {
    for (const method of ['GET', 'POST'] as const) {
      await cache.get('x')
      t.ok(cache.getStatistics().misses > 0)
      const res = await app.inject({ method, url: '/cache/reset-stats' })
      t.equal(res.statusCode, 200)
      t.same(res.json(), { reset: true })
      t.equal(cache.getStatistics().misses, 0, `${method} reset the statistics`)
    }
  })

  t.test('GET /cache/metrics answers the exposition format', async (t) => {
    const res = await app.inject('/cache/metrics')
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
    t.equal(res.headers['cache-control'], 'no-store')
    t.match(res.body, /^# HELP fastify_redis_cache_hits_total /)
  })

  t.test('the dashboard page is served and carries no data', async (t) => {
    const res = await app.inject('/cache/dashboard')
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'text/html; charset=utf-8')
    t.equal(res.headers['cache-control'], 'no-store')
    t.match(res.headers['content-security-policy'], /default-src 'none'; script-src 'sha256-/)
    t.notMatch(res.body, /"hits":/, 'no figures in the HTML')
  })

  t.test('management answers are never route-cached', async (t) => {
    for (const url of ['/cache/stats', '/cache/ping', '/cache/metrics']) {
      const res = await app.inject(url)
      t.notOk('x-cache' in res.headers, `${url} has no X-Cache`)
      t.notOk('etag' in res.headers, `${url} has no ETag`)
    }
  })
})

t.test('routes.prefix moves the routes; routes: false leaves them out', async (t) => {
  const moved = await build(t, { redis: false, routes: { prefix: '/admin/cache/' } })
  t.equal((await moved.app.inject('/admin/cache/ping')).statusCode, 200)
  t.equal((await moved.app.inject('/cache/ping')).statusCode, 404)

  const none = await build(t, { redis: false, routes: false })
  for (const url of ['/cache/stats', '/cache/ping', '/cache/metrics', '/cache/reset-stats']) {
    t.equal((await none.app.inject(url)).statusCode, 404, `${url} absent`)
  }
  t.equal((await none.app.inject({ method: 'DELETE', url: '/cache/clear' })).statusCode, 404)
})

t.test('a management route answers as documented whatever the app\'s error handler does', async (t) => {
  const { app } = await build(t, { redis: false, routes: { dashboard: false } })
  t.equal((await app.inject('/cache/dashboard')).statusCode, 404)
  // The app's own handler (set on the root, after the plugin) answers everything with 418;
  // the management routes keep their documented 400.
  const own = Fastify()
  t.teardown(() => own.close())
  own.setErrorHandler((_err, _request, reply) => { reply.code(418).send({ mine: true }) })
  await own.register(fastifyRedisCache, { redis: false, routes: {} })
  own.get('/boom', async () => { throw new Error('boom') })
  await own.ready()
  t.equal((await own.inject({ method: 'DELETE', url: '/cache/clear?namespace=a*' })).statusCode, 400)
  t.equal((await own.inject('/boom')).statusCode, 418, 'the app\'s handler still handles its routes')
})

t.test('a management route that fails on something else leaves it to the app\'s handler', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  app.setErrorHandler((err: Error, _request, reply) => { reply.code(418).send({ mine: err.message }) })
  await app.register(fastifyRedisCache, { redis: false, routes: {} })
  await app.ready()
  const cache = app.cache as CacheManager
  cache.resetStatistics = () => { throw new Error('unexpected') }
  const res = await app.inject('/cache/reset-stats')
  t.equal(res.statusCode, 418)
  t.same(res.json(), { mine: 'unexpected' })
})

t.test('Redis', async (t) => {
  let server: RedisServer
  t.before(async () => { server = await startRedis() })
  t.teardown(() => server.stop())

  t.test('GET /cache/stats with Redis info, up and down', async (t) => {
    const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, commandTimeout: 200 })
    await cache.set('k', 'v')
    await cache.get('k')
    const res = await app.inject('/cache/stats')
    t.equal(res.statusCode, 200)
    const { statistics, redis } = res.json()
    t.match(statistics, { hits: 1, sets: 1, store: 'redis', connected: true })
    for (const field of INFO_FIELDS) t.ok(field in redis, `redis.${field}`)
    t.match(redis, { store: 'redis', connected: true, status: 'ready' })
    t.match(redis.redisVersion, /^\d+\.\d+\.\d+/)
    t.ok(redis.usedMemory > 0)
    t.type(redis.usedMemoryHuman, 'string')
    t.ok(redis.connectedClients >= 1)
    t.ok(redis.keyspaceHits >= 1)
    t.type(redis.keyspaceMisses, 'number')
    t.type(redis.evictedKeys, 'number')
    t.type(redis.expiredKeys, 'number')
    t.type(redis.uptimeSeconds, 'number')

    await server.kill()
    await waitFor(() => connectionStatus(cache.core.stack) !== 'ready', 'the client to notice')
    const down = await app.inject('/cache/stats')
    t.equal(down.statusCode, 200, 'stats still answer while Redis is down')
    t.match(down.json().redis, { store: 'redis', connected: false, redisVersion: null, usedMemory: null })
    t.not(down.json().redis.status, 'ready')
    t.equal(down.json().statistics.connected, false)
    await server.restart()
    await waitFor(() => cache.core.stack.connected, 'the reconnect', 10_000)
  })

  t.test('GET /cache/ping: 200 with latency, 503 when Redis is down or hangs', async (t) => {
    const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, commandTimeout: 200 })
    const ok = await app.inject('/cache/ping')
    t.equal(ok.statusCode, 200)
    t.equal(ok.json().status, 'ok')
    t.ok(ok.json().latencyMs > 0, 'a real round trip takes some time')

    // Answered while Redis still hangs: the command timeout, not Redis, ends the wait.
    server.pause()
    const hung = await app.inject('/cache/ping')
    server.resume()
    t.equal(hung.statusCode, 503, 'a hung Redis is a 503')
    t.match(hung.json(), { status: 'error', circuit: /^(closed|open|half-open)$/ })
    t.same(Object.keys(hung.json()).sort(), ['circuit', 'status'])
    await waitFor(() => cache.core.stack.connected, 'the circuit to close', 10_000)

    await server.kill()
    const dead = await app.inject('/cache/ping')
    t.equal(dead.statusCode, 503, 'a dead Redis is a 503')
    t.match(dead.json(), { status: 'error' })

    await server.restart()
    await waitFor(() => cache.core.stack.connected, 'the reconnect', 10_000)
    t.equal((await app.inject('/cache/ping')).statusCode, 200, 'back to 200 once Redis is back')
  })

  t.test('DELETE /cache/clear touches only this prefix and only the namespace asked for', async (t) => {
    const prefix = uniquePrefix('clr')
    const { app, cache } = await build(t, { redis: { url: server.url }, prefix, routes: {} })
    const raw = rawClient(t, server.url)
    await raw.set('outside:key', '1')
    await raw.set(`${prefix}x:ns:key`, '1', 'EX', 60) // a neighbouring prefix
    await cache.set('1', 1, { namespace: 'ns' })
    await cache.set('2', 2, { namespace: 'ns' })
    await cache.set('3', 3, { namespace: 'ns2' })
    await cache.set('4', 4, { namespace: 'n' })
    await cache.set('5', 5, { tags: ['t'] })

    const one = await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=ns' })
    t.equal(one.statusCode, 200)
    t.same(one.json(), { cleared: 2 })
    t.equal(await cache.exists('3', { namespace: 'ns2' }), 1, 'ns2 untouched')
    t.equal(await cache.exists('4', { namespace: 'n' }), 1, 'n untouched')

    const all = await app.inject({ method: 'DELETE', url: '/cache/clear' })
    t.same(all.json(), { cleared: 3 })
    t.same((await raw.keys(`${prefix}:*`)).sort(), [`${prefix}:#all`, `${prefix}:#ns:ns`], 'nothing left under the prefix but the stamps of the clears')
    t.equal(await raw.get('outside:key'), '1', 'keys outside the prefix untouched')
    t.equal(await raw.get(`${prefix}x:ns:key`), '1', 'a neighbouring prefix untouched')
    await raw.del('outside:key', `${prefix}x:ns:key`)
  })

  t.test('DELETE /cache/clear while Redis is down is a 503, not a silent 0', async (t) => {
    for (const throwOnError of [false, true]) {
      const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, throwOnError, commandTimeout: 200 })
      await server.kill()
      await waitFor(() => !cache.core.stack.connected, 'the client to notice')
      const res = await app.inject({ method: 'DELETE', url: '/cache/clear' })
      t.equal(res.statusCode, 503, `throwOnError: ${throwOnError}`)
      t.match(res.json(), { statusCode: 503, code: 'CACHE_REDIS_CONNECTION', error: 'Service Unavailable', message: /Redis/ })
      await server.restart()
      await waitFor(() => cache.core.stack.connected, 'the reconnect', 10_000)
    }
  })

  t.test('DELETE /cache/clear when the clear itself fails with throwOnError is the mapped 503', async (t) => {
    const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, throwOnError: true, commandTimeout: 200 })
    await cache.set('k', 1)
    server.pause()
    const res = await app.inject({ method: 'DELETE', url: '/cache/clear' })
    server.resume()
    t.equal(res.statusCode, 503)
    t.match(res.json(), { statusCode: 503, code: 'CACHE_REDIS_CONNECTION', error: 'Service Unavailable' })
    await waitFor(() => cache.core.stack.connected, 'the circuit to close', 10_000)
  })

  t.test('GET /cache/stats with throwOnError while Redis is down still answers', async (t) => {
    const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, throwOnError: true, commandTimeout: 200 })
    await server.kill()
    await waitFor(() => !cache.core.stack.connected, 'the client to notice')
    const res = await app.inject('/cache/stats')
    t.equal(res.statusCode, 200)
    t.match(res.json().redis, { store: 'redis', connected: false, redisVersion: null })
    await server.restart()
    await waitFor(() => cache.core.stack.connected, 'the reconnect', 10_000)
  })
})
