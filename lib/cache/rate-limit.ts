// `rateLimit`: a fixed window of `window` seconds counted atomically in the store. It fails open:
// an outage (or a Redis that refuses our scripts, or is out of memory) must not turn every
// request away; such calls are counted in `rateLimitFailedOpen`. A call guarding something
// costly says `failClosed: true` and is refused instead.
import type { RateLimitOptions, RateLimitResult } from '../../types'
import { invalidValue, RateLimitError } from '../errors'
import { validateKey, validateSeconds } from '../keys'
import type { CacheCore } from './core'

type RateLimitCore = Pick<CacheCore, 'failures' | 'stats'> & { stack: Pick<CacheCore['stack'], 'windows'> }

export async function rateLimit (core: RateLimitCore, id: string, opts: RateLimitOptions): Promise<RateLimitResult> {
  validateKey(id)
  const max = opts?.max
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1) {
    throw invalidValue(`rateLimit max must be a positive whole number (got ${String(max)})`)
  }
  const window = validateSeconds(opts.window, 'rateLimit window')
  let count: number
  let resetMs: number
  try {
    ({ count, resetMs } = await core.stack.windows.hitWindow(id, window))
  } catch (err) {
    // Counted in `errors` and logged (throttled) either way; the log says what became of it.
    const refuse = opts.failClosed ?? core.failures.throwOnError
    const error = core.failures.count(err, refuse ? 'rateLimit' : 'rateLimit (request let through)', id)
    // A store failure is always a RedisConnectionError (see toCacheError).
    if (refuse) throw error
    core.stats.rateLimitFailedOpen++
    return { limit: max, remaining: max, reset: window }
  }
  const reset = Math.max(1, Math.ceil(resetMs / 1000))
  if (count > max) {
    throw new RateLimitError(`Rate limit of ${max} per ${window}s exceeded for ${id}; retry in ${reset}s`, reset, max)
  }
  return { limit: max, remaining: max - count, reset }
}
