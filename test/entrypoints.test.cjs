'use strict'
// The CommonJS entry point as published: dist/cjs.js (built by `npm run build`), reached both by
// path and through the package's own name (its "exports" map).
const t = require('tap')
const Fastify = require('fastify')

const names = ['CacheError', 'CacheConfigError', 'CacheKeyError', 'CacheSerializationError', 'CacheDeserializationError',
  'CacheCompressionError', 'CacheDecompressionError', 'CacheForbiddenError', 'CacheTimeoutError', 'CacheUnauthorizedError', 'RateLimitError', 'RedisConnectionError']

t.test('require gives the plugin, with .default, .fastifyRedisCache and the error classes', async (t) => {
  const plugin = require('../dist/cjs.js')
  t.type(plugin, 'function')
  t.equal(plugin.default, plugin)
  t.equal(plugin.fastifyRedisCache, plugin)
  t.equal(plugin[Symbol.for('plugin-meta')].name, 'fastify-redis-cache')
  t.equal(plugin[Symbol.for('plugin-meta')].fastify, '5.x')
  t.equal(plugin[Symbol.for('skip-override')], true, 'fastify-plugin: decorates the parent instance')
  for (const name of names) {
    t.type(plugin[name], 'function', name)
    t.ok(new plugin[name]('m', 1, 1) instanceof plugin.CacheError, `${name} is a CacheError`)
  }
  t.equal(typeof plugin.jsonSerializer.serialize, 'function')
  t.equal(plugin.keyFromParts(['item:5', 'reviews']), 'item\\:5:reviews')
  t.equal(require('fastify-redis-cache'), plugin, 'the package name resolves to dist/cjs.js')
})

t.test('the required plugin works', async (t) => {
  const plugin = require('fastify-redis-cache')
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(plugin, { redis: false, routes: false })
  t.equal(await app.cache.set('k', { from: 'cjs' }), true)
  t.same(await app.cache.get('k'), { from: 'cjs' })
  await t.rejects(app.cache.get(''), plugin.CacheKeyError)
})
