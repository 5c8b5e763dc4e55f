// Reading values back for `get` and getOrSet: the store read, decoding, and the statistics and
// failure policy around them. An unreadable entry is a miss: deleted, counted, logged.
import type { Envelope } from '../envelope'
import { attachment } from '../local/attached'
import { isFresh } from '../freshness'
import { VALID } from '../invalidation/stamps'
import type { CacheCore } from './core'

/** A value read back, with its envelope and the bytes it came from. */
export interface Found { found: true, value: unknown, envelope: Envelope, bytes: Buffer }
export type Lookup = Found | { found: false }

/** A value decoded once, for as long as the local tier hands out its bytes. */
export interface Decoded { value: unknown, envelope: Envelope, bytes: Buffer }
const MISS: Lookup = { found: false }

export class ValueReader {
  private readonly core: CacheCore
  // The local tier and the memory store hand out the same Buffer on every hit: it is deserialized
  // once. Their values are therefore shared between callers, as in any in-process cache.
  private readonly decoded = attachment<Decoded>('fastify-redis-cache.value')

  constructor (core: CacheCore) {
    this.core = core
  }

  /**
   * A fresh value held in this process (local tier, memory store) and already decoded, without a promise or a lookup:
   * the hot path of getOrSet. Undefined sends the caller down the full lookup.
   */
  localHit (fullKey: string): Decoded | undefined {
    const bytes = this.core.nearby?.get(fullKey)
    if (bytes === undefined) return undefined
    const decoded = this.decoded.get(bytes)
    if (decoded === undefined || !isFresh(decoded.envelope) || this.core.stamps.verdict(fullKey, bytes) !== VALID) return undefined
    this.core.stats.hits++
    this.core.stats.bytesRead += bytes.length
    return decoded
  }

  /**
   * Reads an entry, fresh or kept for stale serving: a miss when absent, unreadable or when the
   * store fails (counted, logged, or thrown with `throwOnError`).
   */
  async lookup (fullKey: string): Promise<Lookup> {
    const { core } = this
    let bytes: Buffer | null
    try {
      bytes = await core.read(fullKey)
    } catch (err) {
      core.stats.misses++
      return core.failures.failed(err, 'get', fullKey, MISS)
    }
    if (bytes === null) {
      core.stats.misses++
      return MISS
    }
    core.stats.bytesRead += bytes.length
    const learning = core.learn(bytes)
    if (learning !== undefined) await learning
    let decoded = this.decoded.get(bytes)
    try {
      if (decoded === undefined) {
        const { value, envelope } = core.codec.decodeValue(bytes)
        decoded = { value, envelope, bytes }
        if (core.nearby !== undefined) this.decoded.set(bytes, decoded)
      }
    } catch (err) {
      core.stats.misses++
      core.discard(fullKey)
      return core.failures.failed(err, 'get', fullKey, MISS)
    }
    // Covered by an invalidation: not even a stale value to fall back on.
    if (!core.admits(fullKey, bytes)) {
      core.stats.misses++
      return MISS
    }
    if (isFresh(decoded.envelope)) core.stats.hits++
    else core.stats.misses++
    return { found: true, value: decoded.value, envelope: decoded.envelope, bytes }
  }
}
