// What getOrSet and route caching share to stay fast while the work behind an entry is slow:
// eager refresh (refresh a hot entry before it expires), timeouts (stop waiting for slow work and
// serve the stale value, while the work goes on and stores its result) and ttl jitter. Options
// are validated here, for both, with the errors of keys.ts.
import type { CallbackTimeout, GetOrSetDefaults } from '../types/options'
import type { Stamp } from './envelope'
import { invalidValue } from './errors'
import { NO_STALE, type StaleWindows } from './freshness'
import { validateStaleSeconds } from './keys'

/** How one getOrSet call (or one route) copes with slow or expiring work, validated. */
export interface Resilience {
  windows: StaleWindows
  /** Fraction of the ttl after which a hit refreshes in the background; 0: never. */
  eagerRefresh: number
  /** Milliseconds; 0: none. */
  soft: number
  hard: number
  /** Fraction by which a stored ttl is shortened at random; 0: none. */
  jitter: number
}

export const NO_RESILIENCE: Resilience = { windows: NO_STALE, eagerRefresh: 0, soft: 0, hard: 0, jitter: 0 }

/**
 * `defaults` overridden by whatever `options` sets (field by field; `timeout` merges soft and
 * hard). Returns `defaults` itself when `options` sets nothing, which is the common case on the
 * hot path.
 */
export function resolveResilience (options: GetOrSetDefaults | undefined, defaults: Resilience): Resilience {
  if (options === undefined || (options.staleWhileRevalidate === undefined && options.staleIfError === undefined &&
    options.eagerRefresh === undefined && options.timeout === undefined && options.jitter === undefined)) return defaults
  const staleWhileRevalidate = options.staleWhileRevalidate === undefined ? defaults.windows.staleWhileRevalidate : validateStaleSeconds(options.staleWhileRevalidate, 'staleWhileRevalidate')
  const staleIfError = options.staleIfError === undefined ? defaults.windows.staleIfError : validateStaleSeconds(options.staleIfError, 'staleIfError')
  const windows = staleWhileRevalidate === 0 && staleIfError === 0 ? NO_STALE : { staleWhileRevalidate, staleIfError }
  const { soft, hard } = options.timeout === undefined ? defaults : validateTimeout(options.timeout, defaults)
  return {
    windows,
    eagerRefresh: options.eagerRefresh === undefined ? defaults.eagerRefresh : validateEagerRefresh(options.eagerRefresh),
    soft,
    hard,
    jitter: options.jitter === undefined ? defaults.jitter : validateJitter(options.jitter)
  }
}

/** A fraction strictly between 0 and 1, or `false` (0: off). */
export function validateEagerRefresh (value: unknown): number {
  if (value === false) return 0
  if (typeof value !== 'number' || !(value > 0 && value < 1)) {
    throw invalidValue(`eagerRefresh must be a number between 0 and 1, exclusive, or false (got ${describe(value)})`)
  }
  return value
}

export function validateJitter (value: unknown): number {
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) {
    throw invalidValue(`jitter must be a number from 0 to 1 (got ${describe(value)})`)
  }
  return value
}

/** `timeout` over `base` (the defaults): soft and hard in milliseconds, soft never over hard. */
export function validateTimeout (value: unknown, base: Pick<Resilience, 'soft' | 'hard'> = NO_RESILIENCE): { soft: number, hard: number } {
  if (value === false) return { soft: 0, hard: 0 }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalidValue(`timeout must be { soft, hard } in milliseconds, or false (got ${describe(value)})`)
  }
  const { soft, hard, ...rest } = value as CallbackTimeout
  const unknown = Object.keys(rest)
  if (unknown.length > 0) throw invalidValue(`timeout has no option ${unknown.join(', ')}: only soft and hard`)
  const resolved = {
    soft: soft === undefined ? base.soft : validateMs(soft, 'timeout.soft'),
    hard: hard === undefined ? base.hard : validateMs(hard, 'timeout.hard')
  }
  if (resolved.soft > 0 && resolved.hard > 0 && resolved.soft > resolved.hard) {
    throw invalidValue(`timeout.soft (${resolved.soft} ms) must not exceed timeout.hard (${resolved.hard} ms)`)
  }
  return resolved
}

function validateMs (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw invalidValue(`${what} must be a positive whole number of milliseconds (got ${describe(value)})`)
  }
  return value
}

function describe (value: unknown): string {
  return typeof value === 'number' ? String(value) : typeof value === 'string' ? JSON.stringify(value) : typeof value
}

/**
 * A ttl shortened at random by up to `jitter` of it, never lengthened (so `maxTtl` holds), and
 * never under a second: entries written together do not all expire together.
 */
export function jittered (ttl: number, jitter: number, random: () => number = Math.random): number {
  if (jitter === 0) return ttl
  return Math.max(1, Math.round(ttl * (1 - random() * jitter)))
}

/** Whether a fresh entry has lived past `fraction` of its freshness: time to refresh it early. */
export function refreshDue (stamp: Stamp, fraction: number, now = Date.now()): boolean {
  return now >= stamp.storedAt + stamp.freshFor * 1000 * fraction
}
