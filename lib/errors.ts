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

/** A bad option or environment variable at registration. */
export class CacheConfigError extends CacheError {
  override readonly code = 'CACHE_CONFIG'
}

/** Wraps anything a store threw into the cache's own hierarchy. */
export function toCacheError (err: unknown): CacheError {
  if (err instanceof CacheError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new RedisConnectionError(`Redis command failed: ${message}`, { cause: err })
}
