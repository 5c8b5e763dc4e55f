// Keeps a failing Redis off the request path. After `failureThreshold` failures in a row the
// circuit opens: store calls fail at once (the cache degrades) instead of each waiting for a
// timeout. After `resetTimeout` one probe (PING) is let through; its success closes the circuit.
// A health check pings Redis every `healthCheckInterval` while closed, so a dead connection is
// noticed even without traffic, and a reconnect closes the circuit at once.
import { RedisConnectionError } from '../errors'
import type { CacheInfo } from '../../types'
import type { StampSource } from '../invalidation/stamps'
import type { HeldLock } from '../lock'
import type { ClaimedRead, EntryStore, LockClaim, LockStore, RateWindow, RateWindowStore, ServerStore } from './store'

/**
 * What the breaker guards: the Redis store's capabilities, whether its client is ready, and
 * how to make it connect afresh (to reach a new primary behind the same address).
 */
export type GuardableStore = EntryStore & RateWindowStore & LockStore & ServerStore & StampSource & {
  readonly connected: boolean
  reconnect?: () => void
}

// Replies that say this server cannot serve us now, however healthy its socket: a primary
// demoted by a failover (READONLY), a dataset still loading, a replica cut off from its
// primary, a Cluster without all its slots or in the middle of moving one.
const UNAVAILABLE_REPLY = /^(READONLY|LOADING|MASTERDOWN|CLUSTERDOWN|TRYAGAIN)\b/

/** Whether `err` is a Redis reply (an answer), as ioredis names them. */
export function isReplyError (err: unknown): err is Error {
  return err instanceof Error && err.name === 'ReplyError'
}

/** Whether `err` is a reply that means the server cannot serve us (see UNAVAILABLE_REPLY). */
export function isUnavailableReply (err: unknown): boolean {
  return isReplyError(err) && UNAVAILABLE_REPLY.test(err.message)
}

export type CircuitState = 'closed' | 'open' | 'half-open'

export interface GuardOptions {
  failureThreshold: number
  /** Milliseconds the circuit stays open before a probe. */
  resetTimeout: number
  /** Milliseconds between health checks while closed. */
  healthCheckInterval: number
  /** Milliseconds any one store call may take; 0 leaves timing out to the client. */
  commandTimeout: number
}

export interface BreakerEvents {
  onStateChange (state: CircuitState, previous: CircuitState): void
}

const OPEN_ERROR_MESSAGE = 'Redis circuit is open: skipping Redis until it answers again'

/** A store whose calls go through a circuit breaker and, optionally, a timeout. */
export class GuardedStore implements EntryStore, RateWindowStore, LockStore, ServerStore, StampSource {
  private readonly inner: GuardableStore
  state: CircuitState = 'closed'
  private failures = 0
  private probing = false
  private probeTimer: NodeJS.Timeout | undefined
  private readonly options: GuardOptions
  private readonly events: BreakerEvents
  private readonly healthTimer: NodeJS.Timeout

  constructor (inner: GuardableStore, options: GuardOptions, events: BreakerEvents) {
    this.inner = inner
    this.options = options
    this.events = events
    this.healthTimer = setInterval(() => { this.healthCheck() }, options.healthCheckInterval).unref()
  }

  get connected (): boolean {
    return this.state === 'closed' && this.inner.connected
  }

  /** The connection came back: no need to wait for the next probe. */
  connectionRestored (): void {
    this.failures = 0
    this.transition('closed')
  }

  get (key: string, field?: string): Promise<Buffer | null> {
    if (this.state !== 'closed') return Promise.reject(new RedisConnectionError(OPEN_ERROR_MESSAGE))
    return this.read(this.inner.get(key, field))
  }

  readOrClaim (key: string, field: string | undefined, claim: LockClaim | undefined): Promise<ClaimedRead> {
    if (this.state !== 'closed') return Promise.reject(new RedisConnectionError(OPEN_ERROR_MESSAGE))
    return this.read(this.inner.readOrClaim(key, field, claim))
  }

  // The hot path: the same as call() without a closure per read.
  private async read<T> (reading: Promise<T>): Promise<T> {
    let result: T
    try {
      result = await (this.options.commandTimeout > 0 ? this.withTimeout(reading, this.options.commandTimeout) : reading)
    } catch (err) {
      this.failed(err)
      throw err
    }
    if (this.failures !== 0 || this.state !== 'closed') this.succeeded()
    return result
  }

