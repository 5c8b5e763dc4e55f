// Invalidations that Redis did not apply are kept here and retried until it does. Each is
// recorded in the stamps first (see stamps.ts), so from the moment it is asked for, this instance
// serves nothing it covers, whether Redis took it or not; other instances see it once a retry
// lands. The journal is bounded: past its bounds, pending deletes become clears of their
// namespaces, and pending tag invalidations a clear of everything (covering more is safe).
//
// An invalidation returns once the millisecond it was stamped in is over (millisecondOver).
//
// Retried invalidations are applied at the time of the retry, later than they were asked for:
// they may remove entries written in between, never keep one they should have removed.
import type { FastifyBaseLogger } from 'fastify'
import type { KeyLayout } from '../keys'
import type { Statistics } from '../statistics'
import type { EntryStore } from '../stores/store'
import { Throttle } from '../throttled-log'
import { type InvalidationStamps, POLL_MS } from './stamps'

const RETRY_MS = 200
const MAX_PENDING_KEYS = 10_000
const MAX_PENDING_TAGS = 10_000
const MAX_PENDING_NAMESPACES = 1000
/** How many keys or tags one retry sends at once. */
const RETRY_BATCH = 1000

export class InvalidationJournal {
  private readonly entries: EntryStore
  private readonly stamps: InvalidationStamps
  private readonly layout: KeyLayout
  private readonly stats: Statistics
  private readonly log: FastifyBaseLogger
  // What Redis has not applied yet, each with when it was asked for.
  private readonly keys = new Map<string, number>()
  private readonly namespaces = new Map<string, number>()
  private readonly tags = new Map<string, number>()
  private all = 0
  private retrying = false
  private ticks = 0
  private readonly timer: NodeJS.Timeout
  private readonly keptLog = new Throttle()

  constructor (entries: EntryStore, stamps: InvalidationStamps, layout: KeyLayout, stats: Statistics, log: FastifyBaseLogger) {
    this.entries = entries
    this.stamps = stamps
    this.layout = layout
    this.stats = stats
    this.log = log
    this.timer = setInterval(() => { this.tick() }, RETRY_MS).unref()
  }

  /** Invalidations kept until Redis applies them. */
  get pending (): number {
    return this.keys.size + this.namespaces.size + this.tags.size + (this.all > 0 ? 1 : 0)
  }

  async delete (fullKeys: readonly string[]): Promise<number> {
    const at = Date.now()
    this.stamps.keysDeleted(fullKeys, at)
    return this.applied('delete', () => this.entries.delete(fullKeys), () => {
      for (const key of fullKeys) this.keys.set(key, at)
    })
  }

  async clear (namespace: string | undefined): Promise<number> {
    const at = Date.now()
    this.stamps.cleared(namespace, at)
    return this.applied('clear', () => this.entries.clear(namespace), () => {
      if (namespace === undefined) this.all = at
      else this.namespaces.set(namespace, at)
    })
  }

  async invalidateTags (tags: readonly string[]): Promise<number> {
    const at = Date.now()
    this.stamps.tagsInvalidated(tags, at)
    return this.applied('invalidateTags', async () => (await this.entries.invalidateTags(tags)).removed, () => {
      for (const tag of tags) this.tags.set(tag, at)
    })
  }

  /** Applies an invalidation in Redis; when Redis fails, `keep` files it for retry, and it throws. */
  private async applied (operation: string, apply: () => Promise<number>, keep: () => void): Promise<number> {
    let result: number
    try {
      result = await apply()
    } catch (err) {
      keep()
      this.kept(err, operation)
      throw err
    } finally {
      await millisecondOver()
    }
    return result
  }

  close (): void {
    clearInterval(this.timer)
  }

  /** Retries what is pending, and every POLL_MS reads the stamps again. */
  tick (): Promise<void> {
    if (++this.ticks * RETRY_MS >= POLL_MS) {
      this.ticks = 0
      this.stamps.poll(this.pending > 0).catch(() => {})
    }
    return this.retry()
  }

  /** Applies pending invalidations, widest first, until one fails. */
  async retry (): Promise<void> {
    if (this.pending === 0 || this.retrying) return
    this.retrying = true
    const before = this.pending
    try {
      if (this.all > 0) {
        const at = this.all
        await this.entries.clear(undefined)
        if (this.all === at) this.all = 0
      }
      for (const [namespace, at] of [...this.namespaces]) {
        await this.entries.clear(namespace)
        dropIfSame(this.namespaces, namespace, at)
      }
      await this.applyBatches(this.tags, (tags) => this.entries.invalidateTags(tags))
      await this.applyBatches(this.keys, (keys) => this.entries.delete(keys))
    } catch {
      // Still failing: the next tick tries again.
    } finally {
      this.retrying = false
    }
    this.stats.invalidationsRetried += before - this.pending
    if (before > 0 && this.pending === 0) this.log.info({ applied: before }, 'fastify-redis-cache: pending invalidations applied')
  }

  private async applyBatches (pending: Map<string, number>, work: (batch: string[]) => Promise<unknown>): Promise<void> {
    while (pending.size > 0) {
      const batch = [...pending].slice(0, RETRY_BATCH)
      await work(batch.map(([name]) => name))
      for (const [name, at] of batch) dropIfSame(pending, name, at)
    }
  }

  /** An invalidation failed: it is kept, within bounds, and said so. */
  private kept (err: unknown, op: string): void {
    this.bound()
    const suppressed = this.keptLog.pass()
    if (suppressed !== undefined) {
      this.log.warn({ err, op, pending: this.pending, suppressed }, 'fastify-redis-cache: invalidation not applied by Redis; kept and retried, and this instance serves nothing it covers meanwhile')
    }
  }

  /** Past the bounds, pending work is widened into fewer, larger invalidations. */
  private bound (): void {
    const now = Date.now()
    if (this.keys.size > MAX_PENDING_KEYS) {
      for (const key of this.keys.keys()) this.namespaces.set(this.layout.namespaceOf(key), now)
      this.keys.clear()
      for (const namespace of this.namespaces.keys()) this.stamps.cleared(namespace, now)
    }
    if (this.tags.size > MAX_PENDING_TAGS || this.namespaces.size > MAX_PENDING_NAMESPACES) {
      this.all = now
      this.stamps.cleared(undefined, now)
    }
    if (this.all > 0) {
      // A clear of everything applied later covers whatever was asked for before it.
      for (const pending of [this.keys, this.namespaces, this.tags]) {
        for (const [name, at] of pending) if (at <= this.all) pending.delete(name)
      }
    }
  }
}

/**
 * Resolves once the current millisecond is over. Stamps are in whole milliseconds, and work that
 * began in the millisecond of an invalidation counts as begun before it: an invalidation returns
 * only after that millisecond, so what its caller does next is never taken for older.
 */
function millisecondOver (): Promise<void> {
  const now = Date.now()
  // Every invalidation of one millisecond waits on the same check.
  if (waiting?.ms !== now) waiting = { ms: now, over: afterMillisecond(now) }
  return waiting.over
}

let waiting: { ms: number, over: Promise<void> } | undefined

async function afterMillisecond (ms: number): Promise<void> {
  // Checked on each turn of the event loop: a timer would hold the caller a millisecond or more
  // (several on a busy loop), where the rest of the millisecond is usually much less.
  while (Date.now() <= ms) await new Promise((resolve) => setImmediate(resolve))
}

function dropIfSame (pending: Map<string, number>, name: string, at: number): void {
  if (pending.get(name) === at) pending.delete(name)
}
