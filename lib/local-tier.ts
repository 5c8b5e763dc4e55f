// The local tier: an in-process cache of stored bytes in front of Redis (CLOCK eviction, close to LRU), for hot entries.
//
// Coherence: every change made through any instance (set, delete, expire, bust, clear, tag
// invalidation) is published on `${prefix}:#invalidate`, and every instance drops the named
// entries from its local tier when the message arrives. When the subscription drops, messages
// may have been missed, so the whole local tier is flushed when it comes back. A read from Redis
// that an invalidation of its key overtakes is not kept locally: it may carry the old bytes. An
// entry never outlives its own freshness nor the tier's `ttl`. With Redis down, local hits still
// serve.
//
// The subscription is a connection of its own. On a standalone or Sentinel client it is the
// client's duplicate, which reconnects by itself and says `ready` each time. A Cluster client's
// own subscriber moves to another node without a word when its node goes away, so no flush could
// follow; on a Cluster the tier subscribes through one node's connection instead (a Cluster's
// PUBLISH reaches every node), and through the next node's when that one ends.
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

/**
 * A slab that entries' bytes are copied into, one after the other. It is only ever appended to:
 * a region that an entry occupied is never written again while a view of it may be held, so a
 * view handed out by `get` keeps its bytes for as long as the caller holds it, even after the
 * entry was evicted or replaced.
 */
interface Segment {
  readonly slab: Buffer
  /** Where the next entry's bytes go. */
  end: number
  /** Entries of the tier in it: at 0 (and not the segment being filled) it is released. */
  live: number
  /** A view of it was handed out by `get`: only the GC can tell when nobody holds one any more. */
  exposed: boolean
}

// What a free slot holds, so that the slot arrays keep one type of element.
const NO_BYTES = Buffer.alloc(0)
const NO_SEGMENT: Segment = { slab: NO_BYTES, end: 0, live: 0, exposed: false }
const INITIAL_SLOTS = 64

// What an entry costs beside its bytes in a segment and its key's characters (counted apart, at
// two bytes each), so that maxBytes bounds the process's RSS and not just the payloads. Measured
// with the benchmark's memory step (a 64 MiB tier, entries of about 420 bytes under 33-character
// keys, RSS growth less that of the same load without a tier): per entry held, about 230 bytes of
// V8 heap (the key string, the view, the Map's share of a table that churn keeps at up to twice
// the entries) and 25 of slot arrays; and the process keeps 8 to 16 MiB more malloc heap resident
// than without the tier (the requests' garbage, freed below allocations that live on, such as the
// pages of a growing old generation, cannot be given back), some 150 to 300 bytes per entry at
// that size. 768 covers that, with about 200 bytes per entry to spare for the run-to-run spread
// (single runs of the same load differ by 15 MiB and more).
const ENTRY_OVERHEAD_BYTES = 768
// Segments: few enough that a slab is one allocation for thousands of small entries (so the
// allocator is not churned per entry), small enough that the one being filled and the dead space
// left by deletes stay a small share of maxBytes.
const MIN_SEGMENT_BYTES = 64 * 1024
const MAX_SEGMENT_BYTES = 4 * 1024 * 1024

/**
 * A bounded cache with CLOCK (second-chance) eviction, close to LRU, over a log of segments
 * (like Segcache): entries' bytes are appended to the current segment, and Map iteration order
 * (insertion order) is the order they were written in. A hit only marks its entry; eviction
 * takes the Map's head, re-queues a marked entry (copying its bytes forward to the current
 * segment) and drops an unmarked one, so the oldest segment empties and is released whole.
 * `bytes` counts every allocated segment in full plus each entry's objects, so maxBytes bounds
 * the memory the tier holds, not just the payloads.
 *
 * An entry is a slot: an index into arrays of views, segments, expiry times and marks, rather
 * than an object of its own, so each entry costs the V8 heap only its key, its view and its Map
 * slot (fewer objects also mean less for the GC to trace and less old-space fragmentation).
 *
 * Churn, not the bytes held, is what makes a process's RSS outgrow such a cache: a released slab
 * is freed only by the next full GC (V8 lets tens of MiB of dead ArrayBuffers pile up before
 * one), and the allocator keeps the high-water mark resident. So a released segment none of
 * whose views was ever handed out is kept as the spare and written again as the next segment,
 * instead of going to the GC and having a new slab allocated. Segments with hits go to the GC.
 *
 * A view returned by `get` keeps its whole segment alive while someone holds it: callers that
 * keep stored bytes for long should copy them.
 */
