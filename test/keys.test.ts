// Key, namespace, tag and TTL validation, the Redis key layout, and the error classes.
import t from 'tap'
import {
  CacheCompressionError,
  CacheConfigError,
  CacheDecompressionError,
  CacheDeserializationError,
  CacheError,
  CacheKeyError,
  CacheSerializationError,
  RateLimitError,
  RedisConnectionError,
  toCacheError
} from '../lib/errors'
import {
  boundedKey,
  DEFAULT_NAMESPACE,
  defaultRouteKey,
  escapeGlob,
  keyFromParts,
  KeyLayout,
  MAX_KEY_BYTES,
  NAMESPACE_PATTERN,
  toKey,
  validateEntryTags,
  validateKey,
  validateKeys,
  validateNamespace,
  validateSeconds,
  validateStaleSeconds,
  validateTags
} from '../lib/keys'

t.test('validateKey', async (t) => {
  t.equal(MAX_KEY_BYTES, 1024)
  for (const key of ['k', ' ', '*', 'a:b', '#', 'ü', 'a'.repeat(1024), '€'.repeat(341), '😀'.repeat(256)]) {
    t.equal(validateKey(key), key, `accepts ${JSON.stringify(key.slice(0, 12))} (${Buffer.byteLength(key)} bytes)`)
  }
  const bad: Array<[unknown, RegExp]> = [
    ['', /non-empty string \(got ""\)/],
    [5, /got 5\)/],
    [true, /got true\)/],
    [null, /got null\)/],
    [undefined, /got undefined\)/],
    [{}, /got object\)/],
    [['a'], /got object\)/],
    [Symbol('s'), /got symbol\)/],
    ['a'.repeat(1025), /at most 1024 bytes \(got 1025\)/],
    ['€'.repeat(342), /at most 1024 bytes \(got 1026\)/],
    ['😀'.repeat(257), /at most 1024 bytes \(got 1028\)/],
    ['a\ud800', /well-formed Unicode/],
    ['\udc00b', /well-formed Unicode/]
  ]
  for (const [key, message] of bad) {
    t.throws(() => validateKey(key), { name: 'CacheKeyError', message }, String(typeof key === 'string' ? key.slice(0, 5) : typeof key))
  }
  t.equal(validateKeys('a').length, 1)
  t.same(validateKeys(['a', 'b']), ['a', 'b'])
  t.same(validateKeys([]), [])
  t.throws(() => validateKeys(['a', '']), CacheKeyError)
})

t.test('validateNamespace', async (t) => {
  t.equal(DEFAULT_NAMESPACE, 'default')
  t.ok(NAMESPACE_PATTERN.test('A-z_0.9'))
  for (const ns of ['a', 'A-b_c.d', '0', 'n'.repeat(128)]) t.equal(validateNamespace(ns), ns)
  const long = 'x'.repeat(200)
  const bad: unknown[] = ['', 'a b', 'a:b', 'a*', 'a?', '[a]', '#a', 'ü', 'n'.repeat(129), 5, null, undefined]
  for (const ns of bad) t.throws(() => validateNamespace(ns), { name: 'CacheKeyError', message: /Cache namespace must match/ }, String(ns))
  t.throws(() => validateNamespace(long), { message: /got "x{64}\.\.\."\)/ }, 'long values are shortened in the message')
  t.throws(() => validateNamespace('a b', 'prefix'), { message: /^Cache prefix must match/ })
})

t.test('validateTags', async (t) => {
  t.same(validateTags('t'), ['t'])
  t.same(validateTags(['a', 'b:c', '*']), ['a', 'b:c', '*'])
  t.same(validateTags([]), [])
  t.equal(validateTags(['x'.repeat(1024)]).length, 1)
  for (const tag of ['', 5, null, 'x'.repeat(1025)]) {
    t.throws(() => validateTags([tag]), { name: 'CacheKeyError', message: /Cache tag must be a non-empty string of at most 1024 bytes/ })
  }
})

t.test('validateSeconds', async (t) => {
  t.equal(validateSeconds(1, 'ttl'), 1)
  t.equal(validateSeconds(86400 * 365, 'ttl'), 86400 * 365)
  for (const value of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '5', null, undefined]) {
    t.throws(() => validateSeconds(value, 'ttl'), { name: 'RangeError', message: /^ttl must be a positive whole number of seconds/ }, String(value))
  }
})

t.test('escapeGlob and KeyLayout', async (t) => {
  t.equal(escapeGlob('a*b?c[d]e\\f^g-h'), 'a\\*b\\?c\\[d\\]e\\\\f\\^g\\-h')
  t.equal(escapeGlob('plain_name.1'), 'plain_name.1')
  const layout = new KeyLayout('app')
  t.equal(layout.prefix, 'app')
  t.equal(layout.entry('k', 'ns'), 'app:ns:k')
  t.equal(layout.tag('t'), 'app:#ti:t')
  t.equal(layout.rateLimit('ip'), 'app:#rl:ip')
  t.equal(layout.lockPrefix, 'app:#lock:')
  t.equal(layout.pattern(), 'app:*')
  t.equal(layout.pattern('a-b'), 'app:a\\-b:*')
  t.equal(new KeyLayout('my-app').pattern('ns'), 'my\\-app:ns:*')
})

