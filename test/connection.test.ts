// Registration variants against real Redis servers: { url }, ioredis options (host, port,
// password, username, db), { client, closeClient }, the REDIS_* environment, and what
// app.close() closes.
import t from 'tap'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { build, clientOf, LEVEL, until, uniquePrefix } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import fastifyRedisCache from '../index'
import { createClient, reconnectDelay } from '../lib/connection'
import { RedisConnectionError } from '../lib/errors'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(async () => { await server?.stop() })

/** Sets environment variables for one test. */
function withEnv (t: tap.Test, vars: Record<string, string>): void {
  for (const [name, value] of Object.entries(vars)) process.env[name] = value
  t.teardown(() => { for (const name of Object.keys(vars)) delete process.env[name] })
}

t.test('redis: { url }', async (t) => {
  const { app, cache, logs } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix() })
  const client = clientOf(cache)
  t.equal(app.redis.cache, client, '@fastify/redis decorates fastify.redis.cache')
  t.equal(client.status, 'ready')
  t.equal(cache.getStatistics().store, 'redis')
  t.equal(cache.getStatistics().connected, true)
  t.equal(await cache.set('k', 'v'), true)
  t.equal(await app.redis.cache.exists(cache.redisKey('k')), 1)
  t.match(await server.cli('client', 'list'), /name=fastify-redis-cache/, 'the connection is named')
  t.match(client.options, { enableOfflineQueue: false, enableAutoPipelining: true, maxRetriesPerRequest: 1, commandTimeout: 500, connectTimeout: 2000 })
  t.equal(logs.find('memory store').length, 0, 'no memory store')
  await app.close()
  await until(() => client.status === 'end', 30_000, 'the client to end')
  t.pass('app.close() closes the client the plugin opened')
})

t.test('ioredis options: host, port, db, namespace, commandTimeout', async (t) => {
  const { app, cache } = await build(t, { redis: { host: server.host, port: server.port, db: 3, namespace: 'mine' }, prefix: uniquePrefix(), commandTimeout: 250 })
  t.equal(app.redis.mine, clientOf(cache))
  t.match(clientOf(cache).options, { host: '127.0.0.1', port: server.port, db: 3, commandTimeout: 250 })
  await cache.set('k', 'v')
  t.equal(await server.cli('-n', '3', 'exists', cache.redisKey('k')), '1', 'stored in database 3')
  t.equal(await server.cli('-n', '0', 'exists', cache.redisKey('k')), '0')
})

t.test('url with a database', async (t) => {
  const { cache } = await build(t, { redis: { url: `${server.url}/4` }, prefix: uniquePrefix() })
  await cache.set('k', 'v')
  t.equal(await server.cli('-n', '4', 'exists', cache.redisKey('k')), '1')
})

t.test('password and username', async (t) => {
  const secured = await startRedis({ password: 'top secret', args: ['--user', 'alice', 'on', '>alice pw', '~*', '&*', '+@all'] })
  t.teardown(() => secured.stop())

  t.test('password option', async (t) => {
    const { app, cache } = await build(t, { redis: { host: secured.host, port: secured.port, password: 'top secret' }, prefix: uniquePrefix() })
    t.equal(await cache.set('k', 1), true)
    t.equal(await app.redis.cache.call('acl', 'whoami'), 'default')
  })

  t.test('password in the url', async (t) => {
    const { cache } = await build(t, { redis: { url: secured.url }, prefix: uniquePrefix() })
    t.equal(await cache.set('k', 1), true)
  })

  t.test('username and password options', async (t) => {
    const { app, cache } = await build(t, { redis: { host: secured.host, port: secured.port, username: 'alice', password: 'alice pw' }, prefix: uniquePrefix() })
    t.equal(await cache.set('k', 1), true)
    t.equal(await app.redis.cache.call('acl', 'whoami'), 'alice')
  })

  t.test('REDIS_USERNAME and REDIS_PASSWORD', async (t) => {
    withEnv(t, { REDIS_HOST: secured.host, REDIS_PORT: String(secured.port), REDIS_USERNAME: 'alice', REDIS_PASSWORD: 'alice pw' })
    const { app, cache } = await build(t, { prefix: uniquePrefix() })
    t.equal(await app.redis.cache.call('acl', 'whoami'), 'alice')
    t.equal(await cache.ping(), true)
  })

  for (const [what, redis] of [
    ['a wrong password', { host: secured.host, port: secured.port, password: 'wrong' }],
    ['no password', { host: secured.host, port: secured.port }],
    ['a wrong username', { host: secured.host, port: secured.port, username: 'mallory', password: 'alice pw' }]
  ] as const) {
    t.test(`${what} fails registration with RedisConnectionError`, async (t) => {
      const app = Fastify({ logger: false })
      t.teardown(() => app.close())
      // Refused at once by Redis, not retried for ever: rejecting at all is the point.
      const err = await t.rejects(async () => {
        await app.register(fastifyRedisCache, { redis, routes: false })
        await app.ready()
      }, RedisConnectionError) as unknown as RedisConnectionError
      t.match(err.message, /cannot use Redis: (WRONGPASS|NOAUTH)/)
      t.equal(err.statusCode, 503)
    })
  }
})

