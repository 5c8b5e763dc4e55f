// Securing the management routes: a bearer token (routes.token or CACHE_ADMIN_TOKEN) compared in
// constant time, a user preHandler, both together, and the production rule (no token and no
// preHandler fails registration naming CACHE_ADMIN_TOKEN unless the routes are off or public).
import { createHash } from 'node:crypto'
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import t from 'tap'
import fastifyRedisCache from '../index'
import { bearerChecker } from '../lib/management/auth'
import { build, MANAGEMENT_ROUTES } from './helpers/app'

const ROUTES = MANAGEMENT_ROUTES

const TOKEN = 's3cret-Token_with.chars~+/='

t.test('bearerChecker', async (t) => {
  const valid = bearerChecker(TOKEN)
  t.ok(valid(`Bearer ${TOKEN}`))
  t.ok(valid(`bearer ${TOKEN}`), 'the scheme is case-insensitive')
  t.ok(valid(`BEARER   ${TOKEN}  `), 'surrounding whitespace is ignored')
  t.notOk(valid(undefined))
  t.notOk(valid(''))
  t.notOk(valid('Bearer'))
  t.notOk(valid('Bearer '))
  t.notOk(valid(TOKEN), 'no scheme')
  t.notOk(valid(`Basic ${TOKEN}`), 'another scheme')
  t.notOk(valid(`Bearer ${TOKEN.slice(0, -1)}`), 'a prefix of the token')
  t.notOk(valid(`Bearer ${TOKEN}x`), 'the token plus more')
  t.notOk(valid(`Bearer ${TOKEN.toUpperCase()}`), 'the token is case-sensitive')
  t.notOk(valid(`Bearer ${TOKEN} ${TOKEN}`))
  t.notOk(valid(`Bearer ${'x'.repeat(100_000)}`), 'a huge header is just wrong')
  // A token that hashes like the empty string cannot be forged with an empty credential.
  t.notOk(bearerChecker('')('Bearer '), 'an empty token never matches')
})

t.test('the comparison is of fixed-length digests (no length or prefix leak)', async (t) => {
  // timingSafeEqual throws on buffers of different lengths: the checker only ever compares
  // SHA-256 digests, whatever it is given. Spy on it to see the lengths it gets.
  const seen: number[][] = []
  const crypto = await import('node:crypto')
  const { bearerChecker: checker } = t.mockRequire('../lib/management/auth', {
    'node:crypto': {
      ...crypto,
      timingSafeEqual: (a: Buffer, b: Buffer) => {
        seen.push([a.length, b.length])
        return crypto.timingSafeEqual(a, b)
      }
    }
  }) as typeof import('../lib/management/auth')
  const valid = checker('short')
  for (const header of ['Bearer short', 'Bearer s', 'Bearer a-much-much-longer-candidate-token', 'Basic x', '']) valid(header)
  t.same(seen, Array(5).fill([32, 32]), 'every call compares two 32-byte digests')
  t.equal(createHash('sha256').update('x').digest().length, 32)
})

t.test('with routes.token every route needs the bearer token', async (t) => {
  const { app, logs } = await build(t, { redis: false, routes: { token: TOKEN } })
  for (const [method, url] of ROUTES) {
    const missing = await app.inject({ method, url })
    t.equal(missing.statusCode, 401, `${method} ${url} without a token: 401`)
    t.equal(missing.headers['www-authenticate'], 'Bearer realm="fastify-redis-cache"')
    if (method !== 'HEAD') {
      t.same(missing.json(), { statusCode: 401, code: 'CACHE_UNAUTHORIZED', error: 'Unauthorized', message: 'A valid Authorization: Bearer token is required' })
    }
    const wrong = await app.inject({ method, url, headers: { authorization: 'Bearer nope' } })
    t.equal(wrong.statusCode, 401, `${method} ${url} with a wrong token: 401`)
    t.equal(wrong.headers['www-authenticate'], 'Bearer realm="fastify-redis-cache", error="invalid_token"')
    const basic = await app.inject({ method, url, headers: { authorization: `Basic ${TOKEN}` } })
    t.equal(basic.statusCode, 401, `${method} ${url} with the token under another scheme: 401`)
    const right = await app.inject({ method, url, headers: { authorization: `Bearer ${TOKEN}` } })
    t.equal(right.statusCode, 200, `${method} ${url} with the token: 200`)
  }
  t.ok(logs.find('management route refused').length > 0, 'refusals are logged')
  t.notOk(JSON.stringify(logs.lines).includes(TOKEN), 'the token is never logged')
})

