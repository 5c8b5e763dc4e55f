// What the route cache and getOrSet decode from the bytes the local tier and the memory store
// hand out, kept on those Buffers themselves. Those layers hand out the same Buffer for as long
// as they keep an entry (local/segment-memory.ts), so the decoded form lives as long as the entry
// and no longer, with no bound of its own.
//
// A property rather than a WeakMap keyed by the Buffer: V8 marks a WeakMap's entries as
// ephemerons, and with tens of thousands of them the atomic pause of every full GC grew by tens
// of milliseconds (mark.ephemeron.marking: 41 of a 60 ms pause with 20,000 route entries).

/** A slot on a Buffer for one kind of decoded form. */
export interface Attachment<T> {
  get (bytes: Buffer): T | undefined
  set (bytes: Buffer, value: T): void
}

export function attachment<T> (name: string): Attachment<T> {
  const slot = Symbol(name)
  return {
    get: (bytes) => (bytes as unknown as Record<symbol, T | undefined>)[slot],
    set: (bytes, value) => { (bytes as unknown as Record<symbol, T>)[slot] = value }
  }
}