t.test('an unknown host fails registration', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await t.rejects(async () => {
    await app.register(fastifyRedisCache, { redis: { host: 'no-such-host.invalid', port: 6390 }, routes: false })
    await app.ready()
  }, { name: 'RedisConnectionError', message: /ENOTFOUND/ })
})

t.test('{ client } is never closed by the plugin without closeClient', async (t) => {
  const client = new Redis(server.url)
  t.teardown(() => client.disconnect())
  await client.ping()
  const { app, cache } = await build(t, { redis: { client }, prefix: uniquePrefix() })
  t.equal(clientOf(cache), client)
  t.equal(app.redis.cache, client)
  t.equal(await cache.set('k', 'v'), true)
  await app.close()
  t.equal(client.status, 'ready', 'still open')
  t.equal(await client.ping(), 'PONG')
  t.equal(await client.exists(cache.redisKey('k')), 1)
})

t.test('{ client, closeClient: true } is closed with the app', async (t) => {
  const client = new Redis(server.url, { lazyConnect: true })
  t.teardown(() => client.disconnect())
  client.connect().catch(() => {})
  const { app, cache } = await build(t, { redis: { client, closeClient: true }, prefix: uniquePrefix() })
  t.equal(client.status, 'ready', 'registration waited for the connecting client')
  t.equal(await cache.set('k', 'v'), true)
  await app.close()
  await until(() => client.status === 'end', 30_000, 'the client to end')
  t.pass('closed')
})

t.test('a client the user passes in gets the command timeout from the plugin', async (t) => {
  const client = new Redis(server.url, { enableOfflineQueue: false })
  t.teardown(() => client.disconnect())
  client.on('error', () => {})
  const { cache } = await build(t, { redis: { client }, prefix: uniquePrefix(), commandTimeout: 100 })
  await cache.set('k', 1)
  server.pause()
  t.teardown(() => { try { server.resume() } catch {} })
  // Answered while Redis still hangs (it is resumed below): the plugin's timeout, not Redis.
  t.equal(await cache.get('k'), null, 'a hung Redis is a miss')
  server.resume()
  await until(async () => await cache.get('k') === 1, 30_000, 'Redis to answer again')
  t.ok(cache.getStatistics().errors >= 1)
})

t.test('REDIS_URL selects Redis', async (t) => {
  withEnv(t, { REDIS_URL: server.url, REDIS_SOCKET_TIMEOUT: '1.5', REDIS_CONNECT_TIMEOUT: '0.75' })
  const { cache, logs } = await build(t, { prefix: uniquePrefix() })
  t.equal(cache.getStatistics().store, 'redis')
  t.equal(await cache.set('k', 1), true)
  t.match(clientOf(cache).options, { socketTimeout: 1500, connectTimeout: 750 })
  t.equal(logs.find('memory store').length, 0)
})

