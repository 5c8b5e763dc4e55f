// Configuration: every environment variable, every option, precedence (explicit > env > default),
// validation errors naming the option or variable, and registration-level failures.
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import { build, captureLogs, LEVEL } from './helpers/app'
import fastifyRedisCache from '../index'
import { DEFAULTS, readEnvironment, resolveConfig, type ResolvedRedis } from '../lib/config'
import { CacheConfigError, CacheError } from '../lib/errors'
import type { CacheOptions } from '../types'

/** Registers the plugin and waits for the app to be ready. */
async function registered (app: FastifyInstance, options: CacheOptions): Promise<void> {
  await app.register(fastifyRedisCache, options)
  await app.ready()
}

type Standalone = Extract<ResolvedRedis, { kind: 'standalone' }>

function standalone (redis: ResolvedRedis): Standalone {
  if (redis.kind !== 'standalone') throw new Error(`expected a standalone connection, got ${redis.kind}`)
  return redis
}

/** Options the type system would reject, for testing runtime validation. */
function untyped (options: Record<string, unknown>): CacheOptions {
  return options as CacheOptions
}

t.test('defaults with no options and an empty environment', async (t) => {
  const config = resolveConfig(undefined, {})
  t.same(config.redis, { kind: 'memory', reason: 'no redis option and neither REDIS_URL nor REDIS_HOST set' })
  t.equal(config.prefix, 'cache')
  t.equal(config.defaultTtl, 3600)
  t.equal(config.maxTtl, 86400)
  t.same(config.compression, { enabled: true, threshold: 1024, level: 6 })
  t.equal(config.serializer, undefined)
  t.same(config.routes, { prefix: '/cache', token: undefined, preHandler: undefined, public: false, dashboard: true })
  t.equal(config.errorHandler, true)
  t.equal(config.throwOnError, false)
  t.equal(config.local, false)
  t.equal(config.commandTimeout, 500)
  t.equal(config.maxEntrySize, 8 * 1024 * 1024)
  t.equal(config.production, false)
  t.equal(config.debug, false)
})

t.test('resolveConfig reads process.env when no environment is passed', async (t) => {
  process.env.CACHE_PREFIX = 'fromprocess'
  t.teardown(() => { delete process.env.CACHE_PREFIX })
  t.equal(resolveConfig({}).prefix, 'fromprocess')
  t.equal(resolveConfig().prefix, 'fromprocess')
})

t.test('options must be an object', async (t) => {
  t.throws(() => resolveConfig(null as unknown as CacheOptions, {}), { name: 'CacheConfigError', message: /options must be an object/ })
  t.throws(() => resolveConfig('x' as unknown as CacheOptions, {}), CacheConfigError)
})

