// getOrSet's read-through: the stored value when fresh, else one run of the callback (shared by
// concurrent callers in this process, and across instances through the lock) whose result is
// stored. Stale values are served while a refresh runs (staleWhileRevalidate), when the callback
// fails (staleIfError) or is slower than the soft timeout; a hit past `eagerRefresh` of its ttl
// is refreshed in the background before it expires. No caller waits past the hard timeout.
import type { FastifyBaseLogger } from 'fastify'
import type { GetOrSetCallback, GetOrSetOptions } from '../../types'
import { KIND_VALUE, type Payload, storedAtOf } from '../envelope'
import { callbackRequired, CacheTimeoutError } from '../errors'
import { Flights } from '../flights'
import { freshness, isFreshBytes } from '../freshness'
import { validateEntryTags } from '../keys'
import type { HeldLock } from '../lock'
import { BackgroundRefresh } from '../refresh'
import { jittered, refreshDue, resolveResilience, type Resilience } from '../resilience'
import { NO_REPORT, type Report } from '../telemetry'
import { awaitWithin, Fallback } from '../timeouts'
import type { CacheCore } from './core'
import { LoadContext } from './load-context'
import type { Decoded, ValueReader } from './value-reader'

/** One getOrSet call, validated. */
interface Load<T> {
  fullKey: string
  callback: GetOrSetCallback<T>
  ttl: number
  tags: readonly string[]
  compress: boolean | undefined
  policy: Resilience
}

/** What callers joining a lookup under way share besides its result. */
interface Shared {
  /** The stale value callers may get on a timeout. */
  fallback: Fallback<unknown>
  /** Where the result came from, for the spans of every caller. */
  outcome: Report['outcome']
}

export class GetOrSet {
  private readonly core: CacheCore
  private readonly reader: ValueReader
  private readonly log: FastifyBaseLogger
  private readonly flights = new Flights<unknown>()
  private readonly shared = new WeakMap<Promise<unknown>, Shared>()
  private readonly refreshes = new BackgroundRefresh()
  private readonly defaults: Resilience

  constructor (core: CacheCore, reader: ValueReader, defaults: Resilience) {
    this.core = core
    this.reader = reader
    this.log = core.log
    this.defaults = defaults
    core.stamps.onInvalidate((fullKeys) => this.flights.detach(fullKeys))
  }

  run<T> (fullKey: string, namespace: string, callback: GetOrSetCallback<T>, opts: GetOrSetOptions | undefined): Promise<T> {
    const telemetry = this.core.telemetry
    if (!telemetry.on) return this.resolve(fullKey, callback, opts, NO_REPORT)
    return telemetry.operation('getOrSet', namespace, fullKey, (report) => this.resolve(fullKey, callback, opts, report))
  }

  private resolve<T> (fullKey: string, callback: GetOrSetCallback<T>, opts: GetOrSetOptions | undefined, report: Report): Promise<T> {
    // Not an async function: a hit from the local tier and a caller that joins a lookup under
    // way cost no promise of their own (the hot paths under concurrency).
    let load: Load<T>
    try {
      load = this.validate(fullKey, callback, opts)
    } catch (err) {
      return Promise.reject(err)
    }
    if (opts?.forceRefresh === true) {
      report.outcome = 'miss'
      const fallback = new Fallback<T>()
      return this.within(load, this.runAndStore(load, undefined, undefined, fallback), fallback)
    }
    const hit = this.reader.localHit(fullKey)
    if (hit !== undefined) {
      if (report !== NO_REPORT) {
        report.outcome = 'hit'
        report.layer = this.core.telemetry.nearbyLayer
      }
      if (load.policy.eagerRefresh > 0) this.refreshEarly(load, hit)
      return Promise.resolve(hit.value as T)
    }
    // Concurrent callers of one key share one lookup and one callback run.
    let running = this.flights.join(fullKey) as Promise<T> | undefined
    if (running === undefined) {
      const shared: Shared = { fallback: new Fallback(), outcome: undefined }
      running = this.flights.run(fullKey, this.lookupOrLoad(load, shared)) as Promise<T>
      this.shared.set(running, shared)
    }
    const { soft, hard } = load.policy
    // The common join: nothing to wait for but the result.
    if (report === NO_REPORT && soft === 0 && hard === 0) return running
    const shared = this.shared.get(running) as Shared
    if (report === NO_REPORT) return this.within(load, running, shared.fallback as Fallback<T>)
    let servedStale = false
    return this.within(load, running, shared.fallback as Fallback<T>, () => { servedStale = true }).then((value) => {
      report.outcome = servedStale ? 'stale' : shared.outcome
      return value
    })
  }

  private validate<T> (fullKey: string, callback: GetOrSetCallback<T>, opts: GetOrSetOptions | undefined): Load<T> {
    const ttl = this.core.resolveTtl(opts?.ttl)
    const tags = opts?.tags === undefined ? [] : validateEntryTags(opts.tags)
    const policy = resolveResilience(opts, this.defaults)
    if (typeof callback !== 'function') throw callbackRequired('getOrSet')
    return { fullKey, callback, ttl, tags, compress: opts?.compress, policy }
  }

