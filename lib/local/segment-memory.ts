// Bounded in-process memory for bytes, with CLOCK eviction (close to LRU) over a log of segments.
// Two users: the local tier (local/segment-cache.ts: our envelopes, for as long as they are
// fresh) and the memory store (stores/memory.ts: every entry when there is no Redis). Each entry
// has an expiry of its own, which its user sets; what the bytes mean is the user's business.
import type { Statistics } from '../statistics'

export interface SegmentBounds {
  maxEntries: number
  maxBytes: number
}

/**
 * Told of each entry that leaves by itself (evicted to stay within the bounds, or found expired),
 * not of those its user removes; it may give back reserved bytes, not add or remove entries.
 */
export type RemovalListener = (key: string) => void

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
  /** Entries in it: at 0 (and not the segment being filled) it is released. */
  live: number
  /** A view of it was handed out by `get`: only the GC can tell when nobody holds one any more. */
  exposed: boolean
}

// What a free slot holds, so that the slot arrays keep one type of element.
const NO_BYTES = Buffer.alloc(0)
const NO_SEGMENT: Segment = { slab: NO_BYTES, end: 0, live: 0, exposed: false }
const INITIAL_SLOTS = 64
/** No slot: the end of the eviction queue. */
const NONE = -1

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
 * (like Segcache): entries' bytes are appended to the current segment, and a queue of slots (a
 * doubly linked list in typed arrays) holds them in the order they were written in. A hit only
 * marks its entry; eviction takes the queue's head, re-queues a marked entry (copying its bytes
 * forward to the current segment) and drops an unmarked one, so the oldest segment empties and
 * is released whole. (Not a Map's head: V8 keeps deleted entries as holes that it walks past.)
 * `bytes` counts every allocated segment in full plus each entry's objects (plus what the user
 * reserves for its own indexes), so maxBytes bounds the memory held, not just the payloads.
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
export class SegmentMemory {
  /** Key to slot. */
  private readonly slots = new Map<string, number>()
  // By slot: key, view of the bytes (made once: every hit returns this object), segment, expiry
  // (ms), whether hit since last queued (spared once: the second chance), queue neighbours.
  private keyOf: string[] = []
  private views: Buffer[] = []
  private homes: Segment[] = []
  private expiry = new Float64Array(INITIAL_SLOTS)
  private marks = new Uint8Array(INITIAL_SLOTS)
  private before = new Int32Array(INITIAL_SLOTS)
  private after = new Int32Array(INITIAL_SLOTS)
  /** The eviction queue's oldest and newest slots. */
  private head = NONE; private tail = NONE
  /** Slots given back by removed entries, reused first. */
  private free: number[] = []
  private readonly bounds: SegmentBounds
  private readonly stats: Statistics
  private readonly onRemove: RemovalListener | undefined
  /** Bytes of a segment: maxBytes / 32 within [64 KiB, 4 MiB], at most maxBytes / 8. */
  readonly segmentSize: number
  /** The segment being filled; undefined before the first write and after clear(). */
  private current: Segment | undefined
  /** A released segment that was never exposed, counted in `bytes`, to be the next current one. */
  private spare: Segment | undefined
  private segmentCount = 0
  bytes = 0

  constructor (bounds: SegmentBounds, stats: Statistics, onRemove?: RemovalListener) {
    this.bounds = bounds
    this.stats = stats
    this.onRemove = onRemove
    this.segmentSize = segmentSizeFor(bounds.maxBytes)
  }

  describe (): { entries: number, bytes: number, maxEntries: number, maxBytes: number } {
    return { entries: this.slots.size, bytes: this.bytes, maxEntries: this.bounds.maxEntries, maxBytes: this.bounds.maxBytes }
  }

  /** Segments allocated and not yet released (the spare included). */
  get segments (): number {
    return this.segmentCount
  }

  /** The entry's bytes, a view of its segment; a hit, so the entry is spared at eviction. */
  get (key: string): Buffer | undefined {
    const slot = this.liveSlot(key)
    if (slot === undefined) return undefined
    this.marks[slot] = 1
    this.homes[slot].exposed = true
    return this.views[slot]
  }

