// getOrSet's read-through: the stored value when fresh, else one run of the callback (shared by
// concurrent callers in this process, and across instances through the lock) whose result is
// stored. Stale values are served while a refresh runs (staleWhileRevalidate) or when the
// callback fails (staleIfError).
import type { FastifyBaseLogger } from 'fastify'
import type { GetOrSetOptions } from '../../types'
import { callbackRequired } from '../errors'
import { KIND_VALUE, type Envelope } from '../envelope'
import { Flights } from '../flights'
import { freshness, isFreshBytes, NO_STALE, type StaleWindows } from '../freshness'
import { validateEntryTags, validateStaleSeconds } from '../keys'
import type { HeldLock } from '../lock'
import { BackgroundRefresh } from '../refresh'
import type { CacheCore } from './core'
import type { ValueReader } from './value-reader'

/** One getOrSet call, validated. */
interface Load<T> {
  fullKey: string
  callback: () => T | Promise<T>
  ttl: number
  keepFor: number
  tags: readonly string[]
  compress: boolean | undefined
  windows: StaleWindows
}

export class GetOrSet {
  private readonly core: CacheCore
  private readonly reader: ValueReader
  private readonly log: FastifyBaseLogger
  private readonly flights = new Flights<unknown>()
  private readonly refreshes = new BackgroundRefresh()

  constructor (core: CacheCore, reader: ValueReader) {
    this.core = core
    this.reader = reader
    this.log = core.log
    core.stamps.onInvalidate((fullKeys) => this.flights.detach(fullKeys))
  }

  run<T> (fullKey: string, callback: () => T | Promise<T>, opts: GetOrSetOptions | undefined): Promise<T> {
    // Not an async function: a hit from the local tier and a caller that joins a lookup under
    // way cost no promise of their own (the hot paths under concurrency).
    let load: Load<T>
    try {
      load = this.validate(fullKey, callback, opts)
    } catch (err) {
      return Promise.reject(err)
    }
    if (opts?.forceRefresh === true) return this.runAndStore(load)
    const hit = this.reader.localHit(fullKey)
    if (hit !== undefined) return Promise.resolve(hit.value as T)
    // Concurrent callers of one key share one lookup and one callback run.
    const running = this.flights.join(fullKey)
    if (running !== undefined) return running as Promise<T>
    return this.flights.run(fullKey, this.lookupOrLoad(load)) as Promise<T>
  }

  private validate<T> (fullKey: string, callback: () => T | Promise<T>, opts: GetOrSetOptions | undefined): Load<T> {
    const ttl = this.core.resolveTtl(opts?.ttl)
    const tags = opts?.tags === undefined ? [] : validateEntryTags(opts.tags)
    const staleWhileRevalidate = validateStaleSeconds(opts?.staleWhileRevalidate, 'staleWhileRevalidate')
    const staleIfError = validateStaleSeconds(opts?.staleIfError, 'staleIfError')
    // The common case shares one object: this runs before every hit.
    const windows = staleWhileRevalidate === 0 && staleIfError === 0 ? NO_STALE : { staleWhileRevalidate, staleIfError }
    if (typeof callback !== 'function') throw callbackRequired('getOrSet')
    const keepFor = ttl + Math.max(windows.staleWhileRevalidate, windows.staleIfError)
    return { fullKey, callback, ttl, keepFor, tags, compress: opts?.compress, windows }
  }

  /** The stored value when fresh (or stale within its windows), else the callback's. */
  private async lookupOrLoad<T> (load: Load<T>): Promise<T> {
    const lookup = await this.reader.lookup(load.fullKey)
    const stale: { value: unknown, envelope: Envelope } | undefined = lookup.found ? lookup : undefined
    if (stale !== undefined) {
      const state = freshness(stale.envelope, load.windows)
      if (state === 'fresh') return stale.value as T
      if (state === 'stale-while-revalidate') {
        this.refreshes.start(load.fullKey, () => this.load(load), (err) => {
          this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: background refresh failed; the stale value stays')
        })
        return stale.value as T
      }
    }
    try {
      return await this.load(load)
    } catch (err) {
      if (stale !== undefined && freshness(stale.envelope, load.windows) === 'stale-if-error') {
        this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: getOrSet callback failed; serving the stale value')
        return stale.value as T
      }
      throw err
    }
  }

  /** Runs the callback once across instances (see lock.ts) and stores its result. */
  private async load<T> (load: Load<T>): Promise<T> {
    const { lease, bytes } = await this.core.lock.claim(load.fullKey, isFreshBytes)
    if (lease === undefined) {
      if (bytes !== null) {
        try {
          const value = this.core.codec.decodeValue(bytes).value as T
          await this.core.learn(bytes)
          if (this.core.admits(load.fullKey, bytes)) return value
        } catch (err) {
          // Unreadable like any other entry: counted and logged; the callback's result replaces it.
          this.core.failures.count(err, 'get', load.fullKey)
        }
      }
      return this.runAndStore(load)
    }
    try {
      return await this.runAndStore(load, lease.held)
    } finally {
      // A no-op when the write let go of the lock itself.
      await lease.release()
    }
  }

  private async runAndStore<T> (load: Load<T>, lock?: HeldLock): Promise<T> {
    const startedAt = Date.now()
    const value = await load.callback()
    // undefined is never stored: the next call runs the callback again.
    if (value === undefined) return value
    let payload: Buffer
    try {
      payload = this.core.codec.serialize(value)
    } catch (err) {
      return this.core.failures.failed(err, 'set', load.fullKey, value)
    }
    await this.core.write(load.fullKey, payload, { kind: KIND_VALUE, freshFor: load.ttl, ttl: load.keepFor, compress: load.compress, tags: load.tags, startedAt, lock })
    return value
  }
}
