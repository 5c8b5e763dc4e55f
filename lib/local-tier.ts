// The local tier: an in-process cache of stored bytes in front of Redis (CLOCK eviction, close to LRU), for hot entries.
//
// Coherence: every change made through any instance (set, delete, expire, bust, clear, tag
// invalidation) is published on `${prefix}:#invalidate`, and every instance drops the named
// entries from its local tier when the message arrives. When the subscription drops, messages
// may have been missed, so the whole local tier is flushed when it comes back. An entry never
// outlives its own freshness nor the tier's `ttl`. With Redis down, local hits still serve.
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import type { CacheInfo } from '../types'
import { HEADER_BYTES, MAGIC } from './serializer'
import type { Statistics } from './statistics'
import type { RedisClient } from './stores/redis'
import type { CacheStore, RateWindow } from './stores/store'

export interface LocalTierBounds {
  maxEntries: number
  maxBytes: number
  /** Seconds an entry may stay at most. */
  ttl: number
}

interface LocalEntry {
  bytes: Buffer
  expiresAt: number
  /** Hit since it was last queued: spared once at eviction time (second chance). */
  used: boolean
}

// What an entry costs beyond its key and bytes, so that maxBytes bounds the process's memory and
// not just the payload: the Map slot, the entry and Buffer objects, the allocation behind the
// Buffer, and the heap fragmentation of many long-lived small objects. Measured with the
// benchmark's memory step (RSS growth less the same load without the tier, per entry, for
// entries of about 400 bytes): about 900 bytes.
const ENTRY_OVERHEAD_BYTES = 1024

/**
 * A bounded cache with CLOCK (second-chance) eviction, close to LRU: Map iteration order is
 * insertion order, a hit only marks its entry, and eviction re-queues marked entries instead of
 * dropping them. A hit costs a flag, not a Map delete and insert.
 */
export class LocalTier {
  private readonly entries = new Map<string, LocalEntry>()
  private readonly options: LocalTierBounds
  private readonly stats: Statistics
  bytes = 0

  constructor (options: LocalTierBounds, stats: Statistics) {
    this.options = options
    this.stats = stats
  }

  describe (): { entries: number, bytes: number, maxEntries: number, maxBytes: number } {
    return { entries: this.entries.size, bytes: this.bytes, maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytes }
  }

  get (key: string): Buffer | undefined {
    const entry = this.entries.get(key)
    if (entry === undefined) return undefined
    if (entry.expiresAt <= Date.now()) {
      this.delete(key)
      return undefined
    }
    entry.used = true
    return entry.bytes
  }

  /** Keeps bytes until their own freshness ends or the tier's ttl, whichever is first. */
  set (key: string, bytes: Buffer): void {
    // The old copy goes first, whether or not the new bytes are kept: it is stale now.
    this.delete(key)
    // Only our own envelopes carry the freshness the local copy must not outlive.
    if (bytes.length < HEADER_BYTES || bytes[0] !== MAGIC) return
    const size = cost(key, bytes)
    if (size > this.options.maxBytes) return
    const freshUntil = bytes.readUIntBE(3, 6) + bytes.readUInt32BE(9) * 1000
    const expiresAt = Math.min(freshUntil, Date.now() + this.options.ttl * 1000)
    this.entries.set(key, { bytes: ownCopy(bytes), expiresAt, used: false })
    this.bytes += size
    while (this.entries.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const [oldest, candidate] = this.entries.entries().next().value as [string, LocalEntry]
      this.entries.delete(oldest)
      if (candidate.used) {
        candidate.used = false
        this.entries.set(oldest, candidate)
      } else {
        this.bytes -= cost(oldest, candidate.bytes)
        this.stats.evictions++
      }
    }
  }

  delete (key: string): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    this.entries.delete(key)
    this.bytes -= cost(key, entry.bytes)
  }

  deletePrefix (prefix: string): void {
    for (const key of this.entries.keys()) if (key.startsWith(prefix)) this.delete(key)
  }

  clear (): void {
    this.entries.clear()
    this.bytes = 0
  }
}

/**
 * A copy that holds only its own bytes: a reply from ioredis is a slice of a large read buffer,
 * and a small Buffer.from() copy is a slice of a shared 8 KiB pool slab; either would keep the
 * whole buffer alive for as long as the entry lives.
 */
function ownCopy (bytes: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(bytes.length)
  bytes.copy(copy)
  return copy
}

function cost (key: string, bytes: Buffer): number {
  return key.length * 2 + bytes.length + ENTRY_OVERHEAD_BYTES
}

/** What an invalidation message says: keys, a namespace prefix, or everything. */
interface Invalidation {
  /** The instance that sent it, which has already applied it. */
  o: string
  k?: string[]
  p?: string
}