export class LocalTier {
  /** Key to slot; iteration order is the order the entries' bytes were written in. */
  private readonly slots = new Map<string, number>()
  // By slot: the view of the entry's bytes (made once, so every hit returns this same object),
  // the segment holding them, when the entry expires (ms), and whether it was hit since it was
  // last queued (it is spared once at eviction time: the second chance).
  private views: Buffer[] = []
  private homes: Segment[] = []
  private expiry = new Float64Array(INITIAL_SLOTS)
  private marks = new Uint8Array(INITIAL_SLOTS)
  /** Slots given back by removed entries, reused first. */
  private free: number[] = []
  private readonly options: LocalTierBounds
  private readonly stats: Statistics
  /** Bytes of a segment: maxBytes / 32 within [64 KiB, 4 MiB], at most maxBytes / 8. */
  readonly segmentSize: number
  /** The segment being filled; undefined before the first write and after clear(). */
  private current: Segment | undefined
  /** A released segment that was never exposed, counted in `bytes`, to be the next current one. */
  private spare: Segment | undefined
  private segmentCount = 0
  bytes = 0

  constructor (options: LocalTierBounds, stats: Statistics) {
    this.options = options
    this.stats = stats
    this.segmentSize = segmentSizeFor(options.maxBytes)
  }

  describe (): { entries: number, bytes: number, maxEntries: number, maxBytes: number } {
    return { entries: this.slots.size, bytes: this.bytes, maxEntries: this.options.maxEntries, maxBytes: this.options.maxBytes }
  }

  /** Segments allocated and not yet released (the spare included). */
  get segments (): number {
    return this.segmentCount
  }

  get (key: string): Buffer | undefined {
    const slot = this.slots.get(key)
    if (slot === undefined) return undefined
    if (this.expiry[slot] <= Date.now()) {
      this.remove(key, slot)
      return undefined
    }
    this.marks[slot] = 1
    this.homes[slot].exposed = true
    return this.views[slot]
  }

  /** Keeps bytes until their own freshness ends or the tier's ttl, whichever is first. */
  set (key: string, bytes: Buffer): void {
    // The old copy goes first, whether or not the new bytes are kept: it is stale now.
    this.delete(key)
    // Only our own envelopes carry the freshness the local copy must not outlive.
    if (bytes.length < HEADER_BYTES || bytes[0] !== MAGIC) return
    // What the entry needs with nothing else kept: its objects, the segment being filled and the
    // spare, and a segment of its own when it is larger than a segment. Beyond maxBytes, eviction
    // could not make room, so it is not kept (and nothing is evicted for it).
    const own = bytes.length > this.segmentSize
    if (entryCost(key) + 2 * this.segmentSize + (own ? bytes.length : 0) > this.options.maxBytes) return
    const freshUntil = bytes.readUIntBE(3, 6) + bytes.readUInt32BE(9) * 1000
    const slot = this.takeSlot()
    this.expiry[slot] = Math.min(freshUntil, Date.now() + this.options.ttl * 1000)
    this.marks[slot] = 0
    this.write(slot, bytes)
    this.slots.set(key, slot)
    this.bytes += entryCost(key)
    this.evict()
  }

  delete (key: string): void {
    const slot = this.slots.get(key)
    if (slot !== undefined) this.remove(key, slot)
  }

  deletePrefix (prefix: string): void {
    for (const [key, slot] of this.slots) if (key.startsWith(prefix)) this.remove(key, slot)
  }

  clear (): void {
    // Views handed out keep their slabs alive by themselves; the tier forgets all of them.
    this.slots.clear()
    this.views = []
    this.homes = []
    this.expiry = new Float64Array(INITIAL_SLOTS)
    this.marks = new Uint8Array(INITIAL_SLOTS)
    this.free = []
    this.current = undefined
    this.spare = undefined
    this.segmentCount = 0
    this.bytes = 0
  }

  /**
   * CLOCK over the Map's head until within bounds. It ends: every turn evicts an entry or clears
   * the mark of one (only hits set marks), so each entry is copied forward at most once. And it
   * never finds the Map empty: with no entry, every segment but the current one and the spare
   * has been released, and each of those is at most an eighth of maxBytes.
   */
  private evict (): void {
    const now = Date.now()
    while (this.slots.size > this.options.maxEntries || this.bytes > this.options.maxBytes) {
      const [key, slot] = this.slots.entries().next().value as [string, number]
      this.slots.delete(key)
      if (this.marks[slot] === 1 && this.expiry[slot] > now) {
        this.marks[slot] = 0
        const from = this.homes[slot]
        // Copied forward, so that the segment it was in can empty and be released; alone in a
        // segment of its own, it would only move to another slab its size.
        if (this.views[slot].length <= this.segmentSize) {
          this.write(slot, this.views[slot])
          this.leave(from)
        }
        this.slots.set(key, slot)
      } else {
        // An expired entry was due to go anyway: not an eviction.
        if (this.expiry[slot] > now) this.stats.evictions++
        this.release(key, slot)
      }
    }
  }