  set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string, lock?: HeldLock): Promise<boolean> {
    return this.call(() => this.inner.set(key, value, ttl, tags, field, lock))
  }

  delete (keys: readonly string[]): Promise<number> {
    return this.call(() => this.inner.delete(keys))
  }

  exists (keys: readonly string[]): Promise<number> {
    return this.call(() => this.inner.exists(keys))
  }

  expire (key: string, seconds: number): Promise<boolean> {
    return this.call(() => this.inner.expire(key, seconds))
  }

  ttl (key: string): Promise<number> {
    return this.call(() => this.inner.ttl(key))
  }

  clear (namespace?: string): Promise<number> {
    // A SCAN over a large keyspace takes many commands: no overall timeout.
    return this.call(() => this.inner.clear(namespace), 0)
  }

  invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    return this.call(() => this.inner.invalidateTags(tags))
  }

  readStamps (names: readonly string[]): Promise<Array<string | null>> {
    return this.call(() => this.inner.readStamps(names))
  }

  hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    return this.call(() => this.inner.hitWindow(id, windowSeconds))
  }

  acquireLock (key: string, token: string, ttlMs: number): Promise<boolean> {
    return this.call(() => this.inner.acquireLock(key, token, ttlMs))
  }

  releaseLock (key: string, token: string): Promise<void> {
    return this.call(() => this.inner.releaseLock(key, token))
  }

  /** Pings Redis itself, whatever the circuit's state: it is how the state is learned. */
  async ping (): Promise<void> {
    try {
      await this.withTimeout(this.inner.ping(), this.options.commandTimeout)
    } catch (err) {
      this.failed(err)
      throw err
    }
    this.succeeded()
  }

  info (): Promise<CacheInfo> {
    return this.call(() => this.inner.info())
  }

  async close (): Promise<void> {
    clearInterval(this.healthTimer)
    clearTimeout(this.probeTimer)
    await this.inner.close()
  }

  private async call<T> (work: () => Promise<T>, timeout = this.options.commandTimeout): Promise<T> {
    if (this.state !== 'closed') throw new RedisConnectionError(OPEN_ERROR_MESSAGE)
    let result: T
    try {
      result = await this.withTimeout(work(), timeout)
    } catch (err) {
      this.failed(err)
      throw err
    }
    this.succeeded()
    return result
  }

  /** One PING after `resetTimeout` open; calls keep failing fast until it answers. */
  private probe (): void {
    // Closed meanwhile (a reconnect, an answered ping): nothing to probe.
    if (this.state === 'closed') return
    // The last probe is still waiting for its answer (an explicit ping failed meanwhile and
    // scheduled this one): look again later, or a failure of that probe while open would leave
    // the circuit open with no probe to come.
    if (this.probing) {
      this.probeTimer = setTimeout(() => this.probe(), this.options.resetTimeout).unref()
      return
    }
    this.probing = true
    this.transition('half-open')
    this.ping().catch(() => {}).finally(() => { this.probing = false })
  }

  private healthCheck (): void {
    if (this.state === 'closed') this.ping().catch(() => {})
  }

  private succeeded (): void {
    this.failures = 0
    if (this.state !== 'closed') this.transition('closed')
  }

  private failed (err: unknown): void {
    // A reply error (a wrong type at a key, an OOM under maxmemory, a denied command) is an
    // answer: Redis is up, and under OOM it still serves reads, so the circuit stays closed.
    // Only the replies that say this server cannot serve us count against it.
    if (isReplyError(err)) {
      if (!UNAVAILABLE_REPLY.test(err.message)) return
      // A demoted primary keeps answering on the old connection: only a new one reaches the
      // primary a failover behind the same address (DNS, a proxy) now points to.
      if (err.message.startsWith('READONLY')) this.inner.reconnect?.()
    }
    this.failures++
    if (this.state === 'half-open' || (this.state === 'closed' && this.failures >= this.options.failureThreshold)) {
      this.transition('open')
      clearTimeout(this.probeTimer)
      this.probeTimer = setTimeout(() => this.probe(), this.options.resetTimeout).unref()
    }
  }

  private transition (state: CircuitState): void {
    if (state === this.state) return
    const previous = this.state
    this.state = state
    this.events.onStateChange(state, previous)
  }

  private withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
    if (ms <= 0) return promise
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new RedisConnectionError(`Redis did not answer within ${ms} ms`)), ms)
    })
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
  }
}