t.test('environment variables', async (t) => {
  t.test('every variable is read and typed', async (t) => {
    const env = readEnvironment({
      REDIS_URL: 'redis://example:6380/2',
      REDIS_HOST: 'h',
      REDIS_PORT: '6390',
      REDIS_DB: '3',
      REDIS_USERNAME: 'user',
      REDIS_PASSWORD: 'pw',
      REDIS_SSL: 'true',
      REDIS_SOCKET_TIMEOUT: '1.5',
      REDIS_CONNECT_TIMEOUT: '0.25',
      CACHE_PREFIX: 'app_1',
      CACHE_DEFAULT_TTL: '60',
      CACHE_MAX_TTL: '120',
      CACHE_COMPRESSION_ENABLED: 'false',
      CACHE_COMPRESSION_THRESHOLD: '0',
      CACHE_ADMIN_TOKEN: 'tok',
      ENVIRONMENT: 'staging',
      NODE_ENV: 'test',
      DEBUG: 'true',
      UNRELATED: 'ignored'
    })
    t.same(env, {
      REDIS_URL: 'redis://example:6380/2',
      REDIS_HOST: 'h',
      REDIS_PORT: 6390,
      REDIS_DB: 3,
      REDIS_USERNAME: 'user',
      REDIS_PASSWORD: 'pw',
      REDIS_SSL: true,
      REDIS_SOCKET_TIMEOUT: 1.5,
      REDIS_CONNECT_TIMEOUT: 0.25,
      CACHE_PREFIX: 'app_1',
      CACHE_DEFAULT_TTL: 60,
      CACHE_MAX_TTL: 120,
      CACHE_COMPRESSION_ENABLED: false,
      CACHE_COMPRESSION_THRESHOLD: 0,
      CACHE_ADMIN_TOKEN: 'tok',
      ENVIRONMENT: 'staging',
      NODE_ENV: 'test',
      DEBUG: 'true'
    })
  })

  t.test('empty values are treated as unset', async (t) => {
    const names = ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_DB', 'REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_SSL',
      'REDIS_SOCKET_TIMEOUT', 'REDIS_CONNECT_TIMEOUT', 'CACHE_PREFIX', 'CACHE_DEFAULT_TTL', 'CACHE_MAX_TTL',
      'CACHE_COMPRESSION_ENABLED', 'CACHE_COMPRESSION_THRESHOLD', 'CACHE_ADMIN_TOKEN', 'ENVIRONMENT', 'NODE_ENV', 'DEBUG']
    const env = Object.fromEntries(names.map((name) => [name, '']))
    t.same(readEnvironment(env), {})
    const config = resolveConfig({}, env)
    t.equal(config.redis.kind, 'memory', 'empty REDIS_URL/REDIS_HOST do not select Redis')
    t.equal(config.defaultTtl, 3600)
    t.equal(config.prefix, 'cache')
  })

  const bad: Array<[string, string]> = [
    ['REDIS_URL', 'http://example'],
    ['REDIS_PORT', 'abc'],
    ['REDIS_PORT', '0'],
    ['REDIS_PORT', '70000'],
    ['REDIS_DB', '-1'],
    ['REDIS_DB', '1.5'],
    ['REDIS_SSL', 'maybe'],
    ['REDIS_SOCKET_TIMEOUT', '0'],
    ['REDIS_SOCKET_TIMEOUT', 'soon'],
    ['REDIS_CONNECT_TIMEOUT', '-1'],
    ['CACHE_PREFIX', 'a b'],
    ['CACHE_PREFIX', 'a:b'],
    ['CACHE_DEFAULT_TTL', 'abc'],
    ['CACHE_DEFAULT_TTL', '0'],
    ['CACHE_DEFAULT_TTL', '1.5'],
    ['CACHE_MAX_TTL', 'forever'],
    ['CACHE_COMPRESSION_ENABLED', 'sometimes'],
    ['CACHE_COMPRESSION_THRESHOLD', '-1']
  ]
  for (const [name, value] of bad) {
    t.test(`${name}=${value} fails naming the variable`, async (t) => {
      const err = t.throws(() => resolveConfig({}, { [name]: value }), CacheConfigError) as CacheConfigError
      t.match(err.message, new RegExp(`invalid environment variable.*\\b${name}\\b`))
      t.match(err.message, JSON.stringify(value), 'shows the bad value')
      t.equal(err.code, 'CACHE_CONFIG')
      t.ok(err instanceof CacheError)
    })
  }

  t.test('several bad variables are all named', async (t) => {
    t.throws(() => readEnvironment({ CACHE_DEFAULT_TTL: 'x', CACHE_MAX_TTL: 'y' }), { message: /CACHE_DEFAULT_TTL.*; CACHE_MAX_TTL/ })
  })

  t.test('DEBUG accepts the debug module convention and boolean words', async (t) => {
    t.equal(resolveConfig({}, { DEBUG: 'ioredis:*' }).debug, false, 'DEBUG=ioredis:* does not fail registration')
    for (const on of ['true', '1', 'yes', 'ON']) t.equal(resolveConfig({}, { DEBUG: on }).debug, true, on)
    for (const off of ['false', '0', 'no']) t.equal(resolveConfig({}, { DEBUG: off }).debug, false, off)
  })

  t.test('CACHE_* variables apply when no option is given', async (t) => {
    const config = resolveConfig({}, {
      CACHE_PREFIX: 'envp',
      CACHE_DEFAULT_TTL: '10',
      CACHE_MAX_TTL: '20',
      CACHE_COMPRESSION_ENABLED: 'false',
      CACHE_COMPRESSION_THRESHOLD: '99',
      CACHE_ADMIN_TOKEN: 'envtoken'
    })
    t.equal(config.prefix, 'envp')
    t.equal(config.defaultTtl, 10)
    t.equal(config.maxTtl, 20)
    t.same(config.compression, { enabled: false, threshold: 99, level: 6 })
    t.same(config.routes, { prefix: '/cache', token: 'envtoken', preHandler: undefined, public: false, dashboard: true })
  })

  t.test('explicit options win over environment variables', async (t) => {
    const config = resolveConfig({
      prefix: 'optp',
      defaultTtl: 5,
      maxTtl: 50,
      compression: { enabled: true, threshold: 7 },
      routes: { token: 'opttoken' }
    }, {
      CACHE_PREFIX: 'envp',
      CACHE_DEFAULT_TTL: '10',
      CACHE_MAX_TTL: '20',
      CACHE_COMPRESSION_ENABLED: 'false',
      CACHE_COMPRESSION_THRESHOLD: '99',
      CACHE_ADMIN_TOKEN: 'envtoken'
    })
    t.equal(config.prefix, 'optp')
    t.equal(config.defaultTtl, 5)
    t.equal(config.maxTtl, 50)
    t.same(config.compression, { enabled: true, threshold: 7, level: 6 })
    t.equal(config.routes !== false && config.routes.token, 'opttoken')
    t.same(resolveConfig({ compression: true }, { CACHE_COMPRESSION_ENABLED: 'false' }).compression.enabled, true)
    t.same(resolveConfig({ compression: false }, { CACHE_COMPRESSION_ENABLED: 'true' }).compression.enabled, false)
  })

  t.test('NODE_ENV and ENVIRONMENT set production', async (t) => {
    t.equal(resolveConfig({ routes: false }, { ENVIRONMENT: 'production' }).production, true)
    t.equal(resolveConfig({ routes: false }, { NODE_ENV: 'production' }).production, true)
    t.equal(resolveConfig({ routes: false }, { NODE_ENV: 'development', ENVIRONMENT: 'staging' }).production, false)
  })
})

