// What the package's entry point exports, read through it (the dist entry points have their own
// tests in entrypoints.test.*): the plugin, every error class and the helpers.
import t from 'tap'
import * as entry from '../index'

t.test('the plugin, as default and by name', async (t) => {
  t.equal(typeof entry.default, 'function')
  t.equal(entry.fastifyRedisCache, entry.default)
})

t.test('every error class is a CacheError with a stable code', async (t) => {
  const classes = [
    entry.CacheConfigError, entry.CacheKeyError, entry.CacheSerializationError, entry.CacheDeserializationError,
    entry.CacheCompressionError, entry.CacheDecompressionError, entry.CacheForbiddenError, entry.CacheTimeoutError,
    entry.CacheUnauthorizedError, entry.RateLimitError, entry.RedisConnectionError
  ]
  for (const ErrorClass of classes) {
    const err = new (ErrorClass as new (message: string) => InstanceType<typeof entry.CacheError>)('x')
    t.ok(err instanceof entry.CacheError, ErrorClass.name)
    t.match(err.code, /^CACHE_/, ErrorClass.name)
  }
})

t.test('the helpers', async (t) => {
  t.equal(entry.keyFromParts(['a', 'b']), entry.keyFromParts(['a', 'b']))
  t.not(entry.keyFromParts(['a:b']), entry.keyFromParts(['a', 'b']))
  const options = { ttl: 5 }
  t.equal(entry.routeCache(options), options, 'routeCache returns its argument')
  t.same(entry.jsonSerializer.deserialize(Buffer.from(entry.jsonSerializer.serialize({ a: 1 }))), { a: 1 })
})
