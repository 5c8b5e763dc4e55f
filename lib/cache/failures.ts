// The failure policy: a store failure is counted and logged, then either degrades (the caller
// gets its fallback: a miss, `false`, `0`) or, with `throwOnError`, is thrown as a typed error.
// An outage fails every command, so the log says the first failure and then a summary at most
// every FAILURE_LOG_INTERVAL_MS.
import type { FastifyBaseLogger } from 'fastify'
import { type CacheError, toCacheError } from '../errors'
import type { Statistics } from '../statistics'

const FAILURE_LOG_INTERVAL_MS = 10_000

export class FailurePolicy {
  readonly throwOnError: boolean
  private readonly stats: Statistics
  private readonly log: FastifyBaseLogger
  private lastLog = 0
  private suppressed = 0

  constructor (throwOnError: boolean, stats: Statistics, log: FastifyBaseLogger) {
    this.throwOnError = throwOnError
    this.stats = stats
    this.log = log
  }

  /** Counts and logs a failure; throws the typed error with `throwOnError`, else returns `fallback`. */
  failed<T> (err: unknown, op: string, key: string, fallback: T, throwOnError = this.throwOnError): T {
    const error = this.count(err, op, key)
    if (throwOnError) throw error
    return fallback
  }

  /** Counts and logs a failure (throttled); returns it as a typed error. */
  count (err: unknown, op: string, key: string): CacheError {
    const error = toCacheError(err)
    this.stats.errors++
    const now = Date.now()
    if (now - this.lastLog >= FAILURE_LOG_INTERVAL_MS) {
      this.log.warn({ err: error, op, key, suppressed: this.suppressed }, `fastify-redis-cache: ${op} failed: ${error.message}`)
      this.lastLog = now
      this.suppressed = 0
    } else {
      this.suppressed++
    }
    return error
  }
}
