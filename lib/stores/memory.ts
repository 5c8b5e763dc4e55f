// The in-process store used when no Redis is configured: the same semantics as the Redis store
// (TTL, hashes, namespaces, clear, tags, rate-limit windows) for one process only, and bounded.
// The bytes live in the local tier's segment memory (local/segment-memory.ts): least recently
// used entries are evicted first (CLOCK) and counted in `evictions`, and maxBytes bounds the
// memory held, this store's own indexes included, so no stream of distinct keys can grow the
// process without bound. It has no locks: with one process, the in-process request collapsing
// is all the coordination there is to do.
//
// A value read is a view of a segment, which keeps the whole segment alive while it is held:
// callers that keep bytes for long copy them (route caching does; values are decoded anyway).
import type { CacheInfo } from '../../types'
import type { KeyLayout } from '../keys'
import { SegmentMemory } from '../local/segment-memory'
import type { Statistics } from '../statistics'
import { type ClaimedRead, type EntryStore, type RateWindow, type RateWindowStore, type ServerStore, type SyncReader, unclaimed, unknownInfo } from './store'

export interface MemoryStoreBounds {
  /** Entries kept at most: each value, and each field of a hash (a route's variant), is one. */
  maxEntries: number
  /** Bytes kept at most: the entries' bytes and objects, and this store's indexes. */
  maxBytes: number
}

interface Window {
  count: number
  expiresAt: number
}

const SWEEP_INTERVAL_MS = 30_000
/** Rate-limit windows kept at most: beyond, the oldest goes, so a flood of ids cannot grow memory. */
export const MAX_WINDOWS = 100_000

// A hash's fields are entries of their own, under `${key}${FIELD_MARK}${field}`. The mark, a lone
// high surrogate before a NUL, is in no well-formed string (keys are, lib/keys.ts), so no plain
// key is ever taken for a field, and the hash's key is what precedes the first mark.
const FIELD_MARK = '\uD800\u0000'

// What the indexes cost beside the entries, charged to maxBytes so that they are bounded with
// them: V8's estimates for a Set or Map slot (about 3 words, a table kept up to twice the size)
// and for a small Set with its table (about 200 bytes), plus the characters of a string that only
// the index holds. The entries' keys are counted with the entries.
const SET_BYTES = 200
const SLOT_BYTES = 48
/** A tag's members: its Set, its Map slot and its name. */
const tagSetCost = (tagKey: string): number => SET_BYTES + SLOT_BYTES + tagKey.length * 2
/** A key's tags: its Set and its Map slot. */
const TAGGED_KEY_BYTES = SET_BYTES + SLOT_BYTES
/** A membership, kept both ways: in the tag's Set and in the key's. */
const MEMBER_BYTES = 2 * SLOT_BYTES
/** A hash's fields: its Set, its Map slot and its key (the fields' entries hold other strings). */
const hashCost = (key: string): number => SET_BYTES + SLOT_BYTES + key.length * 2
const FIELD_BYTES = SLOT_BYTES

export class MemoryStore implements EntryStore, RateWindowStore, ServerStore {
  private readonly segments: SegmentMemory
  /** A hash's key to its fields' entry keys. */
  private readonly hashes = new Map<string, Set<string>>()
  /** A tag's key to the keys filed under it, and a key to its tags' keys: one goes with the other. */
  private readonly tags = new Map<string, Set<string>>()
  private readonly tagsOf = new Map<string, Set<string>>()
  /** By key, oldest first (a new window goes to the end), so that the cap drops the oldest. */
  private readonly windows = new Map<string, Window>()
  private readonly layout: KeyLayout
  private readonly stats: Statistics
  private readonly sweeper: NodeJS.Timeout
  /** Bytes the indexes are charged (within `segments.bytes`). */
  indexBytes = 0
  /** Entries read synchronously (values only, not a hash's fields). */
  readonly nearby: SyncReader

