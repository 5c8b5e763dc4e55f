// What data caching (getOrSet) and route caching share below the public API: the layer stack,
// the TTL rules, encoding and storing entries within `maxEntrySize`, the cross-instance lock and
// the failure policy. Route caching talks to the cache through this and nothing else.
import type { FastifyBaseLogger } from 'fastify'
import { byteLength, encodeTags, HEADER_BYTES, type Payload, storedAtOf } from '../envelope'
import type { InvalidationJournal } from '../invalidation/journal'
import { INVALIDATED, type InvalidationStamps, VALID } from '../invalidation/stamps'
import type { Codec, EncodeResult } from '../serializer'
import { Throttle } from '../throttled-log'
import type { KeyLayout } from '../keys'
import { validateSeconds } from '../keys'
import type { DistributedLock, HeldLock } from '../lock'
import type { CacheStack } from '../stack'
import type { ClaimedRead, SyncReader } from '../stores/store'
import type { Statistics } from '../statistics'
import type { Telemetry } from '../telemetry'
import type { FailedRequest, FailurePolicy } from './failures'

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
  /** When the work that made the entry began (ms since the epoch): see invalidation/. */
  startedAt: number
  /** The cross-instance lock the work held: the write releases it. */
  lock?: HeldLock
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
  stamps: InvalidationStamps
  journal: InvalidationJournal
  telemetry: Telemetry
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
  /** The local tier or the memory store: getOrSet and route hits read it synchronously first. */
  readonly nearby: SyncReader | undefined
  private readonly defaultTtl: number
  private readonly maxTtl: number
  /** What this instance knows of invalidations: every read and write is checked against it. */
  readonly stamps: InvalidationStamps
  /** Where invalidations go, kept and retried until Redis applies them. */
  readonly journal: InvalidationJournal
  /** OpenTelemetry spans and metrics; `on` is false without an SDK. */
  readonly telemetry: Telemetry
  /** A client can send any number of oversized answers: one warning every few seconds. */
  private readonly oversizedLog = new Throttle()

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
    this.nearby = options.stack.nearby
    this.stamps = options.stamps
    this.journal = options.journal
    this.telemetry = options.telemetry
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
   * As `read`; with `claim`, taking the cross-instance lock in the same round trip when the entry
   * is neither fresh nor within `graceMs` past it, and the store can (see EntryStore.readOrClaim).
   */
  readOrClaim (fullKey: string, field: string | undefined, claim: boolean, graceMs: number): Promise<ClaimedRead> {
    return this.stack.entries.readOrClaim(fullKey, field, claim ? this.lock.claimable(fullKey, field, graceMs) : undefined)
  }

  /**
   * Whether stored bytes (read back under `fullKey`, and decoded) may be served: not when an
   * invalidation covers them, nor while that cannot be told (see `learn`).
   */
  admits (fullKey: string, bytes: Buffer): boolean {
    const verdict = this.stamps.verdict(fullKey, bytes)
    if (verdict === VALID) return true
    if (verdict === INVALIDATED) this.stats.invalidatedReads++
    return false
  }

  /** Fetches what `admits` needs to know of these bytes' tags; undefined when nothing. */
  learn (bytes: Buffer): Promise<void> | undefined {
    return this.stamps.learn(bytes)
  }

  /**
   * Stores a value's payload in an envelope unless it is over `maxEntrySize`. Never throws unless
   * `throwOnError`.
   */
  async write (fullKey: string, payload: Payload, entry: Omit<EntryOptions, 'head'>): Promise<boolean> {
    if (this.oversized(fullKey, payload) || this.overtaken(fullKey, entry.startedAt, entry.tags)) return false
    let bytes: Buffer
    try {
      bytes = await this.encode(payload, entry)
    } catch (err) {
      return this.failures.failed(err, 'set', fullKey, false)
    }
    return this.storeBytes(fullKey, bytes, entry.ttl, entry.tags, undefined, entry.lock)
  }

  /** Whether an invalidation this instance knows of overtook the work behind a write. */
  private overtaken (fullKey: string, startedAt: number, tags: readonly string[]): boolean {
    const why = this.stamps.overtaken(fullKey, startedAt, tags)
    if (why === null) return false
    this.log.debug({ key: fullKey, why }, 'fastify-redis-cache: result not stored: an invalidation came after its work began')
    return true
  }

  /**
   * Whether an entry (its payload before compression, and `headBytes` of a response's head) is
   * over `maxEntrySize` with its envelope: then it is counted and not stored. Checked before any
   * compression, so a body too large to store costs no gzip.
   */
  oversized (fullKey: string, payload: Payload, headBytes = 0): boolean {
    // A string takes 1 to 3 bytes a UTF-16 unit: its UTF-8 length, a pass over it, is counted
    // only when that bound does not settle it.
    if (typeof payload === 'string' && HEADER_BYTES + headBytes + 3 * payload.length <= this.maxEntrySize) return false
    const bytes = HEADER_BYTES + headBytes + byteLength(payload)
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
  encode (payload: Payload, entry: Omit<EntryOptions, 'ttl'>): Buffer | Promise<Buffer> {
    const encoded = this.codec.encodeSoon(payload, entry.kind, entry.freshFor, entry.compress, entry.head, entry.startedAt, encodeTags(entry.tags))
    if (!(encoded instanceof Promise)) return this.counted(encoded)
    return encoded.then((result) => this.counted(result))
  }

  private counted (encoded: EncodeResult): Buffer {
    if (encoded.uncompressedSize > 0) this.stats.compressed(encoded.uncompressedSize, encoded.bytes.length)
    return encoded.bytes
  }

  /**
   * Stores encoded bytes, unless an invalidation overtook the work that made them (checked here,
   * and by Redis as it stores them). Never throws unless `throwOnError`.
   */
  async storeBytes (fullKey: string, bytes: Buffer, ttl: number, tags: readonly string[], field?: string, lock?: HeldLock, request?: FailedRequest): Promise<boolean> {
    if (this.overtaken(fullKey, storedAtOf(bytes), tags)) return false
    let stored: boolean
    try {
      stored = await this.stack.entries.set(fullKey, bytes, ttl, tags, field, lock)
    } catch (err) {
      return this.failures.failed(err, 'set', fullKey, false, undefined, request)
    }
    if (!stored) {
      this.log.debug({ key: fullKey }, 'fastify-redis-cache: result not stored: Redis has an invalidation that came after its work began')
      return false
    }
    this.stamps.written(tags)
    this.stats.sets++
    this.stats.bytesWritten += bytes.length
    return true
  }

  /** Drops an entry that cannot be read back; best effort. */
  discard (fullKey: string): void {
    // Expired at once rather than deleted: this is no invalidation, and a delete's tombstone
    // would refuse the answer about to replace the entry.
    this.stack.entries.expire(fullKey, 0).catch((err: unknown) => this.failures.count(err, 'delete', fullKey))
  }
}
