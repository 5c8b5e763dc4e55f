// Decoded heads and gunzipped bodies of recently hit entries, kept per process so that hits of
// an entry that has not changed skip that work.
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

/**
 * Decoded entries by key, for the version last read (the same bytes), so a hit of an
 * unchanged entry skips decoding its head and gunzipping its body. Bounded in bytes, each entry
 * counted with its overhead, so many small entries fit as well as a few large ones; those not
 * hit since they were last passed over go first (CLOCK, close to least recently hit).
 */
export class DecodedEntries {
  private readonly entries = new Map<string, HttpEntry>()
  private readonly maxBytes: number
  private bytes = 0

  constructor (maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** The decoded entry when `bytes` are the version already decoded for `key`. */
  get (key: string, bytes: Buffer): HttpEntry | undefined {
    const entry = this.entries.get(key)
    // The whole bytes compared: two versions written in the same millisecond can be the same size.
    if (entry === undefined || (entry.stored !== bytes && !entry.stored.equals(bytes))) return undefined
    // Marked only: trim gives a marked entry a second chance (CLOCK), so a hit moves nothing.
    entry.hit = true
    return entry
  }

  remember (key: string, entry: HttpEntry): void {
    this.forget(key)
    // Its own copy of the stored bytes, and nothing else kept: a reply from ioredis is a slice of
    // a large read buffer, a local-tier entry a view of a whole segment. Body and payload are
    // the tails of the stored bytes.
    const stored = Buffer.from(entry.stored)
    entry.stored = stored
    entry.body = stored.subarray(stored.length - entry.body.length)
    entry.envelope = { ...entry.envelope, payload: stored.subarray(stored.length - entry.envelope.payload.length) }
    this.entries.set(key, entry)
    this.bytes += cost(key, entry)
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
      const [key, entry] = this.entries.entries().next().value as [string, HttpEntry]
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