  /** When a live entry expires (ms since the epoch); not a hit. */
  expiresAt (key: string): number | undefined {
    const slot = this.liveSlot(key)
    return slot === undefined ? undefined : this.expiry[slot]
  }

  /** Moves a live entry's expiry; false when there is no such entry. */
  expire (key: string, expiresAt: number): boolean {
    const slot = this.liveSlot(key)
    if (slot === undefined) return false
    this.expiry[slot] = expiresAt
    return true
  }

  /**
   * Whether an entry of `length` bytes can be kept at all: with nothing else kept, it needs its
   * objects, the segment being filled and the spare, and a segment of its own when it is larger
   * than a segment. Beyond maxBytes, eviction could not make room for it.
   */
  fits (key: string, length: number): boolean {
    const own = length > this.segmentSize ? length : 0
    return entryCost(key) + 2 * this.segmentSize + own <= this.bounds.maxBytes
  }

  /**
   * Copies `bytes` in, replacing the key's entry, until `expiresAt` (ms since the epoch), and
   * evicts what the bounds require. The old copy goes first, whether or not the new bytes are
   * kept: false when they are not (they do not fit, and nothing is evicted for them; or they were
   * evicted at once, as what the user reserves left no room).
   */
  put (key: string, bytes: Buffer, expiresAt: number): boolean {
    this.delete(key)
    if (!this.fits(key, bytes.length)) return false
    const slot = this.takeSlot()
    this.expiry[slot] = expiresAt
    this.marks[slot] = 0
    this.write(slot, bytes)
    this.slots.set(key, slot)
    this.keyOf[slot] = key
    this.enqueue(slot)
    this.bytes += entryCost(key)
    this.trim()
    return this.slots.has(key)
  }

  /** Removes the key's entry; true when there was one (expired or not). */
  delete (key: string): boolean {
    const slot = this.slots.get(key)
    if (slot === undefined) return false
    this.remove(key, slot)
    return true
  }

  deletePrefix (prefix: string): void {
    for (const [key, slot] of this.slots) if (key.startsWith(prefix)) this.remove(key, slot)
  }

  /** Every key held, expired ones not yet dropped included; entries may be deleted meanwhile. */
  keys (): MapIterator<string> {
    return this.slots.keys()
  }

  /**
   * Counts bytes the user keeps beside the entries (its own indexes) against maxBytes, or gives
   * them back (negative). It evicts nothing by itself: the next put, or trim(), makes room. What a
   * user reserves must go with its entries (through the listener), or eviction could not make room.
   */
  reserve (bytes: number): void {
    this.bytes += bytes
  }

  /** Drops every expired entry, telling the listener; none of them counts as an eviction. */
  purgeExpired (): void {
    const now = Date.now()
    for (const [key, slot] of this.slots) {
      if (this.expiry[slot] <= now) this.drop(key, slot)
    }
  }

  clear (): void {
    // Views handed out keep their slabs alive by themselves; the memory forgets all of them, and
    // what was reserved (the user clears its indexes with it).
    this.slots.clear()
    this.keyOf = []
    this.views = []
    this.homes = []
    this.expiry = new Float64Array(INITIAL_SLOTS)
    this.marks = new Uint8Array(INITIAL_SLOTS)
    this.before = new Int32Array(INITIAL_SLOTS)
    this.after = new Int32Array(INITIAL_SLOTS)
    this.head = this.tail = NONE
    this.free = []
    this.current = undefined
    this.spare = undefined
    this.segmentCount = 0
    this.bytes = 0
  }

