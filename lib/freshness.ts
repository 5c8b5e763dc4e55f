// One rule for how old an entry is allowed to be, shared by `get`, getOrSet, route caching and
// the cross-instance lock. An entry is fresh for `freshFor` seconds after it was stored; past
// that it may still be served for a while (RFC 5861): while it is refreshed in the background
// (stale-while-revalidate), or when the work that would replace it fails (stale-if-error).
import { isEnvelope, type Stamp, stampOf } from './envelope'

/** Seconds past freshness during which an entry may still be served, by reason. */
export interface StaleWindows {
  staleWhileRevalidate: number
  staleIfError: number
}

export const NO_STALE: StaleWindows = { staleWhileRevalidate: 0, staleIfError: 0 }

/**
 * - `fresh`: serve it.
 * - `stale-while-revalidate`: serve it and refresh it in the background.
 * - `stale-if-error`: do the work; serve it only if the work fails.
 * - `expired`: do the work; it is of no use any more.
 */
export type Freshness = 'fresh' | 'stale-while-revalidate' | 'stale-if-error' | 'expired'

export function freshness (stamp: Stamp, windows: StaleWindows, now = Date.now()): Freshness {
  const past = now - (stamp.storedAt + stamp.freshFor * 1000)
  if (past < 0) return 'fresh'
  if (past < windows.staleWhileRevalidate * 1000) return 'stale-while-revalidate'
  if (past < windows.staleIfError * 1000) return 'stale-if-error'
  return 'expired'
}

export function isFresh (stamp: Stamp, now = Date.now()): boolean {
  return now < stamp.storedAt + stamp.freshFor * 1000
}

/** Freshness read straight from stored bytes; foreign bytes are not fresh. */
export function isFreshBytes (bytes: Buffer): boolean {
  return isEnvelope(bytes) && isFresh(stampOf(bytes))
}

/** Whole seconds of freshness left (negative once stale): the `ttl` of a Cache-Status. */
export function secondsLeft (stamp: Stamp, now: number): number {
  return Math.floor((stamp.storedAt + stamp.freshFor * 1000 - now) / 1000)
}
