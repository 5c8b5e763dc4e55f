// The local tier in front of the shared store: hits of hot entries from process memory
// (local/segment-cache.ts), everything else from the store behind it.
//
// Coherence: every change made here (set, delete, expire, bust, clear, tag invalidation) drops
// the local copies at once and is published on the invalidation bus (bus/), and what other
// instances publish drops the named entries here. A read or a write of the store that an
// invalidation of its key overtakes does not land locally: a read may bring back the old bytes
// (sent before the change), and a write's bytes are what the invalidation removed. While the bus
// cannot vouch that invalidations arrive, the tier is bypassed (local/segment-cache.ts). With
// Redis down, local hits still serve.
import type { InvalidationBus, BusListener } from '../bus/invalidation-bus'
import type { SegmentCache } from '../local/segment-cache'
import { type ClaimedRead, type EntryStore, type LockClaim, type SyncReader, unclaimed } from './store'
import type { HeldLock } from '../lock'

/** The reads and writes of one key in flight together, that may land locally once done. */
interface InFlight {
  count: number
  /** The key was invalidated since they began: none of them lands. */
  raced: boolean
}

/** The store behind the tier, and whether it can be asked now. */
type InnerStore = EntryStore & { readonly connected: boolean }

export class TieredStore implements EntryStore, BusListener {
  readonly local: SegmentCache
  /**
   * The tier's copies for the synchronous hit paths (route hits, getOrSet hits): a hit there is
   * a hit like any other, and may have its copy read again (`hit`).
   */
  readonly nearby: SyncReader
  /** Keys whose copies are being read again ahead of their end: one read each at a time. */
  readonly refreshing = new Set<string>()
  private readonly inner: InnerStore
  private readonly prefix: string
  /** Set once the bus is built: the bus needs this store as its listener first. */
  bus: InvalidationBus | undefined
  // Reads and writes of the store in flight, by key. An invalidation of the key, here or from
  // another instance, marks them raced and takes them out, so that operations starting later
  // are not affected; those of other keys are not affected either.
  private readonly inFlight = new Map<string, InFlight>()

  constructor (inner: InnerStore, local: SegmentCache, prefix: string) {
    this.inner = inner
    this.local = local
    this.prefix = prefix
    this.nearby = {
      get: (key) => {
        const cached = local.get(key)
        return cached === undefined ? undefined : this.hit(key, cached)
      }
    }
  }

  async get (key: string, field?: string): Promise<Buffer | null> {
    // Variants of routes that vary on request headers are not kept locally.
    if (field !== undefined) return this.inner.get(key, field)
    const cached = this.local.get(key)
    if (cached !== undefined) return this.hit(key, cached)
    const bytes = await this.landing(key, this.inner.get(key))
    if (bytes.landed && bytes.result !== null) this.local.set(key, bytes.result)
    return bytes.result
  }

  /** As `get`, with the lock taken by the inner store on a miss (see EntryStore). */
  async readOrClaim (key: string, field: string | undefined, claim: LockClaim | undefined): Promise<ClaimedRead> {
    const cached = field === undefined ? this.local.get(key) : undefined
    if (cached !== undefined) return unclaimed(this.hit(key, cached))
    const read = await this.landing(key, this.inner.readOrClaim(key, field, claim))
    if (field === undefined && read.landed && read.result.bytes !== null) this.local.set(key, read.result.bytes)
    return read.result
  }

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string, lock?: HeldLock): Promise<boolean> {
    // A change of the key: reads and writes begun before it must not land after it.
    this.markRaced(key)
    const stored = await this.landing(key, this.inner.set(key, value, ttl, tags, field, lock))
    if (!stored.result) return false
    if (field === undefined && stored.landed) this.local.set(key, value)
    else this.local.delete(key)
    this.bus?.publishKeys([key])
    return true
  }

  delete (keys: readonly string[]): Promise<number> {
    return this.changing(keys, this.inner.delete(keys))
  }

  exists (keys: readonly string[]): Promise<number> {
    return this.inner.exists(keys)
  }

  expire (key: string, seconds: number): Promise<boolean> {
    return this.changing([key], this.inner.expire(key, seconds))
  }

  ttl (key: string): Promise<number> {
    return this.inner.ttl(key)
  }

  async clear (namespace?: string): Promise<number> {
    const prefix = namespace === undefined ? `${this.prefix}:` : `${this.prefix}:${namespace}:`
    this.dropPrefix(prefix)
    const removed = await this.inner.clear(namespace)
    this.bus?.publishPrefix(prefix)
    return removed
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const result = await this.inner.invalidateTags(tags)
    this.dropKeys(result.keys)
    if (result.keys.length > 0) this.bus?.publishKeys(result.keys)
    return result
  }

  /** Drops the local copies of `keys`, and keeps operations on them in flight from landing. */
  dropKeys (keys: readonly string[]): void {
    for (const key of keys) {
      this.local.delete(key)
      this.markRaced(key)
    }
  }

  dropPrefix (prefix: string): void {
    this.local.deletePrefix(prefix)
    for (const key of this.inFlight.keys()) if (key.startsWith(prefix)) this.markRaced(key)
  }

  dropAll (): void {
    this.local.clear()
    for (const operation of this.inFlight.values()) operation.raced = true
    this.inFlight.clear()
  }

  /**
   * Stops keeping anything locally while invalidations may not arrive, or starts again. Either
   * way nothing in flight lands: what it carries was read or written while they might not.
   */
  bypass (on: boolean): void {
    this.local.bypass(on)
    this.dropAll()
  }

  /**
   * A local hit: its copy is read again from the store once it nears its end (renewalDue),
   * unless the store cannot be asked now.
   */
  private hit (key: string, cached: Buffer): Buffer {
    if (this.local.renewalDue(key, cached) && !this.refreshing.has(key) && this.inner.connected) {
      this.refreshing.add(key)
      // What the store has now replaces the copy, as a miss would: a newer version, or nothing
      // (deleted there, with its message lost). Not when an invalidation overtook the read.
      this.landing(key, this.inner.get(key)).then(({ result, landed }) => {
        if (!landed) return
        if (result === null) this.local.delete(key)
        else if (!this.local.renew(key, result)) this.local.set(key, result)
      }, () => {
        // The store failed: the copy stays until it leaves, as without the refresh.
      }).finally(() => this.refreshing.delete(key))
    }
    return cached
  }

  /** Runs `work` on `key`; landed: no invalidation of the key overtook it. */
  private async landing<T> (key: string, work: Promise<T>): Promise<{ result: T, landed: boolean }> {
    let operation = this.inFlight.get(key)
    if (operation === undefined) {
      operation = { count: 0, raced: false }
      this.inFlight.set(key, operation)
    }
    operation.count++
    try {
      const result = await work
      return { result, landed: !operation.raced }
    } finally {
      if (--operation.count === 0 && this.inFlight.get(key) === operation) this.inFlight.delete(key)
    }
  }

  /** Drops keys locally at once (even if the store fails), then tells the other instances. */
  private async changing<T> (keys: readonly string[], work: Promise<T>): Promise<T> {
    this.dropKeys(keys)
    const result = await work
    this.bus?.publishKeys(keys)
    return result
  }

  /** Marks the operations on `key` in flight raced; those that start later are not. */
  private markRaced (key: string): void {
    const operation = this.inFlight.get(key)
    if (operation !== undefined) {
      operation.raced = true
      this.inFlight.delete(key)
    }
  }
}
