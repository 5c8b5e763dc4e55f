// The cache manager behind `fastify.cache`: validation, TTL rules, serialization, statistics and
// the failure policy around a store. Programmer errors (bad key, namespace, ttl) always throw;
// store failures degrade (a miss, `false`, `0`) unless `throwOnError` is set.
import type { FastifyBaseLogger } from 'fastify'
import type {
  CacheInfo,
  CacheNamespaceView,
  CacheStatistics,
  FastifyCache,
  GetOrSetOptions,
  NamespaceOption,
  RateLimitOptions,
  RateLimitResult,
  SetOptions
} from '../types'
import { GuardedStore } from './circuit-breaker'
import { type CacheError, RateLimitError, toCacheError } from './errors'
import { type LocalTier, TieredStore } from './local-tier'
import {
  DEFAULT_NAMESPACE,
  type KeyLayout,
  validateKey,
  validateKeys,
  validateNamespace,
  validateSeconds,
  validateStaleSeconds,
  validateTags
} from './keys'
import { type Codec, type Envelope, isFresh, isFreshBytes, KIND_VALUE } from './serializer'
import { type LockSettings, SingleFlight } from './single-flight'
import type { Statistics } from './statistics'
import { type CacheStore, unknownInfo } from './stores/store'

export interface CacheManagerOptions {
  store: CacheStore
  layout: KeyLayout
  defaultTtl: number
  maxTtl: number
  codec: Codec
  throwOnError: boolean
  maxEntrySize: number
  lock: LockSettings | false
  stats: Statistics
  log: FastifyBaseLogger
}

// Outages fail every command: log the first failure and then a summary at most this often.
const FAILURE_LOG_INTERVAL_MS = 10_000

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

type Lookup = { found: true, value: unknown, envelope: Envelope } | { found: false }
const MISS: Lookup = { found: false }

interface Load<T> {
  fullKey: string
  callback: () => T | Promise<T>
  ttl: number
  keepFor: number
  tags: readonly string[]
  compress: boolean | undefined
}

export class CacheManager implements FastifyCache {
  readonly store: CacheStore
  readonly layout: KeyLayout
  readonly codec: Codec
  readonly stats: Statistics
  readonly defaultTtl: number
  readonly maxTtl: number
  readonly throwOnError: boolean
  readonly maxEntrySize: number
  readonly log: FastifyBaseLogger
  readonly flight: SingleFlight
  private readonly inflight = new Map<string, Promise<unknown>>()
  // getOrSet entries being refreshed in the background (stale-while-revalidate).
  private readonly refreshing = new Set<string>()
  private readonly decoded = new WeakMap<Buffer, { value: unknown, envelope: Envelope }>()
  /** The local tier, when there is one: getOrSet and route hits read it synchronously first. */
  readonly local: LocalTier | undefined
  private lastFailureLog = 0
  private suppressedFailures = 0

  constructor (options: CacheManagerOptions) {
    this.store = options.store
    this.stats = options.stats
    this.layout = options.layout
    this.codec = options.codec
    this.defaultTtl = options.defaultTtl
    this.maxTtl = options.maxTtl
    this.throwOnError = options.throwOnError
    this.maxEntrySize = options.maxEntrySize
    this.log = options.log
    this.flight = new SingleFlight(this.store, this.layout.lockPrefix, options.lock)
    this.local = this.store instanceof TieredStore ? this.store.local : undefined
  }

  redisKey (key: string, namespace?: string): string {
    return this.layout.entry(validateKey(key), namespace === undefined ? DEFAULT_NAMESPACE : validateNamespace(namespace))
  }

  async get<T = unknown> (key: string, opts?: NamespaceOption): Promise<T | null> {
    const lookup = await this.lookup(this.redisKey(key, opts?.namespace))
    // An entry past its ttl, kept only for getOrSet's stale serving, is not returned.
    return lookup.found && isFresh(lookup.envelope) ? lookup.value as T : null
  }

  async set (key: string, value: unknown, opts?: SetOptions): Promise<boolean> {
    const fullKey = this.redisKey(key, opts?.namespace)
    const ttl = this.resolveTtl(opts?.ttl)
    const tags = opts?.tags === undefined ? [] : validateTags(opts.tags)
    if (value === undefined) return false
    let payload: Buffer
    try {
      payload = this.codec.serialize(value)
    } catch (err) {
      return this.failed(err as CacheError, 'set', fullKey, false)
    }
    return this.write(fullKey, payload, { kind: KIND_VALUE, freshFor: ttl, ttl, compress: opts?.compress, tags })
  }