t.test('redis connection resolution', async (t) => {
  t.test('redis: false is the memory store whatever the environment says', async (t) => {
    t.same(resolveConfig({ redis: false }, { REDIS_URL: 'redis://x:1' }).redis, { kind: 'memory', reason: 'redis: false' })
  })

  t.test('REDIS_URL selects Redis', async (t) => {
    const redis = standalone(resolveConfig({}, { REDIS_URL: 'rediss://user:pw@example:6380/1', REDIS_HOST: 'ignored', REDIS_PASSWORD: 'ignored' }).redis)
    t.equal(redis.url, 'rediss://user:pw@example:6380/1')
    t.same(redis.options, { connectTimeout: DEFAULTS.connectTimeout }, 'REDIS_HOST and the other parts are ignored next to a URL')
    t.equal(redis.namespace, 'cache')
  })

  t.test('REDIS_HOST and its companions select Redis', async (t) => {
    const redis = standalone(resolveConfig({}, {
      REDIS_HOST: 'example',
      REDIS_PORT: '6390',
      REDIS_DB: '4',
      REDIS_USERNAME: 'u',
      REDIS_PASSWORD: 'p',
      REDIS_SSL: 'true',
      REDIS_SOCKET_TIMEOUT: '1.5',
      REDIS_CONNECT_TIMEOUT: '0.25'
    }).redis)
    t.equal(redis.url, undefined)
    t.same(redis.options, { host: 'example', port: 6390, db: 4, username: 'u', password: 'p', tls: {}, socketTimeout: 1500, connectTimeout: 250 })
  })

  t.test('REDIS_SSL=false does not enable TLS', async (t) => {
    const redis = standalone(resolveConfig({}, { REDIS_HOST: 'example', REDIS_SSL: 'false' }).redis)
    t.same(redis.options, { host: 'example', connectTimeout: DEFAULTS.connectTimeout })
  })

  t.test('explicit ioredis options win over the environment', async (t) => {
    const redis = standalone(resolveConfig({ redis: { host: 'opt', port: 7000, connectTimeout: 99 } }, {
      REDIS_HOST: 'env', REDIS_PORT: '6390', REDIS_PASSWORD: 'envpw', REDIS_CONNECT_TIMEOUT: '3'
    }).redis)
    t.same(redis.options, { host: 'opt', port: 7000, password: 'envpw', connectTimeout: 99 }, 'the environment fills in only what the options leave open')
  })

  t.test('explicit host or port is not overridden by REDIS_URL', async (t) => {
    for (const option of [{ host: 'opt' }, { port: 7000 }, { path: '/tmp/redis.sock' }, { sentinels: [{ host: 's', port: 1 }], name: 'm' }]) {
      const redis = standalone(resolveConfig({ redis: option }, { REDIS_URL: 'redis://env:6390' }).redis)
      t.equal(redis.url, undefined, `${JSON.stringify(option)} is used, not REDIS_URL`)
    }
    const withTls = standalone(resolveConfig({ redis: { tls: {} } }, { REDIS_URL: 'rediss://env:6390' }).redis)
    t.equal(withTls.url, 'rediss://env:6390', 'options that name no server keep REDIS_URL')
    t.same(withTls.options.tls, {})
  })

  t.test('explicit url wins over REDIS_URL', async (t) => {
    const redis = standalone(resolveConfig({ redis: { url: 'redis://opt:1', namespace: 'mine' } }, { REDIS_URL: 'redis://env:2' }).redis)
    t.equal(redis.url, 'redis://opt:1')
    t.equal(redis.namespace, 'mine')
    t.same(redis.options, { connectTimeout: DEFAULTS.connectTimeout }, 'namespace is not passed on to ioredis')
  })

  t.test('a url that is not redis:// or rediss:// fails naming the option', async (t) => {
    t.throws(() => resolveConfig({ redis: { url: 'http://x' } }, {}), { name: 'CacheConfigError', message: /option redis\.url must start with redis:\/\// })
  })

  t.test('a redis option of the wrong kind fails', async (t) => {
    for (const redis of [true, 'redis://x', null, 5]) {
      t.throws(() => resolveConfig(untyped({ redis }), {}), { name: 'CacheConfigError', message: /option redis must be/ }, JSON.stringify(redis))
    }
  })

  t.test('a client', async (t) => {
    const client = new Redis({ lazyConnect: true })
    t.teardown(() => client.disconnect())
    t.same(resolveConfig({ redis: { client } }, {}).redis, { kind: 'client', client, closeClient: false, namespace: 'cache' })
    t.same(resolveConfig({ redis: { client, closeClient: true, namespace: 'x' } }, {}).redis, { kind: 'client', client, closeClient: true, namespace: 'x' })
    for (const bad of [{}, null, 'client', undefined]) {
      t.throws(() => resolveConfig(untyped({ redis: { client: bad } }), {}), { message: /option redis\.client must be an ioredis/ })
    }
  })

  t.test('a cluster', async (t) => {
    const nodes = [{ host: '127.0.0.1', port: 7000 }]
    const config = resolveConfig({ redis: { cluster: { nodes, options: { scaleReads: 'slave' } } } }, { REDIS_URL: 'redis://ignored:1' })
    t.same(config.redis, { kind: 'cluster', nodes, options: { scaleReads: 'slave' }, namespace: 'cache' })
    t.same(resolveConfig({ redis: { cluster: { nodes } } }, {}).redis, { kind: 'cluster', nodes, options: {}, namespace: 'cache' })
    for (const cluster of [{ nodes: [] }, {}, null]) {
      t.throws(() => resolveConfig(untyped({ redis: { cluster } }), {}), { message: /option redis\.cluster\.nodes must list at least one node/ })
    }
  })
})

t.test('ttl options', async (t) => {
  t.throws(() => resolveConfig({ defaultTtl: 100, maxTtl: 10 }, {}), { name: 'CacheConfigError', message: /defaultTtl \(100\) must not exceed maxTtl \(10\)/ })
  t.throws(() => resolveConfig({}, { CACHE_DEFAULT_TTL: '100', CACHE_MAX_TTL: '10' }), { message: /defaultTtl \(100\) must not exceed maxTtl \(10\)/ })
  t.equal(resolveConfig({ maxTtl: 60 }, {}).defaultTtl, 60, 'the built-in defaultTtl is clamped to a smaller maxTtl')
  t.equal(resolveConfig({ defaultTtl: 60, maxTtl: 60 }, {}).defaultTtl, 60)
})

t.test('option validation names the option', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ prefix: 'a b' }, /option prefix expected string to match '\^\[A-Za-z0-9_.-\]\+\$' \(got "a b"\)/],
    [{ prefix: '' }, /option prefix/],
    [{ prefix: 5 }, /option prefix expected string/],
    [{ defaultTtl: 0 }, /option defaultTtl expected integer to be greater or equal to 1 \(got 0\)/],
    [{ defaultTtl: 1.5 }, /option defaultTtl expected integer/],
    [{ defaultTtl: '60' }, /option defaultTtl expected integer \(got "60"\)/],
    [{ maxTtl: -1 }, /option maxTtl/],
    [{ compression: 'yes' }, /option compression/],
    [{ compression: { threshold: -1 } }, /option compression/],
    [{ compression: { level: 10 } }, /option compression/],
    [{ compression: { enable: true } }, /option compression/],
    [{ routes: true }, /option routes/],
    [{ routes: { prefix: 'cache' } }, /option routes/],
    [{ routes: { token: '' } }, /option routes/],
    [{ routes: { preHandler: 'auth' } }, /option routes\.preHandler must be a function/],
    [{ errorHandler: 'yes' }, /option errorHandler expected boolean/],
    [{ throwOnError: 1 }, /option throwOnError expected boolean/],
    [{ local: { maxEntries: 0 } }, /option local/],
    [{ local: { entries: 5 } }, /option local/],
    [{ local: { heartbeat: 0 } }, /option local/],
    [{ local: true }, /option local/],
    [{ commandTimeout: 0 }, /option commandTimeout/],
    [{ maxEntrySize: 0.5 }, /option maxEntrySize/],
    [{ circuitBreaker: true }, /option circuitBreaker/],
    [{ circuitBreaker: { failureThreshold: 0 } }, /option circuitBreaker/],
    [{ circuitBreaker: { resetTimeout: 1.5 } }, /option circuitBreaker/],
    [{ circuitBreaker: { threshold: 3 } }, /option circuitBreaker/],
    [{ healthCheckInterval: 0 }, /option healthCheckInterval/],
    [{ lock: true }, /option lock/],
    [{ lock: { ttl: 0 } }, /option lock/],
    [{ lock: { wait: -1 } }, /option lock/],
    [{ serializer: { serialize: JSON.stringify } }, /option serializer needs serialize\(value\) and deserialize\(buffer\) functions/],
    [{ serializer: null }, /option serializer needs/],
    [{ serializer: 'json' }, /option serializer needs/]
  ]
  for (const [options, message] of cases) {
    t.throws(() => resolveConfig(untyped(options), {}), { name: 'CacheConfigError', message }, JSON.stringify(options))
  }
})