  constructor (layout: KeyLayout, bounds: MemoryStoreBounds, stats: Statistics) {
    this.layout = layout
    this.stats = stats
    this.segments = this.nearby = new SegmentMemory(bounds, stats, (entry) => this.removed(entry))
    // Expired entries are dropped on access; the sweep keeps unread ones from holding memory.
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS).unref()
  }

  /** Entries, the bytes held (segments, entries' objects, indexes) and the bounds. */
  describe (): ReturnType<SegmentMemory['describe']> {
    return this.segments.describe()
  }

  async get (key: string, field?: string): Promise<Buffer | null> {
    return this.segments.get(field === undefined ? key : fieldKey(key, field)) ?? null
  }

  /** A plain read: one process has no lock to take. */
  readOrClaim (key: string, field: string | undefined): Promise<ClaimedRead> {
    return this.get(key, field).then(unclaimed)
  }

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<boolean> {
    const expiresAt = Date.now() + ttl * 1000
    const present = field === undefined ? this.setValue(key, value, expiresAt) : this.setField(key, field, value, expiresAt)
    // Tags belong to the key, as in Redis: those of earlier writes stay while the key does.
    if (present) this.file(key, tags)
    else this.forget(key)
    return true
  }

  async delete (keys: readonly string[]): Promise<number> {
    let removed = 0
    for (const key of keys) if (this.drop(key)) removed++
    return removed
  }

  async exists (keys: readonly string[]): Promise<number> {
    let present = 0
    for (const key of keys) if (this.expiryOf(key) !== undefined) present++
    return present
  }

  async expire (key: string, seconds: number): Promise<boolean> {
    const expiresAt = Date.now() + seconds * 1000
    const fields = this.hashes.get(key)
    if (fields === undefined) return this.segments.expire(key, expiresAt)
    let present = false
    for (const entry of fields) if (this.segments.expire(entry, expiresAt)) present = true
    return present
  }

  async ttl (key: string): Promise<number> {
    const expiresAt = this.expiryOf(key)
    if (expiresAt === undefined) return -2
    return Math.max(0, Math.round((expiresAt - Date.now()) / 1000))
  }

  async clear (namespace?: string): Promise<number> {
    const start = namespace === undefined ? `${this.layout.prefix}:` : this.layout.entry('', namespace)
    let removed = 0
    // Hashes first: their fields' entries are under the same start, and counted with them.
    for (const key of this.hashes.keys()) if (key.startsWith(start) && this.drop(key)) removed++
    for (const key of this.segments.keys()) if (key.startsWith(start) && this.drop(key)) removed++
    if (namespace === undefined) {
      // The tag sets live under the prefix: keys outside it lose their tags too, as in Redis.
      for (const key of this.tagsOf.keys()) this.forget(key)
      this.windows.clear()
    }
    return removed
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const keys = new Set<string>()
    for (const tag of tags) for (const key of this.tags.get(this.layout.tag(tag)) ?? []) keys.add(key)
    const list = [...keys]
    // Removing a key takes it out of all its tags' sets; the emptied sets go.
    return { removed: await this.delete(list), keys: list }
  }

  async hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    const key = this.layout.rateLimit(id)
    const now = Date.now()
    let window = this.windows.get(key)
    if (window === undefined || window.expiresAt <= now) {
      if (window !== undefined) this.windows.delete(key)
      else if (this.windows.size >= MAX_WINDOWS) this.windows.delete(this.windows.keys().next().value as string)
      window = { count: 0, expiresAt: now + windowSeconds * 1000 }
      this.windows.set(key, window)
    }
    window.count++
    return { count: window.count, resetMs: window.expiresAt - now }
  }

  async ping (): Promise<void> {}

  async info (): Promise<CacheInfo> {
    return { ...unknownInfo('memory'), usedMemory: this.segments.bytes }
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    this.segments.clear()
    this.hashes.clear()
    this.tags.clear()
    this.tagsOf.clear()
    this.windows.clear()
    this.indexBytes = 0
  }

  /** Drops expired entries (and their keys' index records) and ended windows. */
  sweep (): void {
    this.segments.purgeExpired()
    const now = Date.now()
    for (const [key, window] of this.windows) if (window.expiresAt <= now) this.windows.delete(key)
  }

  /** A plain value replaces a hash at its key. */
  private setValue (key: string, value: Buffer, expiresAt: number): boolean {
    this.dropFields(key)
    return this.keep(key, value, expiresAt)
  }

  /**
   * A field replaces a plain value at its key, and the hash lives as long as its longest-lived
   * field: all its fields share one expiry, which a longer-lived field extends.
   */
  private setField (key: string, field: string, value: Buffer, expiresAt: number): boolean {
    this.segments.delete(key)
    const current = this.expiryOf(key)
    const until = Math.max(expiresAt, current ?? 0)
    const entry = fieldKey(key, field)
    // Registered before it is written, so that the eviction its write causes, were it to take
    // the hash's other fields, does not take the key (and its tags) with them.
    const fields = this.fieldsOf(key)
    if (!fields.has(entry)) {
      fields.add(entry)
      this.charge(FIELD_BYTES)
    }
    if (!this.keep(entry, value, until)) this.removed(entry)
    const present = this.hashes.get(key)
    if (present !== undefined && current !== undefined && until > current) {
      for (const other of present) this.segments.expire(other, until)
    }
    return present !== undefined
  }

  /** Writes an entry's bytes; one too large to be kept at all counts as evicted. */
  private keep (entry: string, value: Buffer, expiresAt: number): boolean {
    if (this.segments.put(entry, value, expiresAt)) return true
    if (!this.segments.fits(entry, value.length)) this.stats.evictions++
    return false
  }

  private fieldsOf (key: string): Set<string> {
    let fields = this.hashes.get(key)
    if (fields === undefined) {
      fields = new Set()
      this.hashes.set(key, fields)
      this.charge(hashCost(key))
    }
    return fields
  }

  /** Files a present key under its tags (the indexes grown may evict, that key included). */
  private file (key: string, tags: readonly string[]): void {
    let cost = 0
    for (const tag of tags) {
      const tagKey = this.layout.tag(tag)
      let members = this.tags.get(tagKey)
      if (members === undefined) {
        members = new Set()
        this.tags.set(tagKey, members)
        cost += tagSetCost(tagKey)
      }
      if (members.has(key)) continue
      members.add(key)
      let own = this.tagsOf.get(key)
      if (own === undefined) {
        own = new Set()
        this.tagsOf.set(key, own)
        cost += TAGGED_KEY_BYTES
      }
      own.add(tagKey)
      cost += MEMBER_BYTES
    }
    this.charge(cost)
    this.segments.trim()
  }

  /** When the key expires, a value or a hash; undefined when absent. Expired entries go on the way. */
  private expiryOf (key: string): number | undefined {
    const fields = this.hashes.get(key)
    if (fields === undefined) return this.segments.expiresAt(key)
    // Its fields share one expiry: the first one present tells.
    for (const entry of fields) {
      const expiresAt = this.segments.expiresAt(entry)
      if (expiresAt !== undefined) return expiresAt
    }
    return undefined
  }

  /** Removes a key, a value or a hash, and its tags; true when it was present. */
  private drop (key: string): boolean {
    const present = this.expiryOf(key) !== undefined
    this.segments.delete(key)
    this.dropFields(key)
    this.forget(key)
    return present
  }

  private dropFields (key: string): void {
    const fields = this.hashes.get(key)
    if (fields === undefined) return
    this.hashes.delete(key)
    for (const entry of fields) this.segments.delete(entry)
    this.charge(-(hashCost(key) + fields.size * FIELD_BYTES))
  }

  /**
   * An entry the segment memory dropped by itself (evicted, or found expired), or one not kept:
   * a hash's field leaves the hash, and a key left with nothing leaves its tags. It only ever
   * gives bytes back and never removes entries, as the segment memory's listener must.
   */
  private removed (entry: string): void {
    const mark = entry.indexOf(FIELD_MARK)
    const key = mark === -1 ? entry : entry.slice(0, mark)
    const fields = this.hashes.get(key)
    if (fields === undefined || !fields.delete(entry)) {
      this.forget(entry)
      return
    }
    this.charge(-FIELD_BYTES)
    if (fields.size > 0) return
    this.dropFields(key)
    this.forget(key)
  }

  /** A key is gone: it leaves its tags' sets, and a set left empty goes. */
  private forget (key: string): void {
    const own = this.tagsOf.get(key)
    if (own === undefined) return
    this.tagsOf.delete(key)
    let cost = TAGGED_KEY_BYTES + own.size * MEMBER_BYTES
    for (const tagKey of own) {
      const members = this.tags.get(tagKey) as Set<string>
      members.delete(key)
      if (members.size === 0) {
        this.tags.delete(tagKey)
        cost += tagSetCost(tagKey)
      }
    }
    this.charge(-cost)
  }

  private charge (bytes: number): void {
    this.indexBytes += bytes
    this.segments.reserve(bytes)
  }
}

function fieldKey (key: string, field: string): string {
  return `${key}${FIELD_MARK}${field}`
}