t.test('the token is checked before validation: no 400 leaks to a caller without it', async (t) => {
  const { app } = await build(t, { redis: false, routes: { token: TOKEN } })
  const res = await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=a*' })
  t.equal(res.statusCode, 401)
  const authed = await app.inject({ method: 'DELETE', url: '/cache/clear?namespace=a*', headers: { authorization: `Bearer ${TOKEN}` } })
  t.equal(authed.statusCode, 400)
})

t.test('a refused clear clears nothing', async (t) => {
  const { app, cache } = await build(t, { redis: false, routes: { token: TOKEN } })
  await cache.set('k', 1)
  t.equal((await app.inject({ method: 'DELETE', url: '/cache/clear' })).statusCode, 401)
  t.equal(await cache.exists('k'), 1)
  t.equal((await app.inject({ method: 'GET', url: '/cache/reset-stats' })).statusCode, 401)
  t.equal(cache.getStatistics().sets, 1, 'statistics not reset')
})

t.test('CACHE_ADMIN_TOKEN sets the token; routes.token wins over it', async (t) => {
  process.env.CACHE_ADMIN_TOKEN = 'from-env'
  t.teardown(() => { delete process.env.CACHE_ADMIN_TOKEN })
  const fromEnv = await build(t, { redis: false, routes: {} })
  t.equal((await fromEnv.app.inject('/cache/stats')).statusCode, 401)
  t.equal((await fromEnv.app.inject({ url: '/cache/stats', headers: { authorization: 'Bearer from-env' } })).statusCode, 200)

  const explicit = await build(t, { redis: false, routes: { token: 'explicit' } })
  t.equal((await explicit.app.inject({ url: '/cache/stats', headers: { authorization: 'Bearer from-env' } })).statusCode, 401)
  t.equal((await explicit.app.inject({ url: '/cache/stats', headers: { authorization: 'Bearer explicit' } })).statusCode, 200)
})

t.test('the token guards the management routes only', async (t) => {
  const logsApp = Fastify()
  t.teardown(() => logsApp.close())
  await logsApp.register(fastifyRedisCache, { redis: false, routes: { token: TOKEN } })
  logsApp.get('/public', async () => ({ ok: true }))
  logsApp.get('/cache-like', async () => ({ ok: true }))
  await logsApp.ready()
  t.equal((await logsApp.inject('/public')).statusCode, 200)
  t.equal((await logsApp.inject('/cache-like')).statusCode, 200)
  t.equal((await logsApp.inject('/cache/nothing-here')).statusCode, 404, 'unknown paths under the prefix are plain 404s')
})

const apiKeyCheck = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
  if (request.headers['x-api-key'] !== 'letmein') await reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'no key' })
}

t.test('routes.preHandler plugs in the app\'s own authentication', async (t) => {
  const { app } = await build(t, { redis: false, routes: { preHandler: apiKeyCheck } })
  for (const [method, url] of ROUTES) {
    const refused = await app.inject({ method, url })
    t.equal(refused.statusCode, 403, `${method} ${url} refused by the preHandler`)
    const allowed = await app.inject({ method, url, headers: { 'x-api-key': 'letmein' } })
    t.equal(allowed.statusCode, 200, `${method} ${url} allowed by the preHandler`)
  }
})

t.test('a callback-style preHandler works too', async (t) => {
  const { app } = await build(t, {
    redis: false,
    routes: {
      preHandler (request, reply, done) {
        if (request.headers['x-ok'] === '1') done()
        else reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'no' })
      }
    }
  })
  t.equal((await app.inject('/cache/ping')).statusCode, 403)
  t.equal((await app.inject({ url: '/cache/ping', headers: { 'x-ok': '1' } })).statusCode, 200)
})

