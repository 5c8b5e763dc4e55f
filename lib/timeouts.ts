// Waiting for work with a soft and a hard timeout, for getOrSet and route caching alike. The
// work is never cancelled: a caller that stops waiting leaves it running, and it still stores
// its result. What a caller can be given instead is the stale value the work will replace.

/** The stale value a caller may be given instead of the work's result, as known so far. */
export class Fallback<T> {
  /** Set once any caller stopped waiting on its soft timeout: later callers do not wait at all. */
  slow = false
  /** Callers whose soft timeout passed before the stale value was known. */
  private waiting: Array<() => void> | undefined
  /** `usable`: whether it may still be served (an invalidation may have come since). */
  private stale: { value: T, usable: () => boolean } | undefined

  /** The stale value, found: callers whose soft timeout passed get it now. */
  found (value: T, usable: () => boolean): void {
    this.stale = { value, usable }
    const waiting = this.waiting
    this.waiting = undefined
    if (waiting !== undefined) for (const serve of waiting) serve()
  }

  /** The stale value when there is one that may be served. */
  current (): { value: T } | undefined {
    return this.stale !== undefined && this.stale.usable() ? this.stale : undefined
  }

  /** Calls `serve` once the stale value is found. */
  whenFound (serve: () => void): void {
    (this.waiting ??= []).push(serve)
  }

  // The hard timeout bounds the wait for the work (a callback, or another instance's), not for the
  // store's round trips before it (a slow store is bounded by its command timeout, then
  // degrades): it counts from `begin`.
  private begun = false
  private beginning: Array<() => void> | undefined
  /** What the work answered, while it is still being stored. */
  answered: { value: T } | undefined

  /** The work proper begins (a callback runs, or its lock is waited for): hard timeouts count. */
  begin (): void {
    this.begun = true
    const beginning = this.beginning
    this.beginning = undefined
    if (beginning !== undefined) for (const start of beginning) start()
  }

  /** Calls `start` once the work proper has begun. */
  whenBegun (start: () => void): void {
    if (this.begun) start()
    else (this.beginning ??= []).push(start)
  }
}

/**
 * Past `ms` (0: never) since the work began (Fallback.begin), a caller gets the work's result if
 * it is only being stored, else the stale value or the error `error` makes.
 */
export interface HardTimeout {
  ms: number
  error: () => Error
}

/**
 * The work's result, or the stale value once `soft` ms have passed (0: never; when there is one),
 * or what `hard` says past its time. `servedStale` hears of a caller given the stale value.
 */
export function awaitWithin<T> (work: Promise<T>, fallback: Fallback<T>, soft: number, servedStale: () => void, hard?: HardTimeout): Promise<T> {
  if (soft > 0 && fallback.slow) {
    const stale = fallback.current()
    if (stale !== undefined) {
      servedStale()
      return Promise.resolve(stale.value)
    }
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false
    let softTimer: NodeJS.Timeout | undefined
    let hardTimer: NodeJS.Timeout | undefined
    const settle = (): boolean => {
      if (settled) return false
      settled = true
      clearTimeout(softTimer)
      clearTimeout(hardTimer)
      return true
    }
    const serveStale = (): boolean => {
      const stale = fallback.current()
      if (stale === undefined || !settle()) return false
      fallback.slow = true
      servedStale()
      resolve(stale.value)
      return true
    }
    work.then((value) => { if (settle()) resolve(value) }, (err: unknown) => { if (settle()) reject(err) })
    if (soft > 0) softTimer = setTimeout(() => { if (!serveStale()) fallback.whenFound(serveStale) }, soft)
    if (hard !== undefined && hard.ms > 0) {
      const expire = (): void => {
        // A result that is only being stored is an answer in time.
        const answered = fallback.answered
        if (answered !== undefined) {
          if (settle()) resolve(answered.value)
        } else if (!serveStale() && settle()) {
          reject(hard.error())
        }
      }
      fallback.whenBegun(() => { if (!settled) hardTimer = setTimeout(expire, hard.ms) })
    }
  })
}
