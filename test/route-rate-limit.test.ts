// config.rateLimit on a route, in @fastify/rate-limit's shape: counted by fastify.cache.rateLimit
// in Redis (shared by instances), x-ratelimit-* headers on every answer, 429 with retry-after
// once the limit is passed, validated at registration like config.cache.
import t from 'tap'
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify'
import { uniquePrefix, type Scope } from './helpers/app'
import { startRedis } from './helpers/redis-server'
import fastifyRedisCache, { CacheConfigError } from '../index'
import { windowSeconds } from '../lib/route-rate-limit/time-window'
import type { CacheOptions } from '../types'

async function app (t: Scope, options: CacheOptions = { redis: false }, errorHandler = true): Promise<FastifyInstance> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { routes: false, errorHandler, ...options })
  return app
}

t.test('timeWindow: milliseconds or a duration in words, counted in whole seconds', async (t) => {
  t.equal(windowSeconds(undefined, 'x'), 60, 'one minute by default')
  t.equal(windowSeconds(1500, 'x'), 2, 'rounded up')
  t.equal(windowSeconds(10, 'x'), 1, 'at least a second')
  t.equal(windowSeconds('1 minute', 'x'), 60)
  t.equal(windowSeconds('30s', 'x'), 30)
  t.equal(windowSeconds('2 hours', 'x'), 7200)
  t.equal(windowSeconds('1d', 'x'), 86400)
  t.equal(windowSeconds('2500 ms', 'x'), 3)
  t.equal(windowSeconds('3000', 'x'), 3, 'a bare number is milliseconds')
  t.equal(windowSeconds('5 mins', 'x'), 300)
  t.throws(() => windowSeconds('soon', 'config.rateLimit of GET /x'), { name: 'CacheConfigError', message: /config\.rateLimit of GET \/x: timeWindow must be/ })
  t.throws(() => windowSeconds('0s', 'x'), CacheConfigError)
})

t.test('headers on every answer; a 429 with retry-after past max', async (t) => {
  const server = await app(t)
  server.get('/limited', { config: { rateLimit: { max: 2, timeWindow: '1 minute' } } }, async () => 'ok')
  server.get('/free', async () => 'ok')
  const first = await server.inject('/limited')
  t.equal(first.statusCode, 200)
  t.match(first.headers, { 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '1', 'x-ratelimit-reset': /^\d+$/ })
  t.equal(first.headers['retry-after'], undefined, 'no retry-after while allowed')
  t.equal((await server.inject('/limited')).headers['x-ratelimit-remaining'], '0')
  const refused = await server.inject('/limited')
  t.equal(refused.statusCode, 429)
  t.match(refused.headers, { 'x-ratelimit-limit': '2', 'x-ratelimit-remaining': '0', 'retry-after': /^\d+$/ })
  t.ok(Number(refused.headers['retry-after']) >= 1 && Number(refused.headers['retry-after']) <= 60)
  t.match(refused.json(), { statusCode: 429, code: 'CACHE_RATE_LIMITED', error: 'Too Many Requests' })
  t.equal((await server.inject('/free')).headers['x-ratelimit-limit'], undefined, 'other routes are not limited')
})

t.test('keyGenerator splits the count; without the error handler Fastify still answers 429', async (t) => {
  const server = await app(t, { redis: false }, false)
  let runs = 0
  server.get('/by-user', {
    config: { rateLimit: { max: 1, timeWindow: 60_000, keyGenerator: async (req) => String(req.headers['x-user']) } },
    onRequest: async () => { runs++ }
  }, async () => 'ok')
  t.equal((await server.inject({ url: '/by-user', headers: { 'x-user': 'a' } })).statusCode, 200)
  t.equal((await server.inject({ url: '/by-user', headers: { 'x-user': 'b' } })).statusCode, 200, 'another user, another count')
  const refused = await server.inject({ url: '/by-user', headers: { 'x-user': 'a' } })
  t.equal(refused.statusCode, 429)
  t.ok(Number(refused.headers['retry-after']) >= 1)
  t.equal(runs, 2, "the route's own hooks do not run on a refused request")
})

t.test('counted in Redis: two instances share the limit', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const prefix = uniquePrefix('rl')
  const [a, b] = [await app(t, { redis: { url: redis.url }, prefix }), await app(t, { redis: { url: redis.url }, prefix })]
  for (const server of [a, b]) server.post('/login', { config: { rateLimit: { max: 3, timeWindow: '1 minute' } } }, async () => 'ok')
  const statuses = []
  for (const server of [a, b, a, b]) statuses.push((await server.inject({ method: 'POST', url: '/login' })).statusCode)
  t.same(statuses, [200, 200, 200, 429])
})

t.test('config.rateLimit is validated like config.cache', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ max: 5, timewindow: 1000 }, /config\.rateLimit of GET \/x: unknown option config\.rateLimit\.timewindow \(did you mean timeWindow\?\)/],
    [{ timeWindow: 1000 }, /option config\.rateLimit\.max expected required property/],
    [{ max: 0 }, /option config\.rateLimit\.max expected integer to be greater or equal to 1/],
    [{ max: 1, timeWindow: 'soon' }, /timeWindow must be milliseconds or a duration/],
    [true, /config\.rateLimit of GET \/x: it must be an object or false/]
  ]
  for (const [rateLimit, message] of cases) {
    const server = await app(t)
    t.throws(() => server.route({ method: 'GET', url: '/x', config: { rateLimit } as RouteOptions['config'], handler: async () => 'x' }), { name: 'CacheConfigError', message }, JSON.stringify(rateLimit))
  }
  const server = await app(t)
  server.get('/off', { config: { rateLimit: false } }, async () => 'x')
  t.equal((await server.inject('/off')).headers['x-ratelimit-limit'], undefined, 'false: no limit')
})