  /** A caller's wait for `work`, within its soft and hard timeouts. */
  private within<T> (load: Load<T>, work: Promise<T>, fallback: Fallback<T>, servedStale?: () => void): Promise<T> {
    const { soft, hard } = load.policy
    if (soft === 0 && hard === 0) return work
    return awaitWithin(work, fallback, soft, () => {
      this.core.stats.staleOnTimeout++
      servedStale?.()
    }, {
      ms: hard,
      error: () => {
        this.core.stats.timeouts++
        return new CacheTimeoutError(`getOrSet waited ${hard} ms for its callback, and there is no stale value to serve`, hard)
      }
    })
  }

  /** The stored value when fresh (or stale within its windows), else the callback's. */
  private async lookupOrLoad<T> (load: Load<T>, shared: Shared): Promise<T> {
    const lookup = await this.reader.lookup(load.fullKey)
    const stale = lookup.found ? lookup : undefined
    if (stale !== undefined) {
      const state = freshness(stale.envelope, load.policy.windows)
      if (state === 'fresh') {
        shared.outcome = 'hit'
        if (load.policy.eagerRefresh > 0) this.refreshEarly(load, stale)
        return stale.value as T
      }
      if (state === 'stale-while-revalidate') {
        shared.outcome = 'stale'
        this.refreshes.start(load.fullKey, () => this.load(load, stale), (err) => {
          this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: background refresh failed; the stale value stays')
        })
        return stale.value as T
      }
      // Callers that time out get it, unless an invalidation came since.
      if (state === 'stale-if-error') shared.fallback.found(stale.value, () => this.core.admits(load.fullKey, stale.bytes))
    }
    shared.outcome = 'miss'
    try {
      return await this.load(load, stale, undefined, shared.fallback as Fallback<T>)
    } catch (err) {
      if (stale !== undefined && freshness(stale.envelope, load.policy.windows) === 'stale-if-error' && this.core.admits(load.fullKey, stale.bytes)) {
        this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: getOrSet callback failed; serving the stale value')
        shared.outcome = 'stale'
        return stale.value as T
      }
      if (shared.fallback.slow) this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: getOrSet callback failed after its callers were given the stale value')
      throw err
    }
  }

  /**
   * A hit past `eagerRefresh` of its ttl: refreshed in the background, once in this process
   * (BackgroundRefresh) and once across instances (the lock).
   */
  private refreshEarly<T> (load: Load<T>, hit: Decoded): void {
    if (!refreshDue(hit.envelope, load.policy.eagerRefresh)) return
    const started = this.refreshes.start(load.fullKey, () => this.load(load, hit, hit.envelope.storedAt), (err) => {
      this.log.warn({ err, key: load.fullKey }, 'fastify-redis-cache: eager refresh failed; the value stays until it expires')
    })
    if (started) this.core.stats.eagerRefreshes++
  }

  /**
   * Runs the callback once across instances (see lock.ts) and stores its result. `replacing`:
   * an eager refresh of the entry stored then, which only a newer entry can answer, and which
   * is given up when another instance holds the lock (it is refreshing the entry).
   */
  private async load<T> (load: Load<T>, stale: Decoded | undefined, replacing?: number, fallback?: Fallback<T>): Promise<T> {
    const usable = replacing === undefined ? isFreshBytes : (bytes: Buffer) => isFreshBytes(bytes) && storedAtOf(bytes) > replacing
    // Waiting for another instance's callback counts against the hard timeout; the lock's own
    // round trip does not (a slow Redis degrades within commandTimeout).
    const { lease, bytes } = await this.core.lock.claim(load.fullKey, usable, undefined, fallback === undefined ? undefined : () => fallback.begin())
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
      if (replacing !== undefined) return (stale as Decoded).value as T
      return this.runAndStore(load, stale, undefined, fallback)
    }
    try {
      return await this.runAndStore(load, stale, lease.held, fallback)
    } finally {
      // A no-op when the write let go of the lock itself.
      await lease.release()
    }
  }

  /**
   * Runs the callback and stores its result as the callback's context says. `fallback`: what the
   * waiting callers share; one past its hard timeout gets the result while it is being stored.
   */
  private async runAndStore<T> (load: Load<T>, stale: Decoded | undefined, lock?: HeldLock, fallback?: Fallback<T>): Promise<T> {
    const startedAt = Date.now()
    // A value an invalidation covered since it was read is not handed on: returned as it is, it
    // would be stored as work begun after that invalidation.
    const current = stale !== undefined && this.core.admits(load.fullKey, stale.bytes) ? stale.value as T : undefined
    const ctx = new LoadContext<T>(current, load.ttl, load.tags, (ttl) => this.core.resolveTtl(ttl))
    fallback?.begin()
    const value = await load.callback(ctx)
    if (fallback !== undefined) fallback.answered = { value }
    // undefined is never stored: the next call runs the callback again.
    if (value === undefined || ctx.skipped) return value
    let payload: Payload
    try {
      payload = this.core.codec.serialize(value)
    } catch (err) {
      return this.core.failures.failed(err, 'set', load.fullKey, value)
    }
    const { windows, jitter } = load.policy
    const freshFor = jittered(ctx.ttl, jitter)
    const keepFor = freshFor + Math.max(windows.staleWhileRevalidate, windows.staleIfError)
    await this.core.write(load.fullKey, payload, { kind: KIND_VALUE, freshFor, ttl: keepFor, compress: load.compress, tags: ctx.tags, startedAt, lock })
    return value
  }
}
