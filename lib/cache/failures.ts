// The failure policy: a store failure is counted and logged, then either degrades (the caller
// gets its fallback: a miss, `false`, `0`) or, with `throwOnError`, is thrown as a typed error.
// An outage fails every command, so the log says the first failure and then one line at most
// every ten seconds (see throttled-log.ts).
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { type CacheError, toCacheError } from '../errors'
import type { Statistics } from '../statistics'
import type { Telemetry } from '../telemetry'
import { Throttle } from '../throttled-log'

/** The request a failure happened for: its id goes on the log line. */
export type FailedRequest = Pick<FastifyRequest, 'id'>

export class FailurePolicy {
  readonly throwOnError: boolean
  private readonly stats: Statistics
  private readonly log: FastifyBaseLogger
  private readonly throttle = new Throttle()
  private readonly telemetry: Telemetry

  constructor (throwOnError: boolean, stats: Statistics, log: FastifyBaseLogger, telemetry: Telemetry) {
    this.throwOnError = throwOnError
    this.stats = stats
    this.log = log
    this.telemetry = telemetry
  }

  /** Counts and logs a failure; throws the typed error with `throwOnError`, else returns `fallback`. */
  failed<T> (err: unknown, op: string, key: string, fallback: T, throwOnError = this.throwOnError, request?: FailedRequest): T {
    const error = this.count(err, op, key, request)
    if (throwOnError) throw error
    return fallback
  }

  /**
   * Counts and logs a failure (throttled); returns it as a typed error. On the request path the
   * line carries the request's id. It goes through the plugin's logger all the same: a route's
   * own log level (`silent` on a health check) must not swallow the one line an outage gets.
   */
  count (err: unknown, op: string, key: string, request?: FailedRequest): CacheError {
    const error = toCacheError(err)
    this.stats.errors++
    if (this.telemetry.on) this.telemetry.failed(error, op)
    const suppressed = this.throttle.pass()
    if (suppressed !== undefined) {
      const fields = { err: error, op, key, suppressed }
      this.log.warn(request === undefined ? fields : { reqId: request.id, ...fields }, `fastify-redis-cache: ${op} failed: ${error.message}`)
    }
    return error
  }
}
