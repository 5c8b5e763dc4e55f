// What Fastify users expect of a plugin: a decorator name of their choice, log lines on the
// request path with the request's id (store failures included, whatever the route's log level),
// a 429 that is not an incident in the logs, and a word when a cached route was registered where
// the plugin could not see it.
import t from 'tap'
import Fastify from 'fastify'
import { captureLogs, LEVEL, type Scope, uniquePrefix, until } from './helpers/app'
import { startRedis } from './helpers/redis-server'
import fastifyRedisCache, { type FastifyCache } from '../index'

async function appWithLogs (t: Scope) {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'debug', stream: logs.stream } })
  t.teardown(() => app.close())
  return { app, logs }
}

t.test('decorator: another name, beside a plugin that took `cache`', async (t) => {
  const { app } = await appWithLogs(t)
  app.decorate('cache', { theOtherPlugin: true } as unknown as FastifyCache)
  await app.register(fastifyRedisCache, { redis: false, routes: false, decorator: 'redisCache' })
  await app.ready()
  const cache = (app as unknown as { redisCache: FastifyCache }).redisCache
  t.equal(await cache.set('k', 'v'), true)
  t.equal(await cache.get('k'), 'v')
  t.same(app.cache, { theOtherPlugin: true }, 'the other decoration is left alone')
})

t.test('decorator: default `cache`; a name that is no identifier fails', async (t) => {
  const { app } = await appWithLogs(t)
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  await app.ready()
  t.equal(typeof app.cache.getOrSet, 'function')
  const bad = Fastify()
  t.teardown(() => bad.close())
  bad.register(fastifyRedisCache, { redis: false, decorator: 'no-dash' })
  await t.rejects(async () => { await bad.ready() }, { name: 'CacheConfigError', message: /option decorator expected string to match/ })
})

t.test('a 429 from rateLimit is logged at debug without a stack', async (t) => {
  const { app, logs } = await appWithLogs(t)
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  app.get('/limited', async (request) => {
    await app.cache.rateLimit(`ip:${request.ip}`, { max: 1, window: 60 })
    return 'ok'
  })
  t.equal((await app.inject('/limited')).statusCode, 200)
  const limited = await app.inject('/limited')
  t.equal(limited.statusCode, 429)
  const lines = logs.find(/Rate limit of 1 per 60s exceeded/)
  t.equal(lines.length, 1)
  t.equal(lines[0].level, LEVEL.debug, 'at debug')
  t.equal(lines[0].err, undefined, 'no error object, no stack')
  t.match(lines[0], { code: 'CACHE_RATE_LIMITED', limit: 1, reqId: String })
})

t.test('request-path logs carry the request id', async (t) => {
  const { app, logs } = await appWithLogs(t)
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  app.get('/keyless', { config: { cache: { key: () => { throw new Error('no key today') } } } }, async () => 'x')
  app.post('/bust', { config: { cache: { bust: { keys: () => { throw new Error('no keys today') } } } } }, async () => 'x')
  t.equal((await app.inject('/keyless')).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/bust' })).statusCode, 200)
  const [key] = logs.find('cannot build the cache key')
  t.match(key, { reqId: String, plugin: 'fastify-redis-cache', url: '/keyless' })
  const [bust] = logs.find('cache bust failed')
  t.match(bust, { reqId: String, plugin: 'fastify-redis-cache', url: '/bust', level: LEVEL.error })
})

t.test('a store failure on the request path is logged with the request id', async (t) => {
  t.test('a read, with Redis gone, on a route that logs nothing of its own', async (t) => {
    const redis = await startRedis()
    t.teardown(() => redis.stop())
    const { app, logs } = await appWithLogs(t)
    await app.register(fastifyRedisCache, { redis: { url: redis.url }, prefix: uniquePrefix(), routes: false })
    // The first failure of an outage is the one line it gets for a while: a route's own log
    // level does not silence it.
    app.get('/item', { logLevel: 'silent', config: { cache: { ttl: 60 } } }, async () => 'x')
    await app.ready()
    await redis.stop()
    const response = await app.inject('/item')
    t.equal(response.headers['x-cache'], 'BYPASS', 'answered by the handler')
    const [line] = logs.find('get failed', LEVEL.warn)
    t.match(line, { reqId: String, plugin: 'fastify-redis-cache', op: 'get', key: /item/ })
  })

  t.test('a write, refused by an ACL after the read went through', async (t) => {
    const redis = await startRedis()
    t.teardown(() => redis.stop())
    await redis.cli('ACL', 'SETUSER', 'app', 'on', '>secret', '~*', '&*', '+@all', '-@scripting', '-set')
    const { app, logs } = await appWithLogs(t)
    await app.register(fastifyRedisCache, { redis: { url: `redis://app:secret@${redis.host}:${redis.port}` }, prefix: uniquePrefix(), routes: false })
    app.get('/item', { config: { cache: { ttl: 60 } } }, async () => 'x')
    await app.ready()
    // Reads go command by command once the probe has found scripting refused.
    await until(() => logs.find('missing Redis capabilities', LEVEL.warn).length > 0, 5000, 'the capability probe')
    t.equal((await app.inject('/item')).headers['x-cache'], 'MISS')
    await until(() => logs.find('set failed', LEVEL.warn).length > 0, 5000, 'the failed write to be logged')
    const [line] = logs.find('set failed', LEVEL.warn)
    t.match(line, { reqId: String, plugin: 'fastify-redis-cache', op: 'set', key: /item/ })
  })
})

t.test('a config.cache route the plugin cannot see is named in a warning, once', async (t) => {
  const { app, logs } = await appWithLogs(t)
  app.get('/early', { config: { cache: { ttl: 60 } } }, async () => 'x')
  app.register(async (child) => {
    child.get('/child-early', { config: { cache: { ttl: 60 } } }, async () => 'x')
  })
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  app.get('/late', { config: { cache: { ttl: 60 } } }, async () => 'x')
  app.get('/plain', async () => 'x')
  app.get('/off', { config: { cache: false } }, async () => 'x')
  for (const url of ['/early', '/early', '/child-early', '/late', '/late', '/plain', '/off']) await app.inject(url)
  await app.inject({ method: 'HEAD', url: '/late' })
  const warnings = logs.find('registered before the plugin', LEVEL.warn)
  t.same(warnings.map((w) => w.route), ['GET /early', 'GET /child-early'], 'each unseen route once, by name')
  t.match(warnings[0], { reqId: String, msg: /GET \/early has config\.cache/ })
  t.equal((await app.inject('/late')).headers['x-cache'], 'HIT', 'a route registered after the plugin is cached')
  t.equal((await app.inject('/early')).headers['x-cache'], undefined, 'the early one is not')
})