  async delete (keys: string | string[], opts?: NamespaceOption): Promise<number> {
    const fullKeys = validateKeys(keys).map((key) => this.redisKey(key, opts?.namespace))
    return this.removed(fullKeys.length === 0 ? 0 : this.store.delete(fullKeys), 'delete', fullKeys[0])
  }

  async exists (keys: string | string[], opts?: NamespaceOption): Promise<number> {
    const fullKeys = validateKeys(keys).map((key) => this.redisKey(key, opts?.namespace))
    if (fullKeys.length === 0) return 0
    try {
      return await this.store.exists(fullKeys)
    } catch (err) {
      return this.failed(err, 'exists', fullKeys[0], 0)
    }
  }

  getOrSet<T> (key: string, callback: () => T | Promise<T>, opts?: GetOrSetOptions): Promise<T> {
    // Not an async function: a hit from the local tier and a caller that joins a lookup under
    // way cost no promise of their own (the hot paths under concurrency).
    let fullKey: string, ttl: number, tags: string[], staleWhileRevalidate: number, staleIfError: number
    try {
      fullKey = this.redisKey(key, opts?.namespace)
      ttl = this.resolveTtl(opts?.ttl)
      tags = opts?.tags === undefined ? [] : validateTags(opts.tags)
      staleWhileRevalidate = validateStaleSeconds(opts?.staleWhileRevalidate, 'staleWhileRevalidate')
      staleIfError = validateStaleSeconds(opts?.staleIfError, 'staleIfError')
      if (typeof callback !== 'function') throw new TypeError('getOrSet needs a callback function')
    } catch (err) {
      return Promise.reject(err)
    }
    const forceRefresh = opts?.forceRefresh === true
    if (!forceRefresh) {
      const hit = this.localHit(fullKey)
      if (hit !== undefined) return Promise.resolve(hit.value as T)
      // Concurrent callers of one key share one lookup and one callback run.
      const running = this.inflight.get(fullKey)
      if (running !== undefined) return running as Promise<T>
    }
    const load: Load<T> = { fullKey, callback, ttl, keepFor: ttl + Math.max(staleWhileRevalidate, staleIfError), tags, compress: opts?.compress }
    if (forceRefresh) return this.runAndStore(load)
    const run = this.lookupOrLoad(load, staleWhileRevalidate, staleIfError)
    this.inflight.set(fullKey, run)
    const settled = (): void => { this.inflight.delete(fullKey) }
    run.then(settled, settled)
    return run
  }

  async expire (key: string, seconds: number, opts?: NamespaceOption): Promise<boolean> {
    const fullKey = this.redisKey(key, opts?.namespace)
    const ttl = this.resolveTtl(seconds)
    try {
      return await this.store.expire(fullKey, ttl)
    } catch (err) {
      return this.failed(err, 'expire', fullKey, false)
    }
  }

  async ttl (key: string, opts?: NamespaceOption): Promise<number> {
    const fullKey = this.redisKey(key, opts?.namespace)
    try {
      return await this.store.ttl(fullKey)
    } catch (err) {
      return this.failed(err, 'ttl', fullKey, -2)
    }
  }

  async clear (namespace?: string): Promise<number> {
    return this.clearEntries(namespace, this.throwOnError)
  }

  /** `clear` with its own failure policy: the management route reports a failed clear as such. */
  async clearEntries (namespace: string | undefined, throwOnError: boolean): Promise<number> {
    if (namespace !== undefined) validateNamespace(namespace)
    return this.removed(this.store.clear(namespace), 'clear', this.layout.pattern(namespace), throwOnError)
  }

  async invalidateTags (tags: string | string[]): Promise<number> {
    const list = validateTags(tags)
    return this.removed(this.store.invalidateTags(list).then((result) => result.removed), 'invalidateTags', list.join(','))
  }

  async ping (): Promise<boolean> {
    try {
      await this.store.ping()
      return true
    } catch (err) {
      this.countFailure(err, 'ping', '')
      return false
    }
  }

  async info (): Promise<CacheInfo> {
    return this.readInfo(this.throwOnError)
  }

  /** `info` with its own failure policy: the management routes answer while Redis is down. */
  async readInfo (throwOnError: boolean): Promise<CacheInfo> {
    try {
      return await this.store.info()
    } catch (err) {
      return this.failed(err, 'info', '', unknownInfo(this.store.kind), throwOnError)
    }
  }

