// What this instance knows of invalidations: when each namespace, tag and everything was last
// invalidated (learned from Redis, where every instance writes them, and recorded here first by
// this instance's own invalidations), and the keys this instance deleted lately.
//
// An entry carries when the work that made it began (its `storedAt`) and its tags (envelope.ts).
// It is served only when no invalidation of its key, namespace, tag or of everything came at or
// after that time. The same comparison keeps work that an invalidation overtook from being
// stored (`covers`). A tag whose stamp Redis no longer has (evicted under memory pressure) counts
// as invalidated just now: losing bookkeeping costs misses, never stale answers.
//
// Stamps of namespaces and of tags in use are read again from Redis every POLL_MS, so an
// invalidation made on another instance is seen within that time even when its message on the
// bus was lost. A tag this instance has no stamp for is fetched before its entry is served.
import type { KeyLayout } from '../keys'
import { hasTags, isEnvelope, storedAtOf, tagsOf } from '../envelope'

/** Where other instances' stamps are read: Redis. The memory store has none (one process). */
export interface StampSource {
  /** The stamps stored under these keys, in order; null where there is none. */
  readStamps (names: readonly string[]): Promise<Array<string | null>>
}

export const VALID = 0
export const INVALIDATED = 1
/** A tag's stamp is not known here yet: `learn` it, then ask again. */
export const UNKNOWN = 2
export type Verdict = typeof VALID | typeof INVALIDATED | typeof UNKNOWN

/**
 * How long work may run and still store its result, in ms. A deleted key's tombstone in Redis
 * lives this long; work that began before it is refused rather than risk outliving it.
 */
export const MAX_WORK_MS = 120_000
export const POLL_MS = 500
/** Keys this instance deleted, remembered for MAX_WORK_MS: at most this many. */
const MAX_KEY_RECORDS = 20_000
/** Namespaces never cleared are forgotten past this many (names can come from requests). */
const MAX_NAMESPACES = 1000

interface Stamp {
  /** As Redis has it: undefined not read yet, Infinity when Redis has none (evicted). */
  remote: number | undefined
  /** This instance's own invalidation, until Redis is sure to have it (0 for none). */
  local: number
  /** Read since the last poll: polled again, else forgotten. */
  used: boolean
}

export class InvalidationStamps {
  private readonly layout: KeyLayout
  private readonly source: StampSource | undefined
  private all: Stamp = { remote: 0, local: 0, used: true }
  private readonly namespaces = new Map<string, Stamp>()
  private readonly tags = new Map<string, Stamp>()
  /** Keys deleted through this instance, by deletion time, oldest first. */
  private readonly keys = new Map<string, number>()
  /** Where dropping the oldest of `keys` got to. */
  private oldest: MapIterator<string> | undefined
  private readonly fetching = new Map<string, Promise<void>>()
  private polling = false
  private readonly listeners: Array<(fullKeys?: readonly string[]) => void> = []

  constructor (layout: KeyLayout, source: StampSource | undefined) {
    this.layout = layout
    this.source = source
  }

  /** Calls `listener` on each invalidation made here: with its keys, or without for a wider one. */
  onInvalidate (listener: (fullKeys?: readonly string[]) => void): void {
    this.listeners.push(listener)
  }

  keysDeleted (fullKeys: readonly string[], at: number): void {
    for (const listener of this.listeners) listener(fullKeys)
    for (const key of fullKeys) {
      this.keys.delete(key)
      this.keys.set(key, at)
    }
    while (this.keys.size > MAX_KEY_RECORDS) {
      // One walk, oldest first, kept across calls: a walk begun at the Map's head would step
      // over every record deleted before it (V8 keeps them as holes until the table is rebuilt).
      let oldest = this.oldest?.next()
      if (oldest === undefined || oldest.done === true) {
        this.oldest = this.keys.keys()
        oldest = this.oldest.next()
      }
      this.keys.delete(oldest.value as string)
    }
  }

  cleared (namespace: string | undefined, at: number): void {
    for (const listener of this.listeners) listener()
    const stamp = namespace === undefined ? this.all : this.namespace(namespace)
    stamp.local = Math.max(stamp.local, at)
  }

  tagsInvalidated (tags: readonly string[], at: number): void {
    for (const listener of this.listeners) listener()
    for (const tag of tags) {
      const stamp = this.tag(tag)
      stamp.local = Math.max(stamp.local, at)
    }
  }

  /** Whether an entry read back may be served. */
  verdict (fullKey: string, bytes: Buffer): Verdict {
    const storedAt = storedAtOf(bytes)
    if (storedAt <= at(this.all)) return INVALIDATED
    const namespace = this.namespace(this.layout.namespaceOf(fullKey))
    if (storedAt <= at(namespace)) return INVALIDATED
    if (this.keys.size > 0 && storedAt <= (this.keys.get(fullKey) ?? 0)) return INVALIDATED
    if (!hasTags(bytes)) return VALID
    let verdict: Verdict = VALID
    for (const tag of tagsOf(bytes)) {
      const stamp = this.tags.get(tag)
      // Without a source, this process has seen every invalidation there is.
      if (this.source === undefined && stamp === undefined) continue
      if (stamp === undefined || stamp.remote === undefined) {
        verdict = UNKNOWN
        continue
      }
      stamp.used = true
      if (storedAt <= at(stamp)) return INVALIDATED
    }
    return verdict
  }

