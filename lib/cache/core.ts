// What data caching (getOrSet) and route caching share below the public API: the layer stack,
// the TTL rules, encoding and storing entries within `maxEntrySize`, the cross-instance lock and
// the failure policy. Route caching talks to the cache through this and nothing else.
import type { FastifyBaseLogger } from 'fastify'
import { HEADER_BYTES } from '../envelope'
import type { Codec, EncodeResult } from '../serializer'
import { Throttle } from '../throttled-log'
import type { KeyLayout } from '../keys'
import { validateSeconds } from '../keys'
import type { DistributedLock } from '../lock'
import type { SegmentCache } from '../local/segment-cache'
import type { CacheStack } from '../stack'
import type { Statistics } from '../statistics'
import type { FailurePolicy } from './failures'

export interface EntryOptions {
  kind: number
  /** Seconds the entry counts as fresh. */
  freshFor: number
  /** Seconds the store keeps it: longer than `freshFor` when stale serving is on. */
  ttl: number
  compress: boolean | undefined
  tags: readonly string[]
  /** Stored uncompressed in front of the payload (an HTTP entry's status and headers). */
  head?: Buffer
}

export interface CacheCoreOptions {
  stack: CacheStack
  layout: KeyLayout
  codec: Codec
  defaultTtl: number
  maxTtl: number
  maxEntrySize: number
  lock: DistributedLock
  failures: FailurePolicy
  stats: Statistics
  log: FastifyBaseLogger
}

export class CacheCore {
  readonly stack: CacheStack
  readonly layout: KeyLayout
  readonly codec: Codec
  readonly maxEntrySize: number
  readonly lock: DistributedLock
  readonly failures: FailurePolicy
  readonly stats: Statistics
  readonly log: FastifyBaseLogger
  /** The local tier, when there is one: getOrSet and route hits read it synchronously first. */
  readonly local: SegmentCache | undefined
  private readonly defaultTtl: number
  private readonly maxTtl: number
  /** A client can send any number of oversized answers: one warning every few seconds. */
  private readonly oversizedLog = new Throttle()
  /**
   * Counts the invalidations made through this instance. A write whose encoding went off the
   * event loop checks it did not change meanwhile: otherwise it may carry what an invalidation
   * that has already returned removed, and is dropped.
   */
  epoch = 0

  constructor (options: CacheCoreOptions) {
    this.stack = options.stack
    this.layout = options.layout
    this.codec = options.codec
    this.defaultTtl = options.defaultTtl
    this.maxTtl = options.maxTtl
    this.maxEntrySize = options.maxEntrySize
    this.lock = options.lock
    this.failures = options.failures
    this.stats = options.stats
    this.log = options.log
    this.local = options.stack.local
  }

  /** A TTL in whole seconds, `defaultTtl` when unset, clamped to `maxTtl`. */
  resolveTtl (ttl: number | undefined): number {
    if (ttl === undefined) return this.defaultTtl
    return Math.min(validateSeconds(ttl, 'ttl'), this.maxTtl)
  }

  /** The stored bytes (through the local tier, when on); throws when the store fails. */
  read (fullKey: string, field?: string): Promise<Buffer | null> {
    return this.stack.entries.get(fullKey, field)
  }

  /**
   * Stores a value's payload in an envelope unless it is over `maxEntrySize`. Never throws unless
   * `throwOnError`.
   */
  async write (fullKey: string, payload: Buffer, entry: Omit<EntryOptions, 'head'>): Promise<boolean> {
    if (this.oversized(fullKey, payload.length)) return false
    const epoch = this.epoch
    let bytes: Buffer
    try {
      bytes = await this.encode(payload, entry)
    } catch (err) {
      return this.failures.failed(err, 'set', fullKey, false)
    }
    if (this.epoch !== epoch) return false
    return this.storeBytes(fullKey, bytes, entry.ttl, entry.tags)
  }

  /**
   * Whether an entry of `size` bytes (its payload before compression, and its head) is over
   * `maxEntrySize` with its envelope: then it is counted and not stored. Checked before any
   * compression, so a body too large to store costs no gzip.
   */
  oversized (fullKey: string, size: number): boolean {
    const bytes = HEADER_BYTES + size
    if (bytes <= this.maxEntrySize) return false
    this.stats.oversized++
    const suppressed = this.oversizedLog.pass()
    if (suppressed !== undefined) {
      this.log.warn({ key: fullKey, bytes, maxEntrySize: this.maxEntrySize, suppressed }, 'fastify-redis-cache: entry larger than maxEntrySize, not stored')
    }
    return true
  }

  /**
   * The envelope for a payload, with compression counted in the statistics: at once for small
   * payloads, off the event loop for large ones that are gzipped.
   */
  encode (payload: Buffer, entry: Omit<EntryOptions, 'ttl' | 'tags'>): Buffer | Promise<Buffer> {
    const encoded = this.codec.encodeSoon(payload, entry.kind, entry.freshFor, entry.compress, entry.head)
    if (!(encoded instanceof Promise)) return this.counted(encoded)
    return encoded.then((result) => this.counted(result))
  }

  private counted (encoded: EncodeResult): Buffer {
    if (encoded.uncompressedSize > 0) this.stats.compressed(encoded.uncompressedSize, encoded.bytes.length)
    return encoded.bytes
  }

  /** Stores encoded bytes. Never throws unless `throwOnError`. */
  async storeBytes (fullKey: string, bytes: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<boolean> {
    try {
      await this.stack.entries.set(fullKey, bytes, ttl, tags, field)
    } catch (err) {
      return this.failures.failed(err, 'set', fullKey, false)
    }
    this.stats.sets++
    this.stats.bytesWritten += bytes.length
    return true
  }

  /** Drops an entry that cannot be read back; best effort. */
  discard (fullKey: string): void {
    this.stack.entries.delete([fullKey]).catch((err: unknown) => this.failures.count(err, 'delete', fullKey))
  }
}