t.test('option values are used', async (t) => {
  const serializer = { serialize: (v: unknown) => JSON.stringify(v), deserialize: (b: Buffer) => JSON.parse(b.toString()) as unknown }
  const preHandler = async (): Promise<void> => {}
  const config = resolveConfig({
    compression: { level: 9 },
    serializer,
    routes: { prefix: '/admin/cache//', token: 't', preHandler, dashboard: false },
    errorHandler: false,
    throwOnError: true,
    local: { maxEntries: 5, maxBytes: 100, ttl: 2, heartbeat: 250 },
    commandTimeout: 50,
    maxEntrySize: 1000
  }, {})
  t.same(config.compression, { enabled: true, threshold: 1024, level: 9 })
  t.equal(config.serializer, serializer)
  t.same(config.routes, { prefix: '/admin/cache', token: 't', preHandler, public: false, dashboard: false })
  t.equal(config.errorHandler, false)
  t.equal(config.throwOnError, true)
  t.same(config.local, { maxEntries: 5, maxBytes: 100, ttl: 2, heartbeat: 250 })
  t.equal(config.commandTimeout, 50)
  t.equal(config.maxEntrySize, 1000)
  t.same(config.circuitBreaker, { failureThreshold: 5, resetTimeout: 2000 }, 'circuit breaker defaults')
  t.equal(config.healthCheckInterval, 30_000)
  t.same(config.lock, { ttl: 5000, wait: 3000 }, 'lock defaults')
  const tuned = resolveConfig({ circuitBreaker: { failureThreshold: 2, resetTimeout: 100 }, healthCheckInterval: 50, lock: { ttl: 10, wait: 0 } }, {})
  t.same(tuned.circuitBreaker, { failureThreshold: 2, resetTimeout: 100 })
  t.equal(tuned.healthCheckInterval, 50)
  t.same(tuned.lock, { ttl: 10, wait: 0 })
  const off = resolveConfig({ circuitBreaker: false, lock: false }, {})
  t.equal(off.circuitBreaker, false)
  t.equal(off.lock, false)
  t.same(resolveConfig({ local: {} }, {}).local, { maxEntries: 10_000, maxBytes: 64 * 1024 * 1024, ttl: 60, heartbeat: 250 })
  t.equal(resolveConfig({ local: false }, {}).local, false)
  t.equal(resolveConfig({ routes: false }, {}).routes, false)
  t.same(resolveConfig({ compression: false }, {}).compression, { enabled: false, threshold: 1024, level: 6 })
  t.same(resolveConfig({ compression: { threshold: 0 } }, {}).compression, { enabled: true, threshold: 0, level: 6 })
  t.ok(resolveConfig(untyped({ logLevel: 'warn' }), {}), 'Fastify register options next to ours are accepted')
})