  /**
   * Why work that began at `startedAt` must not store its result under `fullKey` with `tags`:
   * an invalidation this instance knows of came after it began, or it ran too long for the
   * tombstones to vouch for it. Null when it may.
   */
  overtaken (fullKey: string, startedAt: number, tags: readonly string[], now = Date.now()): string | null {
    if (now - startedAt > MAX_WORK_MS) return 'ran too long'
    if (startedAt <= at(this.all) || startedAt <= at(this.namespace(this.layout.namespaceOf(fullKey)))) return 'cleared'
    if (startedAt <= (this.keys.get(fullKey) ?? 0)) return 'deleted'
    for (const tag of tags) {
      const stamp = this.tags.get(tag)
      // A stamp Redis lost says nothing of this work: the write makes it again (redis-writes.ts).
      if (stamp !== undefined && startedAt <= (stamp.remote === Infinity ? stamp.local : at(stamp))) return 'tag invalidated'
    }
    return null
  }

  /**
   * Fetches the stamps of an entry's tags not known here; undefined when there are none. Any
   * bytes may come: this runs before they are decoded.
   */
  learn (bytes: Buffer): Promise<void> | undefined {
    if (this.source === undefined || !isEnvelope(bytes) || !hasTags(bytes)) return undefined
    const missing = tagsOf(bytes).filter((tag) => this.tags.get(tag)?.remote === undefined)
    if (missing.length === 0) return undefined
    return Promise.all(missing.map((tag) => this.fetch(tag))).then(() => {})
  }

  /**
   * A write with these tags went through: a tag Redis had no stamp for has one now (the write
   * made it), so it is read again rather than counted as evicted.
   */
  written (tags: readonly string[]): void {
    for (const tag of tags) {
      const stamp = this.tags.get(tag)
      if (stamp !== undefined && stamp.remote === Infinity) stamp.remote = undefined
    }
  }

  /**
   * Reads again the stamps in use, and forgets what is no longer needed. `holding`: invalidations
   * are still pending, so none of this instance's own records may go yet.
   */
  async poll (holding: boolean, now = Date.now()): Promise<void> {
    this.prune(holding, now)
    if (this.source === undefined || this.polling) return
    const names = [this.layout.clearStamp()]
    const stamps = [this.all]
    for (const [name, stamp] of this.namespaces) {
      names.push(this.layout.clearStamp(name))
      stamps.push(stamp)
    }
    const firstTag = names.length
    for (const [tag, stamp] of this.tags) {
      if (!stamp.used && stamp.local === 0) {
        this.tags.delete(tag)
        continue
      }
      stamp.used = false
      names.push(this.layout.tagStamp(tag))
      stamps.push(stamp)
    }
    this.polling = true
    try {
      const values = await this.source.readStamps(names)
      for (let i = 0; i < stamps.length; i++) stamps[i].remote = remoteValue(values[i], i >= firstTag)
    } catch {
      // Redis is down: nothing new can be learned, and the stamps known stay.
    } finally {
      this.polling = false
    }
  }

  private prune (holding: boolean, now: number): void {
    if (holding) return
    const before = now - MAX_WORK_MS
    for (const [key, deletedAt] of this.keys) {
      if (deletedAt > before) break
      this.keys.delete(key)
    }
    for (const stamp of [this.all, ...this.namespaces.values(), ...this.tags.values()]) {
      if (stamp.local !== 0 && stamp.local <= before) stamp.local = 0
    }
    if (this.namespaces.size > MAX_NAMESPACES) {
      for (const [name, stamp] of this.namespaces) if (at(stamp) === 0) this.namespaces.delete(name)
    }
  }

  private fetch (tag: string): Promise<void> {
    let pending = this.fetching.get(tag)
    if (pending === undefined) {
      pending = (this.source as StampSource).readStamps([this.layout.tagStamp(tag)]).then(([value]) => {
        this.tag(tag).remote = remoteValue(value, true)
      }, () => {}).finally(() => this.fetching.delete(tag))
      this.fetching.set(tag, pending)
    }
    return pending
  }

  private namespace (name: string): Stamp {
    let stamp = this.namespaces.get(name)
    if (stamp === undefined) {
      // Never cleared as far as this instance knows: the next poll says otherwise if it was.
      stamp = { remote: 0, local: 0, used: true }
      this.namespaces.set(name, stamp)
    }
    return stamp
  }

  private tag (tag: string): Stamp {
    let stamp = this.tags.get(tag)
    if (stamp === undefined) {
      stamp = { remote: this.source === undefined ? 0 : undefined, local: 0, used: true }
      this.tags.set(tag, stamp)
    }
    return stamp
  }
}

function at (stamp: Stamp): number {
  const remote = stamp.remote ?? 0
  return remote > stamp.local ? remote : stamp.local
}

/** A stamp as read from Redis: a tag's missing stamp was evicted (or expired with its entries). */
function remoteValue (value: string | null, isTag: boolean): number {
  if (value === null) return isTag ? Infinity : 0
  const parsed = Number(value)
  return Number.isFinite(parsed) ? parsed : Infinity
}