t.test('errors', async (t) => {
  const cases: Array<[CacheError, string, string, number]> = [
    [new CacheError('m'), 'CacheError', 'CACHE_ERROR', 500],
    [new RedisConnectionError('m'), 'RedisConnectionError', 'CACHE_REDIS_CONNECTION', 503],
    [new CacheKeyError('m'), 'CacheKeyError', 'CACHE_KEY_INVALID', 400],
    [new CacheSerializationError('m'), 'CacheSerializationError', 'CACHE_SERIALIZATION', 500],
    [new CacheDeserializationError('m'), 'CacheDeserializationError', 'CACHE_DESERIALIZATION', 500],
    [new CacheCompressionError('m'), 'CacheCompressionError', 'CACHE_COMPRESSION', 500],
    [new CacheDecompressionError('m'), 'CacheDecompressionError', 'CACHE_DECOMPRESSION', 500],
    [new RateLimitError('m', 7, 10), 'RateLimitError', 'CACHE_RATE_LIMITED', 429],
    [new CacheConfigError('m'), 'CacheConfigError', 'CACHE_CONFIG', 500]
  ]
  for (const [err, name, code, statusCode] of cases) {
    t.ok(err instanceof Error, `${name} is an Error`)
    t.ok(err instanceof CacheError, `${name} is a CacheError`)
    t.equal(err.name, name)
    t.equal(err.code, code)
    t.equal(err.statusCode, statusCode)
    t.equal(err.message, 'm')
    t.match(err.stack, new RegExp(`^${name}: m`))
  }
  const limited = new RateLimitError('slow down', 7, 10)
  t.equal(limited.retryAfter, 7)
  t.equal(limited.limit, 10)
  const cause = new Error('root')
  t.equal(new CacheSerializationError('wrapped', { cause }).cause, cause)
})

t.test('toCacheError', async (t) => {
  const own = new CacheKeyError('bad')
  t.equal(toCacheError(own), own, 'a CacheError is kept')
  const socket = new Error('connect ECONNREFUSED')
  const wrapped = toCacheError(socket)
  t.ok(wrapped instanceof RedisConnectionError)
  t.equal(wrapped.message, 'Redis command failed: connect ECONNREFUSED')
  t.equal(wrapped.cause, socket)
  t.equal(toCacheError('a string').message, 'Redis command failed: a string')
})

t.test('validateStaleSeconds', async (t) => {
  t.equal(validateStaleSeconds(undefined, 'staleWhileRevalidate'), 0, 'unset is 0')
  t.equal(validateStaleSeconds(0, 'staleWhileRevalidate'), 0)
  t.equal(validateStaleSeconds(30, 'staleWhileRevalidate'), 30)
  for (const value of [-1, 1.5, '5', null, Number.NaN]) {
    t.throws(() => validateStaleSeconds(value, 'staleIfError'), { name: 'RangeError', message: /^staleIfError must be a whole number of seconds, 0 or more/ }, String(value))
  }
})

t.test('defaultRouteKey sorts query parameters by name', async (t) => {
  t.equal(defaultRouteKey('/items'), '/items')
  t.equal(defaultRouteKey('/items?'), '/items', 'an empty query is no query')
  t.equal(defaultRouteKey('/items?&&'), '/items')
  t.equal(defaultRouteKey('/items?a=1'), '/items?a=1')
  t.equal(defaultRouteKey('/items?b=2&a=1'), '/items?a=1&b=2')
  t.equal(defaultRouteKey('/items?a=1&b=2'), '/items?a=1&b=2')
  t.equal(defaultRouteKey('/items?b=2&&a=1&'), '/items?a=1&b=2', 'empty parameters are dropped')
  t.equal(defaultRouteKey('/items?t=2&a=1&t=1'), '/items?a=1&t=2&t=1', 'repeated parameters keep their order')
  t.equal(defaultRouteKey('/items?flag&a=1'), '/items?a=1&flag')
  t.equal(defaultRouteKey('/x?a=1&a=1'), '/x?a=1&a=1')
})

t.test('boundedKey replaces overlong keys by a digest', async (t) => {
  t.equal(boundedKey('/short'), '/short')
  const exact = `/${'a'.repeat(1023)}`
  t.equal(boundedKey(exact), exact, '1024 bytes fit')
  const utf8 = '€'.repeat(341)
  t.equal(boundedKey(utf8), utf8, 'many characters, few enough bytes')
  const long = `/${'a'.repeat(1024)}`
  const digest = boundedKey(long)
  t.match(digest, /^#sha256:[0-9a-f]{64}$/)
  t.equal(boundedKey(long), digest, 'stable')
  t.not(boundedKey(`${long}b`), digest)
  t.doesNotThrow(() => validateKey(digest))
})

t.test('keys from parts: escaped and joined, so different parts never make the same key', async (t) => {
  t.equal(keyFromParts(['item', '5', 'reviews']), 'item:5:reviews')
  t.equal(keyFromParts(['item:5', 'reviews']), 'item\\:5:reviews')
  t.equal(keyFromParts(['a\\', 'b']), 'a\\\\:b', 'a backslash is escaped too, so it cannot escape the separator')
  t.not(keyFromParts(['a\\', 'b']), keyFromParts(['a\\:b']))
  t.equal(keyFromParts(['']), '')
  t.throws(() => keyFromParts([]), { name: 'CacheKeyError', message: /must not be empty/ })
  t.throws(() => keyFromParts(['a', 5]), { name: 'CacheKeyError', message: /parts must be strings \(got 5\)/ })
  t.equal(toKey(['a', 'b']), 'a:b')
  t.equal(toKey('a:b'), 'a:b', 'a string is used as it is')
  t.throws(() => toKey(['']), { name: 'CacheKeyError' }, 'the joined key is validated')
})

t.test('an entry carries its tags: together they fit in 64 KiB', async (t) => {
  const tags = Array.from({ length: 70 }, (_, i) => `${i}`.padEnd(1000, 'x'))
  t.same(validateTags(tags), tags, 'any number of tags may be invalidated at once')
  t.throws(() => validateEntryTags(tags), { name: 'CacheKeyError', message: /at most 65535 bytes/ })
  t.same(validateEntryTags(tags.slice(0, 60)), tags.slice(0, 60))
})
