// Decoded heads and gunzipped bodies of recently hit entries, kept per process so that hits of
// an entry that has not changed skip that work.
import { ENCODING_GZIP } from '../envelope'
import { Codec } from '../serializer'
import type { HttpEntry } from './http-entry'

/**
 * What an entry costs besides its bodies: the decoded head (status, header names and values),
 * the envelope and the map's slot, about this many bytes, plus its key.
 */
export const ENTRY_OVERHEAD = 512
/**
 * Gunzipped bodies kept on entries the local tier or the memory store holds, at most: they are
 * bounded by those layers' entries, not by this memo's bytes.
 */
const NEARBY_PLAIN_MAX = 16 * 1024

const NO_BYTES = Buffer.alloc(0)

/**
 * Decoded entries by key, for the version last read, so a hit of an unchanged entry skips
 * decoding its head (and gunzipping its body). For a plain entry only the head is kept, and a
 * read whose bytes begin with the same head (the envelope's header with its stored-at time,
 * tags, status and headers, ETag included) gets it with the body of the bytes just read: no
 * copy of bodies, so many more entries fit. A gzipped entry is kept whole, with its gunzipped
 * body once a client needed it. Bounded in bytes, each entry counted with its overhead; those
 * not hit since they were last passed over go first (CLOCK, close to least recently hit).
 */
export class DecodedEntries {
  /** By key: a gzipped entry as decoded, or a plain one's head with `stored` its head bytes. */
  private readonly entries = new Map<string, HttpEntry>()
  /** Where trim got to in `entries`: the oldest not passed over since. */
  private hand: MapIterator<[string, HttpEntry]> | undefined
  private readonly maxBytes: number
  private bytes = 0

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** The decoded entry when `bytes` are the version already decoded for `key`. */
  get (key: string, bytes: Buffer): HttpEntry | undefined {
    const kept = this.entries.get(key)
    if (kept === undefined) return undefined
    const head = kept.stored
    if (kept.envelope.encoding === ENCODING_GZIP) {
      // The whole bytes compared: two versions written in one millisecond can be the same size.
      if (!head.equals(bytes)) return undefined
    } else if (bytes.length < head.length || bytes.compare(head, 0, head.length, 0, head.length) !== 0) {
      return undefined
    }
    // Marked only: trim gives a marked entry a second chance (CLOCK), so a hit moves nothing.
    kept.hit = true
    if (kept.envelope.encoding === ENCODING_GZIP) return kept
    // The fields decodeEntry sets, in its order: one object shape for every entry.
    return { status: kept.status, headers: kept.headers, headerNames: kept.headerNames, body: bytes.subarray(head.length), envelope: kept.envelope, policy: kept.policy, stored: bytes }
  }

  remember (key: string, entry: HttpEntry): void {
    this.forget(key)
    // A copy of what is kept, and nothing else of the bytes read: a reply from ioredis is a slice
    // of a large read buffer. Body and payload are the tails of the stored bytes.
    const { stored, body, envelope } = entry
    let kept: HttpEntry
    if (envelope.encoding === ENCODING_GZIP) {
      const copy = Buffer.from(stored)
      kept = entry
      kept.stored = copy
      kept.body = copy.subarray(copy.length - body.length)
      kept.envelope = { ...envelope, payload: copy.subarray(copy.length - envelope.payload.length) }
    } else {
      kept = { ...entry, body: NO_BYTES, stored: Buffer.from(stored.subarray(0, stored.length - body.length)), envelope: { ...envelope, payload: NO_BYTES } }
    }
    this.entries.set(key, kept)
    this.bytes += cost(key, kept)
    this.trim()
  }

  /**
   * The entry's body gunzipped, kept for the next client that does not take gzip: counted here
   * when the entry is, kept on an entry of a layer in this process (`nearby`) only when small.
   */
  plainBody (key: string, entry: HttpEntry, nearby: boolean): Buffer {
    if (entry.plain === undefined) {
      const plain = Codec.plain(entry.envelope, entry.body)
      if (nearby && plain.length > NEARBY_PLAIN_MAX) return plain
      entry.plain = plain
      if (this.entries.get(key) === entry) {
        this.bytes += entry.plain.length
        this.trim()
      }
    }
    return entry.plain
  }

  forget (key: string): void {
    const entry = this.entries.get(key)
    if (entry === undefined) return
    this.entries.delete(key)
    this.bytes -= cost(key, entry) + (entry.plain?.length ?? 0)
  }

  private trim (): void {
    while (this.bytes > this.maxBytes) {
      // CLOCK's hand, kept across calls: a walk begun at the Map's head would step over every
      // entry removed before it (V8 keeps them as holes until the table is rebuilt).
      let next = this.hand?.next()
      if (next === undefined || next.done === true) {
        this.hand = this.entries.entries()
        next = this.hand.next()
      }
      const [key, entry] = next.value as [string, HttpEntry]
      if (entry.hit === true) {
        entry.hit = false
        this.entries.delete(key)
        this.entries.set(key, entry)
      } else {
        this.forget(key)
      }
    }
  }
}

function cost (key: string, entry: HttpEntry): number {
  return ENTRY_OVERHEAD + key.length + entry.stored.length
}