  /**
   * Copies bytes to the end of the log (or to a segment of their own when they are larger than a
   * segment) and points the slot at the copy. Never writes where bytes were.
   */
  private write (slot: number, bytes: Buffer): void {
    const length = bytes.length
    let segment = this.current
    if (length > this.segmentSize) {
      segment = this.allocate(length)
    } else if (segment === undefined || segment.slab.length - segment.end < length) {
      // Emptied while it was being filled (by deletes), and now full: nothing keeps it.
      if (segment !== undefined && segment.live === 0) this.drop(segment)
      segment = this.spare ?? this.allocate(this.segmentSize)
      this.spare = undefined
      this.current = segment
    }
    const offset = segment.end
    bytes.copy(segment.slab, offset)
    segment.end = offset + length
    segment.live++
    this.views[slot] = segment.slab.subarray(offset, offset + length)
    this.homes[slot] = segment
  }

  private remove (key: string, slot: number): void {
    this.slots.delete(key)
    this.release(key, slot)
  }

  /** Frees the slot of an entry already out of the Map. */
  private release (key: string, slot: number): void {
    this.bytes -= entryCost(key)
    this.leave(this.homes[slot])
    this.views[slot] = NO_BYTES
    this.homes[slot] = NO_SEGMENT
    this.free.push(slot)
  }

  private takeSlot (): number {
    const reused = this.free.pop()
    if (reused !== undefined) return reused
    const slot = this.views.length
    this.views.push(NO_BYTES)
    this.homes.push(NO_SEGMENT)
    if (slot === this.expiry.length) {
      // Doubled, though never past what the bounds can use: maxEntries, and one more while a
      // set evicts.
      const length = Math.max(slot + 1, Math.min(slot * 2, this.options.maxEntries + 1))
      const expiry = new Float64Array(length)
      expiry.set(this.expiry)
      this.expiry = expiry
      const marks = new Uint8Array(length)
      marks.set(this.marks)
      this.marks = marks
    }
    return slot
  }

  /** One entry fewer in `segment`; an empty segment that is not being filled is released. */
  private leave (segment: Segment): void {
    segment.live--
    if (segment.live === 0 && segment !== this.current) this.drop(segment)
  }

  private allocate (size: number): Segment {
    // Its own allocation, not a slice of Node's shared pool; unsafe is fine, as only what was
    // written is ever viewed.
    const segment: Segment = { slab: Buffer.allocUnsafeSlow(size), end: 0, live: 0, exposed: false }
    this.segmentCount++
    this.bytes += size
    return segment
  }

  /** A segment no entry refers to any more: kept as the spare, or forgotten. */
  private drop (segment: Segment): void {
    // No view of it was handed out, so nobody can see its bytes change: written again from the
    // start as the next segment. (The tier's own views of it went with its entries.)
    if (!segment.exposed && this.spare === undefined && segment.slab.length === this.segmentSize) {
      segment.end = 0
      this.spare = segment
      return
    }
    // The GC frees it once no view of it is held.
    this.segmentCount--
    this.bytes -= segment.slab.length
  }
}

/** Cluster: the first wait before subscribing through another node, and the longest. */
const RESUBSCRIBE_DELAY_MS = 50
const RESUBSCRIBE_MAX_DELAY_MS = 2000

function entryCost (key: string): number {
  return key.length * 2 + ENTRY_OVERHEAD_BYTES
}

/** maxBytes / 32 within [64 KiB, 4 MiB], and at most an eighth of maxBytes for small tiers. */
function segmentSizeFor (maxBytes: number): number {
  const size = Math.min(MAX_SEGMENT_BYTES, Math.max(MIN_SEGMENT_BYTES, Math.floor(maxBytes / 32)))
  return Math.max(1, Math.min(size, Math.floor(maxBytes / 8)))
}

/** What an invalidation message says: keys, a namespace prefix, or everything. */
interface Invalidation {
  /** The instance that sent it, which has already applied it. */
  o: string
  k?: string[]
  p?: string
}

/** The reads of one key from Redis in flight together. */
interface PendingRead {
  readers: number
  /** The key was invalidated since these reads began. */
  raced: boolean
}

