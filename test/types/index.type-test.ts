// Compiled by `npm run test:types` (tsc over tsconfig.json), never run: the `@ts-expect-error`
// lines prove that wrong uses do not compile, the rest that right ones do.
import Fastify from 'fastify'
import fastifyRedisCache, {
  CacheError,
  CacheKeyError,
  CacheTimeoutError,
  RateLimitError,
  type CacheInfo,
  type CacheNamespaceView,
  type CacheOptions,
  type CacheStatistics,
  type RateLimitResult,
  type RouteCacheOptions
} from '../../index'

function expectType<T> (value: T): T {
  return value
}

const app = Fastify()

// Registration options are typed.
app.register(fastifyRedisCache)
app.register(fastifyRedisCache, {
  redis: { url: 'redis://127.0.0.1:6380', db: 1, connectTimeout: 100 },
  prefix: 'cache',
  defaultTtl: 60,
  maxTtl: 600,
  compression: { enabled: true, threshold: 1024, level: 6 },
  serializer: { serialize: (value) => JSON.stringify(value), deserialize: (data) => JSON.parse(data.toString()) },
  routes: { prefix: '/admin/cache', token: 'secret', dashboard: false },
  errorHandler: true,
  throwOnError: false,
  local: { maxEntries: 100 },
  commandTimeout: 200,
  maxEntrySize: 1024
})
app.register(fastifyRedisCache, { redis: false, compression: false, routes: false, local: false })
app.register(fastifyRedisCache, { redis: { host: '127.0.0.1', port: 6380, password: 'pw', username: 'u' } })
app.register(fastifyRedisCache, { redis: { cluster: { nodes: [{ host: '127.0.0.1', port: 7000 }] } } })
declare const client: import('ioredis').Redis
app.register(fastifyRedisCache, { redis: { client, closeClient: true } })
const options: CacheOptions = { defaultTtl: 10 }
app.register(fastifyRedisCache, options)

// @ts-expect-error unknown option
app.register(fastifyRedisCache, { defaultTTL: 60 })
// @ts-expect-error ttl options are numbers of seconds
app.register(fastifyRedisCache, { defaultTtl: '60' })
// @ts-expect-error redis is options, a client, a cluster or false
app.register(fastifyRedisCache, { redis: true })
// @ts-expect-error redis is not a URL string
app.register(fastifyRedisCache, { redis: 'redis://127.0.0.1:6380' })
// @ts-expect-error compression has no such field
app.register(fastifyRedisCache, { compression: { threshhold: 10 } })
// @ts-expect-error a serializer needs both functions
app.register(fastifyRedisCache, { serializer: { serialize: (value: unknown) => String(value) } })
// @ts-expect-error routes: false or options, not true
app.register(fastifyRedisCache, { routes: true })

// fastify.cache is typed.
async function useCache (): Promise<void> {
  expectType<string | null>(await app.cache.get<string>('k'))
  expectType<unknown>(await app.cache.get('k', { namespace: 'ns' }))
  expectType<boolean>(await app.cache.set('k', { a: 1 }, { ttl: 10, namespace: 'ns', compress: false, tags: ['t'] }))
  expectType<number>(await app.cache.delete(['a', 'b'], { namespace: 'ns' }))
  expectType<number>(await app.cache.exists('a'))
  expectType<{ id: number }>(await app.cache.getOrSet('k', async () => ({ id: 1 }), { ttl: 5, forceRefresh: true }))
  expectType<number>(await app.cache.getOrSet('k', () => 1))
  // The callback's context, and the resilience options.
  const report = await app.cache.getOrSet<{ final: boolean }>('report', async (ctx) => {
    expectType<{ final: boolean } | undefined>(ctx.stale)
    ctx.setTtl(60)
    ctx.setTags(['user:1'])
    ctx.skip()
    return { final: true }
  }, { ttl: 300, eagerRefresh: 0.8, timeout: { soft: 100, hard: 2000 }, jitter: 0.1, staleIfError: 600 })
  expectType<{ final: boolean }>(report)
  expectType<number>(await app.cache.getOrSet('k', () => 1, { eagerRefresh: false, timeout: false }))
  expectType<number>(await app.cache.namespace('n').getOrSet<number>('k', (ctx) => (ctx.stale ?? 0) + 1))
  // Inferred from what the callback returns: ctx.stale is then unknown.
  expectType<{ id: number }>(await app.cache.getOrSet('k', async (ctx) => { expectType<unknown>(ctx.stale); ctx.setTtl(5); return { id: 1 } }))
  // @ts-expect-error timeout is { soft, hard } in milliseconds
  await app.cache.getOrSet('k', () => 1, { timeout: 100 })
  // @ts-expect-error setTtl takes seconds
  await app.cache.getOrSet('k', (ctx) => { ctx.setTtl('1m'); return 1 })
  expectType<boolean>(await app.cache.expire('k', 10))
  expectType<number>(await app.cache.ttl('k'))
  expectType<number>(await app.cache.clear())
  expectType<number>(await app.cache.clear('ns'))
  expectType<number>(await app.cache.invalidateTags('t'))
  expectType<number>(await app.cache.invalidateTags(['t', 'u']))
  expectType<boolean>(await app.cache.ping())
  expectType<CacheInfo>(await app.cache.info())
  expectType<string | null>((await app.cache.info()).redisVersion)
  expectType<CacheStatistics>(app.cache.getStatistics())
  expectType<number>(app.cache.getStatistics().hitRate)
  expectType<void>(app.cache.resetStatistics())
  expectType<RateLimitResult>(await app.cache.rateLimit('ip', { max: 10, window: 60 }))
  expectType<string>(app.cache.redisKey('k', 'ns'))
  const view = expectType<CacheNamespaceView>(app.cache.namespace('users'))
  expectType<string | null>(await view.get<string>('k'))
  expectType<number>(await view.clear())

  // @ts-expect-error no such method
  await app.cache.nope('k')
  // @ts-expect-error set needs a value
  await app.cache.set('k')
  // @ts-expect-error ttl is a number
  await app.cache.set('k', 1, { ttl: '10' })
  // @ts-expect-error keys are strings
  await app.cache.get(1)
  // @ts-expect-error getOrSet needs a callback
  await app.cache.getOrSet('k', 1)
  // @ts-expect-error rateLimit needs max and window
  await app.cache.rateLimit('ip', { max: 1 })
  // @ts-expect-error getStatistics is synchronous
  await app.cache.getStatistics().then(() => {})
  // @ts-expect-error the namespace of a view is fixed
  await view.get('k', { namespace: 'other' })
  // @ts-expect-error a typed get is not any
  expectType<number>(await app.cache.get<string>('k'))
}