t.test('production needs an admin token for the management routes', async (t) => {
  for (const env of [{ ENVIRONMENT: 'production' }, { NODE_ENV: 'production' }]) {
    t.throws(() => resolveConfig({}, env), { name: 'CacheConfigError', message: /CACHE_ADMIN_TOKEN/ }, JSON.stringify(env))
    t.throws(() => resolveConfig({ routes: { prefix: '/x' } }, env), { message: /CACHE_ADMIN_TOKEN/ })
    t.equal(resolveConfig({ routes: false }, env).routes, false, 'routes turned off')
    t.match(resolveConfig({ routes: { public: true } }, env).routes, { token: undefined }, 'routes made public')
    t.match(resolveConfig({ routes: { token: 'secret' } }, env).routes, { token: 'secret' })
    t.match(resolveConfig({}, { ...env, CACHE_ADMIN_TOKEN: 'fromenv' }).routes, { token: 'fromenv' })
    t.ok(resolveConfig({ routes: { preHandler: async () => {} } }, env).routes, 'own authentication')
  }
})

t.test('production is recognised in any usual spelling', async (t) => {
  for (const name of ['production', 'Production', 'PRODUCTION', 'prod', 'PROD', 'Prod', ' production ', 'prod\n']) {
    for (const variable of ['ENVIRONMENT', 'NODE_ENV']) {
      const env = { [variable]: name }
      t.equal(resolveConfig({ routes: false }, env).production, true, `${variable}=${JSON.stringify(name)}`)
      t.throws(() => resolveConfig({}, env), { name: 'CacheConfigError', message: /CACHE_ADMIN_TOKEN/ }, `${variable}=${JSON.stringify(name)} needs a token`)
      t.match(resolveConfig({ routes: { public: true } }, env).routes, { public: true, token: undefined })
    }
  }
  for (const name of ['staging', 'development', 'preprod', 'productions', 'prod-eu', 'production2', 'pro', 'p rod']) {
    t.equal(resolveConfig({}, { NODE_ENV: name, ENVIRONMENT: name }).production, false, `${JSON.stringify(name)} is not production`)
  }
  t.equal(resolveConfig({ routes: false }, { NODE_ENV: 'development', ENVIRONMENT: 'PROD' }).production, true, 'either variable is enough')
})