/** The local tier in front of a store, with the Pub/Sub that keeps instances coherent. */
export class TieredStore implements CacheStore {
  readonly kind = 'redis'
  readonly local: LocalTier
  readonly inner: CacheStore
  private readonly publisher: RedisClient
  private subscriber: Redis | undefined
  private readonly channel: string
  private readonly prefix: string
  private readonly instance = randomBytes(8).toString('hex')
  private readonly log: FastifyBaseLogger
  private subscribedOnce = false
  private closed = false
  // Cluster: the node to subscribe through next, and the attempts since the last subscription.
  private nextNode = 0
  private attempts = 0
  // Reads from Redis in flight, by key. An invalidation of the key, here or from another
  // instance, marks the read raced and takes it out: what it brings back may be the old bytes
  // (sent before the change), so it is not kept locally. Reads of other keys are not affected.
  private readonly reading = new Map<string, PendingRead>()

  constructor (inner: CacheStore, client: RedisClient, prefix: string, local: LocalTier, log: FastifyBaseLogger) {
    this.inner = inner
    this.local = local
    this.publisher = client
    this.prefix = prefix
    this.channel = `${prefix}:#invalidate`
    this.log = log
    if (client.isCluster) this.subscribeOnNode(client as Cluster)
    else this.subscriber = this.listen((client as Redis).duplicate())
  }

  get connected (): boolean {
    return this.inner.connected
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
    this.forgetPrefix(prefix)
    const removed = await this.inner.clear(namespace)
    this.publish({ o: this.instance, p: prefix })
    return removed
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const result = await this.inner.invalidateTags(tags)
    for (const key of result.keys) this.forget(key)
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
    this.closed = true
    this.subscriber?.disconnect()
    this.forgetAll()
    await this.inner.close()
  }

  /** Drops keys locally at once (even if Redis fails), then tells the other instances. */
  private async changing<T> (keys: readonly string[], work: Promise<T>): Promise<T> {
    for (const key of keys) this.forget(key)
    const result = await work
    this.publish({ o: this.instance, k: [...keys] })
    return result
  }

  /** Subscribes on `connection` whenever it is ready; every time after the first, flushes. */
  private listen (connection: Redis): Redis {
    connection.on('error', () => {}) // reported by the main client already
    connection.on('ready', () => {
      // Messages missed while unsubscribed: what the local tier holds may be stale.
      if (this.subscribedOnce) {
        this.forgetAll()
        this.log.info('fastify-redis-cache: invalidation channel reconnected; local tier flushed')
      }
      this.subscribedOnce = true
      this.attempts = 0
      // Commands are not queued while disconnected, so subscribe on each (re)connect.
      connection.subscribe(this.channel).catch((err: unknown) => {
        this.log.warn({ err }, 'fastify-redis-cache: cannot subscribe to the invalidation channel')
      })
    })
    connection.on('message', (channel: string, message: string) => this.receive(channel, message))
    return connection
  }

  /**
   * Subscribes through one node of the Cluster, never reconnecting to it: when the connection
   * ends, the next node is tried, sooner after a subscription than after failed attempts.
   */
  private subscribeOnNode (cluster: Cluster): void {
    const nodes = cluster.nodes('all')
    if (nodes.length > 0) {
      const node = nodes[this.nextNode++ % nodes.length]
      const connection = node.duplicate({ lazyConnect: false, readOnly: false, retryStrategy: () => null })
      this.subscriber = this.listen(connection)
      connection.once('end', () => this.resubscribe(cluster))
    } else {
      // Not connected yet, or every node lost: the Cluster client finds them again.
      this.resubscribe(cluster)
    }
  }

  private resubscribe (cluster: Cluster): void {
    if (this.closed) return
    const delay = Math.min(RESUBSCRIBE_MAX_DELAY_MS, RESUBSCRIBE_DELAY_MS * 2 ** this.attempts++)
    setTimeout(() => { if (!this.closed) this.subscribeOnNode(cluster) }, delay).unref()
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
      this.forgetAll()
      return
    }
    if (message.o === this.instance) return
    if (Array.isArray(message.k)) for (const key of message.k) this.forget(key)
    else if (typeof message.p === 'string') this.forgetPrefix(message.p)
    else this.forgetAll()
  }

  /** Drops the local copy of `key`, and keeps reads of it in flight from storing theirs. */
  private forget (key: string): void {
    this.local.delete(key)
    this.markRaced(key)
  }

  private forgetPrefix (prefix: string): void {
    this.local.deletePrefix(prefix)
    for (const key of this.reading.keys()) if (key.startsWith(prefix)) this.markRaced(key)
  }

  private forgetAll (): void {
    this.local.clear()
    for (const read of this.reading.values()) read.raced = true
    this.reading.clear()
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
