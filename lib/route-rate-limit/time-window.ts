// `timeWindow` as @fastify/rate-limit takes it: milliseconds, or a duration in words.
import { CacheConfigError } from '../errors'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION = /^(\d+(?:\.\d+)?)\s*(ms|milliseconds?|msecs?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)?$/i

/** One minute, as in @fastify/rate-limit. */
export const DEFAULT_TIME_WINDOW = 60_000

/** Whole seconds (rounded up) of a `timeWindow`; `what` names the option in the error. */
export function windowSeconds (timeWindow: number | string | undefined, what: string): number {
  const ms = typeof timeWindow === 'string' ? parseDuration(timeWindow, what) : timeWindow ?? DEFAULT_TIME_WINDOW
  return Math.max(1, Math.ceil(ms / 1000))
}

function parseDuration (text: string, what: string): number {
  const match = DURATION.exec(text.trim())
  if (match === null || Number(match[1]) <= 0) {
    throw new CacheConfigError(`fastify-redis-cache: invalid ${what}: timeWindow must be milliseconds or a duration such as '1 minute' or '30s' (got ${JSON.stringify(text)})`)
  }
  const unit = (match[2] ?? 'ms').toLowerCase()
  const key = unit.startsWith('ms') || unit.startsWith('milli') ? 'ms' : unit[0]
  return Number(match[1]) * UNITS[key]
}