/** The local tier in front of a store, with the Pub/Sub that keeps instances coherent. */
export class TieredStore implements CacheStore {
  readonly kind = 'redis'
  readonly local: LocalTier
  readonly inner: CacheStore
  private readonly publisher: RedisClient
  private readonly subscriber: RedisClient
  private readonly channel: string
  private readonly prefix: string
  private readonly instance = randomBytes(8).toString('hex')
  private readonly log: FastifyBaseLogger
  private subscribedOnce = false
  // Bumped by every invalidation received: a read that raced one is not kept locally.
  private invalidations = 0

  constructor (inner: CacheStore, client: RedisClient, prefix: string, local: LocalTier, log: FastifyBaseLogger) {
    this.inner = inner
    this.local = local
    this.publisher = client
    this.prefix = prefix
    this.channel = `${prefix}:#invalidate`
    this.log = log
    // A subscribed connection can run nothing else: a connection of its own.
    this.subscriber = client.isCluster ? (client as Cluster).duplicate() : (client as Redis).duplicate()
    this.subscriber.on('error', () => {}) // reported by the main client already
    this.subscriber.on('ready', () => {
      // Messages missed while unsubscribed: what the local tier holds may be stale.
      if (this.subscribedOnce) {
        this.invalidations++
        this.local.clear()
        this.log.info('fastify-redis-cache: invalidation channel reconnected; local tier flushed')
      }
      this.subscribedOnce = true
      // Commands are not queued while disconnected, so subscribe on each (re)connect.
      ;(this.subscriber as Redis).subscribe(this.channel).catch((err: unknown) => {
        this.log.warn({ err }, 'fastify-redis-cache: cannot subscribe to the invalidation channel')
      })
    })
    this.subscriber.on('message', (channel: string, message: string) => this.receive(channel, message))
  }

  get connected (): boolean {
    return this.inner.connected
  }

  async get (key: string, field?: string): Promise<Buffer | null> {
    // Variants of routes that vary on request headers are not kept locally.
    if (field !== undefined) return this.inner.get(key, field)
    const cached = this.local.get(key)
    if (cached !== undefined) return cached
    const seen = this.invalidations
    const bytes = await this.inner.get(key)
    if (bytes !== null && seen === this.invalidations) this.local.set(key, bytes)
    return bytes
  }

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<void> {
    await this.inner.set(key, value, ttl, tags, field)
    if (field === undefined) this.local.set(key, value)
    else this.local.delete(key)
    this.publish({ o: this.instance, k: [key] })
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
    this.local.deletePrefix(prefix)
    const removed = await this.inner.clear(namespace)
    this.publish({ o: this.instance, p: prefix })
    return removed
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const result = await this.inner.invalidateTags(tags)
    for (const key of result.keys) this.local.delete(key)
    if (result.keys.length > 0) this.publish({ o: this.instance, k: result.keys })
    return result
  }

  hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    return this.inner.hitWindow(id, windowSeconds)
  }

  acquireLock (key: string, token: string, ttlMs: number): Promise<boolean> {
    return this.inner.acquireLock(key, token, ttlMs)
  }

  releaseLock (key: string, token: string): Promise<void> {
    return this.inner.releaseLock(key, token)
  }

  ping (): Promise<void> {
    return this.inner.ping()
  }

  info (): Promise<CacheInfo> {
    return this.inner.info()
  }

  async close (): Promise<void> {
    this.subscriber.disconnect()
    this.local.clear()
    await this.inner.close()
  }

  /** Drops keys locally at once (even if Redis fails), then tells the other instances. */
  private async changing<T> (keys: readonly string[], work: Promise<T>): Promise<T> {
    for (const key of keys) this.local.delete(key)
    const result = await work
    this.publish({ o: this.instance, k: [...keys] })
    return result
  }

  private publish (message: Invalidation): void {
    this.publisher.publish(this.channel, JSON.stringify(message)).catch((err: unknown) => {
      this.log.warn({ err }, 'fastify-redis-cache: cannot publish an invalidation; other instances keep their local copies until these expire')
    })
  }

  private receive (channel: string, text: string): void {
    /* c8 ignore next: the subscriber listens on this one channel only */
    if (channel !== this.channel) return
    let message: Invalidation
    try {
      message = JSON.parse(text) as Invalidation
    } catch {
      this.invalidations++
      this.local.clear()
      return
    }
    if (message.o === this.instance) return
    this.invalidations++
    if (Array.isArray(message.k)) for (const key of message.k) this.local.delete(key)
    else if (typeof message.p === 'string') this.local.deletePrefix(message.p)
    else this.local.clear()
  }
}