t.test('registration', async (t) => {
  t.test('a bad environment variable fails registration naming it', async (t) => {
    process.env.CACHE_DEFAULT_TTL = 'abc'
    t.teardown(() => { delete process.env.CACHE_DEFAULT_TTL })
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(registered(app, { routes: false }), { name: 'CacheConfigError', message: /CACHE_DEFAULT_TTL/ })
  })

  t.test('a bad option fails registration naming it', async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(registered(app, { defaultTtl: -5 }), { name: 'CacheConfigError', message: /option defaultTtl/ })
  })

  t.test('production without a token fails registration naming CACHE_ADMIN_TOKEN', async (t) => {
    process.env.NODE_ENV = 'production'
    t.teardown(() => { delete process.env.NODE_ENV })
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(registered(app, {}), { name: 'CacheConfigError', message: /CACHE_ADMIN_TOKEN/ })
    const { cache } = await build(t, { routes: false })
    t.equal(cache.core.stack.kind, 'memory', 'routes: false is fine in production')
  })

  t.test('NODE_ENV=Production and ENVIRONMENT=PROD fail registration without a token too', async (t) => {
    t.teardown(() => { delete process.env.NODE_ENV; delete process.env.ENVIRONMENT })
    for (const [variable, name] of [['NODE_ENV', 'Production'], ['ENVIRONMENT', 'PROD'], ['ENVIRONMENT', 'prod']]) {
      process.env[variable] = name
      const app = Fastify()
      t.teardown(() => app.close())
      await t.rejects(registered(app, {}), { name: 'CacheConfigError', message: /CACHE_ADMIN_TOKEN/ }, `${variable}=${name}`)
      const open = await build(t, { routes: { public: true } })
      t.equal((await open.app.inject({ url: '/cache/ping', remoteAddress: '10.0.0.5' })).statusCode, 200, 'routes.public: true opts out')
      delete process.env[variable]
    }
  })

  t.test('no redis option and no REDIS_URL/REDIS_HOST: memory store, logged', async (t) => {
    const { app, logs } = await build(t)
    t.equal(app.cache.getStatistics().store, 'memory')
    const lines = logs.find('using the in-process memory store', LEVEL.info)
    t.equal(lines.length, 1)
    t.match(lines[0].msg, /neither REDIS_URL nor REDIS_HOST set/)
    t.equal(lines[0].plugin, 'fastify-redis-cache')
  })

  t.test('redis: false: memory store, logged', async (t) => {
    const { app, logs } = await build(t, { redis: false })
    t.equal(app.cache.getStatistics().store, 'memory')
    t.match(logs.find('using the in-process memory store', LEVEL.info)[0]?.msg, /\(redis: false\)/)
  })

  t.test('management routes are registered under routes.prefix', async (t) => {
    const { app } = await build(t, { redis: false, routes: { prefix: '/admin/cache/' } })
    const res = await app.inject({ method: 'GET', url: '/admin/cache/ping' })
    t.equal(res.statusCode, 200)
    t.match(res.json(), { status: 'ok' })
    t.equal((await app.inject({ method: 'GET', url: '/cache/ping' })).statusCode, 404)
  })

  t.test('DEBUG=true makes the plugin log at debug level whatever the app level', async (t) => {
    const quiet = captureLogs()
    const app = Fastify({ logger: { level: 'warn', stream: quiet.stream } })
    t.teardown(() => app.close())
    await registered(app, { redis: false, routes: false })
    t.equal(quiet.find('using the in-process memory store').length, 0, 'info is below the app level')

    process.env.DEBUG = 'true'
    t.teardown(() => { delete process.env.DEBUG })
    const loud = captureLogs()
    const debugApp = Fastify({ logger: { level: 'warn', stream: loud.stream } })
    t.teardown(() => debugApp.close())
    await registered(debugApp, { redis: false, routes: false })
    t.equal(loud.find('using the in-process memory store', LEVEL.info).length, 1, 'logged with DEBUG=true')
  })

  t.test('local tier options with the memory store are noted in the log', async (t) => {
    const { logs, cache } = await build(t, { redis: false, local: { maxEntries: 10 } })
    t.equal(logs.find('the local tier is for Redis', LEVEL.info).length, 1)
    t.equal(await cache.set('k', 1), true)
    t.equal(await cache.get('k'), 1)
  })

  t.test('options from register are the ones used', async (t) => {
    const logs = captureLogs()
    const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { prefix: 'mine', defaultTtl: 7, routes: false, redis: false })
    await app.ready()
    t.equal(app.cache.redisKey('k'), 'mine:default:k')
    await app.cache.set('k', 1)
    t.equal(await app.cache.ttl('k'), 7)
  })
})