  getStatistics (): CacheStatistics {
    const store = this.store
    const guarded = store instanceof TieredStore ? store.inner : store
    return this.stats.snapshot(
      store.kind,
      store.connected,
      guarded instanceof GuardedStore ? guarded.state : 'closed',
      this.local?.describe() ?? null
    )
  }

  resetStatistics (): void {
    this.stats.reset()
  }

  async rateLimit (id: string, opts: RateLimitOptions): Promise<RateLimitResult> {
    validateKey(id)
    const max = opts?.max
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 1) {
      throw new RangeError(`rateLimit max must be a positive whole number (got ${String(max)})`)
    }
    const window = validateSeconds(opts.window, 'rateLimit window')
    let count: number
    let resetMs: number
    try {
      ({ count, resetMs } = await this.store.hitWindow(id, window))
    } catch (err) {
      // Fail open: an outage must not turn every request away.
      return this.failed(err, 'rateLimit', id, { limit: max, remaining: max, reset: window })
    }
    const reset = Math.max(1, Math.ceil(resetMs / 1000))
    if (count > max) {
      throw new RateLimitError(`Rate limit of ${max} per ${window}s exceeded for ${id}; retry in ${reset}s`, reset, max)
    }
    return { limit: max, remaining: max - count, reset }
  }

  namespace (name: string): CacheNamespaceView {
    validateNamespace(name)
    const ns = { namespace: name }
    return {
      name,
      get: (key) => this.get(key, ns),
      set: (key, value, opts) => this.set(key, value, { ...opts, ...ns }),
      delete: (keys) => this.delete(keys, ns),
      exists: (keys) => this.exists(keys, ns),
      getOrSet: (key, callback, opts) => this.getOrSet(key, callback, { ...opts, ...ns }),
      expire: (key, seconds) => this.expire(key, seconds, ns),
      ttl: (key) => this.ttl(key, ns),
      clear: () => this.clear(name),
      redisKey: (key) => this.redisKey(key, name)
    }
  }

  /** A TTL in whole seconds, `defaultTtl` when unset, clamped to `maxTtl`. */
  resolveTtl (ttl: number | undefined): number {
    if (ttl === undefined) return this.defaultTtl
    return Math.min(validateSeconds(ttl, 'ttl'), this.maxTtl)
  }

  /**
   * A fresh value held by the local tier and already decoded, without a promise or a lookup:
   * the hot path of getOrSet. Undefined sends the caller down the full lookup.
   */
  private localHit (fullKey: string): { value: unknown } | undefined {
    const bytes = this.local?.get(fullKey)
    if (bytes === undefined) return undefined
    const decoded = this.decoded.get(bytes)
    if (decoded === undefined || !isFresh(decoded.envelope)) return undefined
    this.stats.hits++
    this.stats.bytesRead += bytes.length
    return decoded
  }

  /**
   * Reads an entry: a miss when absent, unreadable (deleted, counted, logged) or when the store
   * fails (counted, logged, or thrown with `throwOnError`).
   */
  async lookup (fullKey: string): Promise<Lookup> {
    let bytes: Buffer | null
    try {
      bytes = await this.store.get(fullKey)
    } catch (err) {
      this.stats.misses++
      return this.failed(err, 'get', fullKey, MISS)
    }
    if (bytes === null) {
      this.stats.misses++
      return MISS
    }
    this.stats.bytesRead += bytes.length
    // The local tier hands out the same Buffer on every hit: deserialize it once. Values from
    // the local tier are therefore shared between callers, as in any in-process cache.
    let decoded = this.decoded.get(bytes)
    try {
      if (decoded === undefined) {
        decoded = this.codec.decodeValue(bytes)
        if (this.local !== undefined) this.decoded.set(bytes, decoded)
      }
    } catch (err) {
      this.stats.misses++
      this.discard(fullKey)
      return this.failed(err, 'get', fullKey, MISS)
    }
    if (isFresh(decoded.envelope)) this.stats.hits++
    else this.stats.misses++
    return { found: true, ...decoded }
  }

  /** Stores a payload in an envelope. Never throws unless `throwOnError`. */
  async write (fullKey: string, payload: Buffer, entry: EntryOptions): Promise<boolean> {
    let bytes: Buffer
    try {
      bytes = this.encode(payload, entry)
    } catch (err) {
      return this.failed(err, 'set', fullKey, false)
    }
    return this.storeBytes(fullKey, bytes, entry.ttl, entry.tags)
  }

  /** The envelope for a payload, with compression counted in the statistics. */
  encode (payload: Buffer, entry: Omit<EntryOptions, 'ttl' | 'tags'>): Buffer {
    const encoded = this.codec.encode(payload, entry.kind, entry.freshFor, entry.compress, entry.head)
    if (encoded.uncompressedSize > 0) this.stats.compressed(encoded.uncompressedSize, encoded.bytes.length)
    return encoded.bytes
  }

  /** Stores encoded bytes unless they exceed `maxEntrySize`. Never throws unless `throwOnError`. */
  async storeBytes (fullKey: string, bytes: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<boolean> {
    if (bytes.length > this.maxEntrySize) {
      this.stats.oversized++
      this.log.warn({ key: fullKey, bytes: bytes.length, maxEntrySize: this.maxEntrySize }, 'fastify-redis-cache: entry larger than maxEntrySize, not stored')
      return false
    }
    try {
      await this.store.set(fullKey, bytes, ttl, tags, field)
    } catch (err) {
      return this.failed(err, 'set', fullKey, false)
    }
    this.stats.sets++
    this.stats.bytesWritten += bytes.length
    return true
  }

  /** Drops an entry that cannot be read back; best effort. */
  discard (fullKey: string): void {
    this.store.delete([fullKey]).catch((err: unknown) => this.countFailure(err, 'delete', fullKey))
  }

  /** Counts and logs a store failure; throws the typed error with `throwOnError`, else returns `fallback`. */
  failed<T> (err: unknown, op: string, key: string, fallback: T, throwOnError = this.throwOnError): T {
    const error = this.countFailure(err, op, key)
    if (throwOnError) throw error
    return fallback
  }

  countFailure (err: unknown, op: string, key: string): CacheError {
    const error = toCacheError(err)
    this.stats.errors++
    const now = Date.now()
    if (now - this.lastFailureLog >= FAILURE_LOG_INTERVAL_MS) {
      this.log.warn({ err: error, op, key, suppressed: this.suppressedFailures }, `fastify-redis-cache: ${op} failed: ${error.message}`)
      this.lastFailureLog = now
      this.suppressedFailures = 0
    } else {
      this.suppressedFailures++
    }
    return error
  }

  /** getOrSet's shared run: the stored value when fresh (or stale within its windows), else the callback's. */
  private async lookupOrLoad<T> (load: Load<T>, staleWhileRevalidate: number, staleIfError: number): Promise<T> {
    const lookup = await this.lookup(load.fullKey)
    if (lookup.found) {
      if (isFresh(lookup.envelope)) return lookup.value as T
      if (isFresh(lookup.envelope, staleWhileRevalidate)) {
        this.refreshInBackground(load)
        return lookup.value as T
      }
    }
    try {
      return await this.load(load)
    } catch (err) {
      if (lookup.found && isFresh(lookup.envelope, staleIfError)) {
        this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: getOrSet callback failed; serving the stale value')
        return lookup.value as T
      }
      throw err
    }
  }

  /** Runs the callback once across instances (see single-flight.ts) and stores its result. */
  private async load<T> (load: Load<T>): Promise<T> {
    const { lease, bytes } = await this.flight.claim(load.fullKey, isFreshBytes)
    if (lease === undefined) {
      if (bytes !== null) {
        try {
          return this.codec.decodeValue(bytes).value as T
        } catch (err) {
          // Unreadable like any other entry: counted and logged; the callback's result replaces it.
          this.countFailure(err, 'get', load.fullKey)
        }
      }
      return this.runAndStore(load)
    }
    try {
      return await this.runAndStore(load)
    } finally {
      await lease.release()
    }
  }

  private async runAndStore<T> (load: Load<T>): Promise<T> {
    const value = await load.callback()
    // undefined is never stored: the next call runs the callback again.
    if (value === undefined) return value
    let payload: Buffer
    try {
      payload = this.codec.serialize(value)
    } catch (err) {
      return this.failed(err, 'set', load.fullKey, value)
    }
    await this.write(load.fullKey, payload, { kind: KIND_VALUE, freshFor: load.ttl, ttl: load.keepFor, compress: load.compress, tags: load.tags })
    return value
  }

  private refreshInBackground<T> (load: Load<T>): void {
    if (this.refreshing.has(load.fullKey)) return
    this.refreshing.add(load.fullKey)
    this.load(load)
      .catch((err: unknown) => this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: background refresh failed; the stale value stays'))
      .finally(() => this.refreshing.delete(load.fullKey))
  }

  private async removed (work: Promise<number> | number, op: string, key: string, throwOnError = this.throwOnError): Promise<number> {
    try {
      const count = await work
      this.stats.deletes += count
      return count
    } catch (err) {
      return this.failed(err, op, key, 0, throwOnError)
    }
  }
}
