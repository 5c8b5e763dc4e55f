// The failure policy: a store failure is counted and logged, then either degrades (the caller
// gets its fallback: a miss, `false`, `0`) or, with `throwOnError`, is thrown as a typed error.
// An outage fails every command, so the log says the first failure and then one line at most
// every ten seconds (see throttled-log.ts).
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import { type CacheError, toCacheError } from '../errors'
import type { Statistics } from '../statistics'
import type { Telemetry } from '../telemetry'
import { Throttle } from '../throttled-log'

/** The request a failure happened for: its logger has the request's id. */
export type RequestLog = Pick<FastifyRequest, 'log'>

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
  failed<T> (err: unknown, op: string, key: string, fallback: T, throwOnError = this.throwOnError, request?: RequestLog): T {
    const error = this.count(err, op, key, request)
    if (throwOnError) throw error
    return fallback
  }

  /**
   * Counts and logs a failure (throttled); returns it as a typed error. On the request path the
   * line goes through `request.log`, so it carries the request's id.
   */
  count (err: unknown, op: string, key: string, request?: RequestLog): CacheError {
    const error = toCacheError(err)
    this.stats.errors++
    if (this.telemetry.on) this.telemetry.failed(error, op)
    const suppressed = this.throttle.pass()
    if (suppressed !== undefined) {
      const fields = { err: error, op, key, suppressed }
      const message = `fastify-redis-cache: ${op} failed: ${error.message}`
      if (request === undefined) this.log.warn(fields, message)
      else request.log.warn({ plugin: 'fastify-redis-cache', ...fields }, message)
    }
    return error
  }
}
