// The local tier in front of the shared store: hits of hot entries from process memory
// (local/segment-cache.ts), everything else from the store behind it.
//
// Coherence: every change made here (set, delete, expire, bust, clear, tag invalidation) drops
// the local copies at once and is published on the invalidation bus (bus/), and what other
// instances publish drops the named entries here. A read from the store that an invalidation of
// its key overtakes is not kept locally: it may carry the old bytes. With Redis down, local hits
// still serve.
import type { InvalidationBus, BusListener } from '../bus/invalidation-bus'
import type { SegmentCache } from '../local/segment-cache'
import type { EntryStore } from './store'

/** The reads of one key from the store in flight together. */
interface PendingRead {
  readers: number
  /** The key was invalidated since these reads began. */
  raced: boolean
}

export class TieredStore implements EntryStore, BusListener {
  readonly local: SegmentCache
  private readonly inner: EntryStore
  private readonly prefix: string
  /** Set once the bus is built: the bus needs this store as its listener first. */
  bus: InvalidationBus | undefined
  // Reads from the store in flight, by key. An invalidation of the key, here or from another
  // instance, marks the read raced and takes it out: what it brings back may be the old bytes
  // (sent before the change), so it is not kept locally. Reads of other keys are not affected.
  private readonly reading = new Map<string, PendingRead>()

  constructor (inner: EntryStore, local: SegmentCache, prefix: string) {
    this.inner = inner
    this.local = local
    this.prefix = prefix
  }

  async get (key: string, field?: string): Promise<Buffer | null> {
    // Variants of routes that vary on request headers are not kept locally.
    if (field !== undefined) return this.inner.get(key, field)
    const cached = this.local.get(key)
    if (cached !== undefined) return cached
    let read = this.reading.get(key)
    if (read === undefined) {
      read = { readers: 0, raced: false }
      this.reading.set(key, read)
    }
    read.readers++
    try {
      const bytes = await this.inner.get(key)
      if (bytes !== null && !read.raced) this.local.set(key, bytes)
      return bytes
    } finally {
      if (--read.readers === 0 && this.reading.get(key) === read) this.reading.delete(key)
    }
  }

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<void> {
    this.markRaced(key)
    await this.inner.set(key, value, ttl, tags, field)
    if (field === undefined) this.local.set(key, value)
    else this.local.delete(key)
    this.bus?.publishKeys([key])
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

  /** Drops the local copies of `keys`, and keeps reads of them in flight from storing theirs. */
  dropKeys (keys: readonly string[]): void {
    for (const key of keys) {
      this.local.delete(key)
      this.markRaced(key)
    }
  }

  dropPrefix (prefix: string): void {
    this.local.deletePrefix(prefix)
    for (const key of this.reading.keys()) if (key.startsWith(prefix)) this.markRaced(key)
  }

  dropAll (): void {
    this.local.clear()
    for (const read of this.reading.values()) read.raced = true
    this.reading.clear()
  }

  /** Drops keys locally at once (even if the store fails), then tells the other instances. */
  private async changing<T> (keys: readonly string[], work: Promise<T>): Promise<T> {
    this.dropKeys(keys)
    const result = await work
    this.bus?.publishKeys(keys)
    return result
  }

  /** Marks the reads of `key` in flight raced; reads that start later are not. */
  private markRaced (key: string): void {
    const read = this.reading.get(key)
    if (read !== undefined) {
      read.raced = true
      this.reading.delete(key)
    }
  }
}
