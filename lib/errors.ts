// Every error the cache raises is created here, with a stable `code` users can match on
// and the HTTP status the error handler answers with.

export class CacheError extends Error {
  readonly code: string = 'CACHE_ERROR'
  readonly statusCode: number = 500

  constructor (message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
  }
}

/** Redis is unreachable, timed out, or the circuit breaker is open. */
export class RedisConnectionError extends CacheError {
  override readonly code = 'CACHE_REDIS_CONNECTION'
  override readonly statusCode = 503
}

/** A key, namespace or tag that is not allowed (empty, too long, a pattern, ...). */
export class CacheKeyError extends CacheError {
  override readonly code = 'CACHE_KEY_INVALID'
  override readonly statusCode = 400
}

export class CacheSerializationError extends CacheError {
  override readonly code = 'CACHE_SERIALIZATION'
}

export class CacheDeserializationError extends CacheError {
  override readonly code = 'CACHE_DESERIALIZATION'
}

export class CacheCompressionError extends CacheError {
  override readonly code = 'CACHE_COMPRESSION'
}

export class CacheDecompressionError extends CacheError {
  override readonly code = 'CACHE_DECOMPRESSION'
}

/** Thrown by `rateLimit` once `max` is passed; `retryAfter` is in whole seconds. */
export class RateLimitError extends CacheError {
  override readonly code = 'CACHE_RATE_LIMITED'
  override readonly statusCode = 429
  readonly retryAfter: number
  readonly limit: number

  constructor (message: string, retryAfter: number, limit: number) {
    super(message)
    this.retryAfter = retryAfter
    this.limit = limit
  }
}

/**
 * A getOrSet caller waited `timeout.hard` milliseconds for the callback and no stale value could
 * be served. The callback goes on in the background and stores its result (504: the source of
 * the data did not answer in time).
 */
export class CacheTimeoutError extends CacheError {
  override readonly code = 'CACHE_TIMEOUT'
  override readonly statusCode = 504
  /** The hard timeout that elapsed, in milliseconds. */
  readonly timeoutMs: number

  constructor (message: string, timeoutMs: number) {
    super(message)
    this.timeoutMs = timeoutMs
  }
}

/** A bad option or environment variable at registration. */
export class CacheConfigError extends CacheError {
  override readonly code = 'CACHE_CONFIG'
}

/** A request to a management route without the token it needs. */
export class CacheUnauthorizedError extends CacheError {
  override readonly code = 'CACHE_UNAUTHORIZED'
  override readonly statusCode = 401
}

/**
 * A management request refused for where it comes from: a client beyond the loopback interface
 * while the routes are unprotected, or a state-changing request sent by another site's page.
 */
export class CacheForbiddenError extends CacheError {
  override readonly code = 'CACHE_FORBIDDEN'
  override readonly statusCode = 403
}

// Programmer errors in an argument stay the built-in RangeError or TypeError users expect, with
// a stable `code` of our own.
export type CodedError<E extends Error> = E & { code: string }

/** A number out of its range (a ttl, a rate-limit bound). */
export function invalidValue (message: string): CodedError<RangeError> {
  return Object.assign(new RangeError(message), { code: 'CACHE_INVALID_VALUE' })
}

/** A callback that is not a function. */
export function callbackRequired (method: string): CodedError<TypeError> {
  return Object.assign(new TypeError(`${method} needs a callback function`), { code: 'CACHE_INVALID_CALLBACK' })
}

/** A value the JSON serializer cannot represent (a function, a symbol, undefined). */
export function notJson (value: unknown): CodedError<TypeError> {
  return Object.assign(new TypeError(`a ${typeof value} is not JSON`), { code: 'CACHE_NOT_JSON' })
}

/**
 * A query string with parameters a route does not take, shaped as Fastify's own validation
 * errors so the route's error handler answers it like any other 400.
 */
export function unknownQueryParameters (names: string[]): Error & { statusCode: number, code: string, validation: unknown[], validationContext: string } {
  return Object.assign(new Error(`querystring must NOT have additional properties (${names.join(', ')})`), {
    statusCode: 400,
    code: 'FST_ERR_VALIDATION',
    validation: names.map((name) => ({ keyword: 'additionalProperties', instancePath: '', schemaPath: '#/additionalProperties', params: { additionalProperty: name }, message: 'must NOT have additional properties' })),
    validationContext: 'querystring'
  })
}

/** Wraps anything a store threw into the cache's own hierarchy. */
export function toCacheError (err: unknown): CacheError {
  if (err instanceof CacheError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new RedisConnectionError(`Redis command failed: ${message}`, { cause: err })
}
