// The ESM entry point as published: dist/index.mjs (built by `npm run build`), reached both by
// path and through the package's own name (its "exports" map).
import t from 'tap'
import Fastify from 'fastify'
import fastifyRedisCache, * as named from '../dist/index.mjs'
import fromPackage, { fastifyRedisCache as namedFromPackage, CacheKeyError, RateLimitError } from 'fastify-redis-cache'

const names = ['CacheError', 'CacheConfigError', 'CacheKeyError', 'CacheSerializationError', 'CacheDeserializationError',
  'CacheCompressionError', 'CacheDecompressionError', 'CacheForbiddenError', 'CacheTimeoutError', 'CacheUnauthorizedError', 'RateLimitError', 'RedisConnectionError']

t.test('import gives the plugin as default and the named exports', async (t) => {
  t.type(fastifyRedisCache, 'function')
  t.equal(named.fastifyRedisCache, fastifyRedisCache)
  t.equal(fromPackage, fastifyRedisCache, 'the package name resolves to dist/index.mjs')
  t.equal(namedFromPackage, fastifyRedisCache)
  t.equal(fastifyRedisCache[Symbol.for('plugin-meta')].name, 'fastify-redis-cache')
  for (const name of names) {
    t.type(named[name], 'function', name)
    t.ok(new named[name]('m', 1, 1) instanceof named.CacheError, `${name} is a CacheError`)
  }
  t.equal(typeof named.jsonSerializer.deserialize, 'function')
  const err = new RateLimitError('slow down', 3, 10)
  t.equal(err.retryAfter, 3)
  t.equal(err.statusCode, 429)
})

t.test('the imported plugin works', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  t.equal(await app.cache.set('k', ['esm']), true)
  t.same(await app.cache.get('k'), ['esm'])
  await t.rejects(app.cache.set('', 1), CacheKeyError)
})