t.test('REDIS_HOST and REDIS_PORT select Redis', async (t) => {
  withEnv(t, { REDIS_HOST: server.host, REDIS_PORT: String(server.port), REDIS_DB: '6' })
  const { cache } = await build(t, { prefix: uniquePrefix() })
  await cache.set('k', 1)
  t.equal(await server.cli('-n', '6', 'exists', cache.redisKey('k')), '1')
})

t.test('explicit options win over REDIS_URL', async (t) => {
  withEnv(t, { REDIS_URL: 'redis://127.0.0.1:1' })
  const { cache } = await build(t, { redis: { host: server.host, port: server.port }, prefix: uniquePrefix() })
  t.equal(await cache.set('k', 1), true, 'connected to the explicit server, not to REDIS_URL')
})

t.test('redis: false wins over REDIS_URL', async (t) => {
  withEnv(t, { REDIS_URL: server.url })
  const { cache } = await build(t, { redis: false })
  t.equal(cache.getStatistics().store, 'memory')
})

t.test('with a local tier in front of Redis', async (t) => {
  const { cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), local: { maxEntries: 100 } })
  t.equal(await cache.set('k', { v: 1 }), true)
  t.same(await cache.get('k'), { v: 1 })
  t.same(await cache.get('k'), { v: 1 })
  t.equal(await cache.delete('k'), 1)
  t.equal(await cache.get('k'), null)
})

t.test('two apps share a Redis without sharing prefixes', async (t) => {
  const one = await build(t, { redis: { url: server.url }, prefix: uniquePrefix('one') })
  const two = await build(t, { redis: { url: server.url }, prefix: uniquePrefix('two') })
  await one.cache.set('k', 'one')
  await two.cache.set('k', 'two')
  t.equal(await one.cache.get('k'), 'one')
  t.equal(await two.cache.clear(), 1)
  t.equal(await one.cache.get('k'), 'one')
})

t.test('registering twice in one app fails on the @fastify/redis namespace', async (t) => {
  const app = Fastify({ logger: false })
  t.teardown(() => app.close())
  await t.rejects(async () => {
    await app.register(fastifyRedisCache, { redis: { url: server.url }, routes: false })
    await app.register(fastifyRedisCache, { redis: { url: server.url }, routes: false })
    await app.ready()
  })
})

t.test('createClient and reconnectDelay', async (t) => {
  t.equal(reconnectDelay(1), 100)
  t.equal(reconnectDelay(5), 500)
  t.equal(reconnectDelay(1000), 2000, 'capped, never gives up')
  const standalone = createClient({ kind: 'standalone', url: undefined, options: { host: server.host, port: server.port, lazyConnect: true, enableOfflineQueue: true }, namespace: 'x' }, 321)
  t.teardown(() => standalone.disconnect())
  t.match(standalone.options, { host: '127.0.0.1', port: server.port, commandTimeout: 321, enableOfflineQueue: true, connectionName: 'fastify-redis-cache' }, 'options given win over the defaults')
  t.equal(standalone.status, 'wait')
})

t.test('logs while degraded are throttled', async (t) => {
  const down = await startRedis()
  t.teardown(() => down.stop())
  const { cache, logs } = await build(t, { redis: { url: down.url }, prefix: uniquePrefix() })
  await down.kill()
  await until(() => logs.find('Redis connection error', LEVEL.warn).length >= 1, 30_000, 'a connection error log')
  await until(() => clientOf(cache).status === 'reconnecting' || clientOf(cache).status === 'connecting', 3000)
  // ioredis retries every 100-400 ms now; the logs stay at one per 10 s.
  await new Promise((resolve) => setTimeout(resolve, 700))
  t.equal(logs.find('Redis connection error', LEVEL.warn).length, 1, 'one connection error log')
  for (let i = 0; i < 20; i++) await cache.get('k')
  t.equal(logs.find(/get failed/, LEVEL.warn).length, 1, 'one failure log for twenty failures')
  t.equal(cache.getStatistics().errors, 20)
})