  /**
   * CLOCK over the queue's head until within bounds. It ends: every turn evicts an entry or clears
   * the mark of one (only hits set marks), so each entry is copied forward at most once. And it
   * does not find the queue empty while over: with no entry, every segment but the current one and
   * the spare has been released, each of those is at most an eighth of maxBytes, and what the
   * user reserved went with its entries.
   */
  trim (): void {
    const now = Date.now()
    while (this.slots.size > 0 && (this.slots.size > this.bounds.maxEntries || this.bytes > this.bounds.maxBytes)) {
      const slot = this.head
      if (this.marks[slot] === 1 && this.expiry[slot] > now) {
        this.dequeue(slot)
        this.marks[slot] = 0
        const from = this.homes[slot]
        // Copied forward, so that the segment it was in can empty and be released; alone in a
        // segment of its own, it would only move to another slab its size.
        if (this.views[slot].length <= this.segmentSize) {
          this.write(slot, this.views[slot])
          this.leave(from)
        }
        this.enqueue(slot)
      } else {
        // An expired entry was due to go anyway: not an eviction.
        if (this.expiry[slot] > now) this.stats.evictions++
        this.drop(this.keyOf[slot], slot)
      }
    }
  }

  /** The slot of a live entry; an expired one is dropped on the way. */
  private liveSlot (key: string): number | undefined {
    const slot = this.slots.get(key)
    if (slot === undefined) return undefined
    if (this.expiry[slot] <= Date.now()) {
      this.drop(key, slot)
      return undefined
    }
    return slot
  }

  /** Removes an entry that leaves by itself, and tells the listener. */
  private drop (key: string, slot: number): void {
    this.remove(key, slot)
    this.onRemove?.(key)
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
      if (segment !== undefined && segment.live === 0) this.release(segment)
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

  /** Takes an entry out of the Map and the queue, and frees its slot. */
  private remove (key: string, slot: number): void {
    this.slots.delete(key)
    this.dequeue(slot)
    this.bytes -= entryCost(key)
    this.leave(this.homes[slot])
    this.keyOf[slot] = ''
    this.views[slot] = NO_BYTES
    this.homes[slot] = NO_SEGMENT
    this.free.push(slot)
  }

  private takeSlot (): number {
    const reused = this.free.pop()
    if (reused !== undefined) return reused
    const slot = this.views.length
    this.keyOf.push('')
    this.views.push(NO_BYTES)
    this.homes.push(NO_SEGMENT)
    if (slot === this.expiry.length) {
      // Doubled, though never past what the bounds can use: maxEntries, and one more while a
      // put evicts.
      const length = Math.max(slot + 1, Math.min(slot * 2, this.bounds.maxEntries + 1))
      this.expiry = grown(this.expiry, new Float64Array(length))
      this.marks = grown(this.marks, new Uint8Array(length))
      this.before = grown(this.before, new Int32Array(length))
      this.after = grown(this.after, new Int32Array(length))
    }
    return slot
  }

  /** Puts a slot at the end of the eviction queue. */
  private enqueue (slot: number): void {
    this.before[slot] = this.tail
    this.after[slot] = NONE
    if (this.tail === NONE) this.head = slot
    else this.after[this.tail] = slot
    this.tail = slot
  }

  /** Takes a slot out of the eviction queue, wherever it is. */
  private dequeue (slot: number): void {
    const before = this.before[slot]
    const after = this.after[slot]
    if (before === NONE) this.head = after
    else this.after[before] = after
    if (after === NONE) this.tail = before
    else this.before[after] = before
  }

  /** One entry fewer in `segment`; an empty segment that is not being filled is released. */
  private leave (segment: Segment): void {
    segment.live--
    if (segment.live === 0 && segment !== this.current) this.release(segment)
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
  private release (segment: Segment): void {
    // No view of it was handed out, so nobody can see its bytes change: written again from the
    // start as the next segment. (The memory's own views of it went with its entries.)
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

/** `into` (larger) with `from`'s elements first. */
function grown<T extends Float64Array | Uint8Array | Int32Array> (from: T, into: T): T {
  into.set(from)
  return into
}

function entryCost (key: string): number {
  return key.length * 2 + ENTRY_OVERHEAD_BYTES
}

/** maxBytes / 32 within [64 KiB, 4 MiB], and at most an eighth of maxBytes for small memories. */
function segmentSizeFor (maxBytes: number): number {
  const size = Math.min(MAX_SEGMENT_BYTES, Math.max(MIN_SEGMENT_BYTES, Math.floor(maxBytes / 32)))
  return Math.max(1, Math.min(size, Math.floor(maxBytes / 8)))
}