// Route config.cache is typed.
const routeOptions: RouteCacheOptions = { ttl: 60, namespace: 'items', key: (request) => request.url, tags: ['items'], vary: ['accept-language'] }
app.get('/items', { config: { cache: routeOptions } }, async () => [])
app.get('/items/:id', { config: { cache: { namespace: 'items', key: (request) => `item:${request.url}`, staleWhileRevalidate: 30, staleIfError: 300 } } }, async () => ({}))
app.get('/off', { config: { cache: false } }, async () => 'not cached')
app.get('/hot', { config: { cache: { ttl: 60, eagerRefresh: 0.8, staleIfError: 300, timeout: { soft: 100 } } } }, async () => 'hot')
// @ts-expect-error eagerRefresh is a fraction
app.get('/eager', { config: { cache: { eagerRefresh: 'soon' } } }, async () => 'x')
app.register(fastifyRedisCache, { getOrSet: { staleIfError: 60, eagerRefresh: 0.9, timeout: { soft: 50, hard: 1000 }, jitter: 0.1 }, telemetry: { keys: false } })
app.register(fastifyRedisCache, { telemetry: false })
// @ts-expect-error eagerRefresh is a fraction or false
app.register(fastifyRedisCache, { getOrSet: { eagerRefresh: true } })
expectType<number>(new CacheTimeoutError('slow', 100).timeoutMs)
app.post('/items', { config: { cache: { bust: { namespace: 'items', keys: ['list'], tags: (request) => [String(request.id)] } } } }, async () => ({}))
// @ts-expect-error ttl is a number of seconds
app.get('/bad', { config: { cache: { ttl: 'x' } } }, async () => 'x')
// @ts-expect-error a namespace is a string
app.get('/bad2', { config: { cache: { namespace: 5 } } }, async () => 'x')
// @ts-expect-error a key is a string or a function of the request
app.get('/bad3', { config: { cache: { key: 5 } } }, async () => 'x')
// @ts-expect-error also through app.route
app.route({ method: 'GET', url: '/bad4', config: { cache: { ttl: 'x' } }, handler: async () => 'x' })
// Fastify infers a route's `config` type from the literal itself and intersects it with
// FastifyContextConfig, so wrong types of known fields are caught, but unknown fields are not.
const typed: RouteCacheOptions = {
  ttl: 60,
  // @ts-expect-error an unknown field in a RouteCacheOptions literal
  tll: 60
}
app.get('/typed', { config: { cache: typed } }, async () => 'x')

// Errors are exported classes.
const err: CacheError = new CacheKeyError('bad key')
expectType<string>(err.code)
expectType<number>(err.statusCode)
expectType<number>(new RateLimitError('slow down', 1, 10).retryAfter)

export { useCache }

// @fastify/redis's decoration is typed: the cache's client under its namespace.
expectType<import('ioredis').Redis>(app.redis.cache)
expectType<import('../../index').CacheRedis>(app.redis)
