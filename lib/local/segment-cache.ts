// The local tier's memory: a bounded in-process cache of stored bytes, for hot entries, in the
// segment memory (local/segment-memory.ts: CLOCK eviction, close to LRU, over a log of segments).
// It keeps only our own envelopes, and an entry never outlives its own freshness nor the tier's
// `ttl`. What keeps it coherent with Redis and with other instances is stores/tiered.ts and bus/.
import { freshUntilOf, isEnvelope } from '../envelope'
import type { Statistics } from '../statistics'
import { type SegmentBounds, SegmentMemory } from './segment-memory'

/**
 * Copies leave the tier up to this share of its ttl early, at random: copies made together (after
 * a start or a deploy, every hot entry within a second) would otherwise all be read again from
 * Redis in the same second, a burst that shows in the tail latency. Only ever earlier, so the
 * ttl still bounds how long a copy is kept.
 */
const TTL_SPREAD = 0.1
/**
 * A copy hit within this share of the tier's ttl before it leaves is read again from the store in
 * the background (TieredStore): a hot entry then stays local, rather than going back to Redis on
 * the request path once its copy is old, which every hot entry did together a ttl after a start.
 */
const REFRESH_AHEAD = 0.2

export interface SegmentCacheBounds extends SegmentBounds {
  /** Seconds an entry may stay at most. */
  ttl: number
}

/**
 * The segment memory with the local tier's rule for what it keeps and for how long. A view
 * returned by `get` keeps its whole segment alive while someone holds it: callers that keep
 * stored bytes for long should copy them.
 */
export class SegmentCache extends SegmentMemory {
  private readonly ttl: number
  // Keeps nothing while invalidations may not reach this instance (bus/invalidation-bus.ts
  // decides): with nothing held, every reader, whichever path it takes, goes to the store.
  private off = false

  constructor (options: SegmentCacheBounds, stats: Statistics) {
    super(options, stats)
    this.ttl = options.ttl
  }

  /** Whether the tier is bypassed: empty, keeping nothing. */
  get bypassed (): boolean {
    return this.off
  }

  /** Bypasses the tier (emptying it) or uses it again. */
  bypass (on: boolean): void {
    this.off = on
    if (on) this.clear()
  }

  /**
   * Whether the copy of `key` (`bytes`, just found by a hit) is to be read again from the store:
   * it leaves within REFRESH_AHEAD of the ttl, and by the tier's ttl rather than by its own
   * freshness (which a copy read again would not extend).
   */
  renewalDue (key: string, bytes: Buffer): boolean {
    const leaves = this.expiresAt(key) as number
    return leaves - Date.now() < this.ttl * 1000 * REFRESH_AHEAD && freshUntilOf(bytes) > leaves
  }

  /**
   * Keeps bytes until their own freshness ends or the tier's ttl (spread, see TTL_SPREAD),
   * whichever is first.
   */
  set (key: string, bytes: Buffer): void {
    // Only our own envelopes carry the freshness the local copy must not outlive. The old copy
    // goes whether or not the new bytes are kept: it is stale now.
    if (this.off || !isEnvelope(bytes)) {
      this.delete(key)
      return
    }
    this.put(key, bytes, this.leavesAt(bytes))
  }

  /**
   * Keeps the copy of `key` as if made now, when it holds these very bytes (read again from the
   * store): no copy is made, and what was decoded from it stays. False when it holds other bytes.
   */
  renew (key: string, bytes: Buffer): boolean {
    // A hit is what asked for the read: counting it again changes nothing.
    const held = this.get(key)
    return held !== undefined && held.equals(bytes) && this.expire(key, this.leavesAt(bytes))
  }

  private leavesAt (bytes: Buffer): number {
    return Math.min(freshUntilOf(bytes), Date.now() + this.ttl * 1000 * (1 - TTL_SPREAD * Math.random()))
  }
}