t.test('a preHandler that throws answers through the error handler', async (t) => {
  const { app } = await build(t, {
    redis: false,
    routes: { preHandler: async () => { throw Object.assign(new Error('denied'), { statusCode: 403 }) } }
  })
  const res = await app.inject('/cache/stats')
  t.equal(res.statusCode, 403)
  t.match(res.json(), { statusCode: 403, message: 'denied' })
})

t.test('token and preHandler together: both must pass, the token first', async (t) => {
  let calls = 0
  const { app } = await build(t, {
    redis: false,
    routes: {
      token: TOKEN,
      preHandler: async (request, reply) => {
        calls++
        await apiKeyCheck(request, reply)
      }
    }
  })
  t.equal((await app.inject('/cache/stats')).statusCode, 401)
  t.equal((await app.inject({ url: '/cache/stats', headers: { 'x-api-key': 'letmein' } })).statusCode, 401)
  t.equal(calls, 0, 'the preHandler never runs for a caller without the token')
  t.equal((await app.inject({ url: '/cache/stats', headers: { authorization: `Bearer ${TOKEN}` } })).statusCode, 403)
  t.equal((await app.inject({ url: '/cache/stats', headers: { authorization: `Bearer ${TOKEN}`, 'x-api-key': 'letmein' } })).statusCode, 200)
})

t.test('production', async (t) => {
  for (const variable of ['ENVIRONMENT', 'NODE_ENV']) {
    t.test(`${variable}=production`, async (t) => {
      process.env[variable] = 'production'
      t.teardown(() => { delete process.env[variable] })

      const refused = Fastify()
      t.teardown(() => refused.close())
      await t.rejects(async () => { await refused.register(fastifyRedisCache, { redis: false }).ready() }, {
        name: 'CacheConfigError',
        message: /CACHE_ADMIN_TOKEN/
      }, 'no token and no preHandler: registration fails naming CACHE_ADMIN_TOKEN')

      const emptyRoutes = Fastify()
      t.teardown(() => emptyRoutes.close())
      await t.rejects(async () => { await emptyRoutes.register(fastifyRedisCache, { redis: false, routes: { prefix: '/admin' } }).ready() }, /CACHE_ADMIN_TOKEN/)

      const withToken = await build(t, { redis: false, routes: { token: TOKEN } })
      t.equal((await withToken.app.inject('/cache/ping')).statusCode, 401, 'a token is enough')

      process.env.CACHE_ADMIN_TOKEN = 'env-token'
      const withEnvToken = await build(t, { redis: false, routes: {} })
      delete process.env.CACHE_ADMIN_TOKEN
      t.equal((await withEnvToken.app.inject({ url: '/cache/ping', headers: { authorization: 'Bearer env-token' } })).statusCode, 200, 'CACHE_ADMIN_TOKEN is enough')

      const withPreHandler = await build(t, { redis: false, routes: { preHandler: apiKeyCheck } })
      t.equal((await withPreHandler.app.inject('/cache/ping')).statusCode, 403, 'a preHandler is enough')

      const explicitlyPublic = await build(t, { redis: false, routes: { public: true } })
      t.equal((await explicitlyPublic.app.inject('/cache/ping')).statusCode, 200, 'routes.public: true opts out')

      const off = await build(t, { redis: false, routes: false })
      t.equal((await off.app.inject('/cache/ping')).statusCode, 404, 'routes: false is fine')
    })
  }

  t.test('other environments need no token', async (t) => {
    process.env.NODE_ENV = 'staging'
    process.env.ENVIRONMENT = 'development'
    t.teardown(() => { delete process.env.NODE_ENV; delete process.env.ENVIRONMENT })
    const { app } = await build(t, { redis: false, routes: {} })
    t.equal((await app.inject('/cache/ping')).statusCode, 200)
  })
})
