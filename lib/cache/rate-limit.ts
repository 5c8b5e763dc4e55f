// `rateLimit`: a fixed window of `window` seconds counted atomically in the store. It fails open:
// an outage must not turn every request away, unless the caller asks for it.
import type { RateLimitOptions, RateLimitResult } from '../../types'
import { invalidValue, RateLimitError } from '../errors'
import { validateKey, validateSeconds } from '../keys'
import type { RateWindowStore } from '../stores/store'
import type { FailurePolicy } from './failures'

export async function rateLimit (windows: RateWindowStore, failures: FailurePolicy, id: string, opts: RateLimitOptions): Promise<RateLimitResult> {
  validateKey(id)
  const max = opts?.max
  if (typeof max !== 'number' || !Number.isInteger(max) || max < 1) {
    throw invalidValue(`rateLimit max must be a positive whole number (got ${String(max)})`)
  }
  const window = validateSeconds(opts.window, 'rateLimit window')
  let count: number
  let resetMs: number
  try {
    ({ count, resetMs } = await windows.hitWindow(id, window))
  } catch (err) {
    return failures.failed(err, 'rateLimit', id, { limit: max, remaining: max, reset: window })
  }
  const reset = Math.max(1, Math.ceil(resetMs / 1000))
  if (count > max) {
    throw new RateLimitError(`Rate limit of ${max} per ${window}s exceeded for ${id}; retry in ${reset}s`, reset, max)
  }
  return { limit: max, remaining: max - count, reset }
}
