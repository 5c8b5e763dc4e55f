// What the route cache and getOrSet decode from the bytes the local tier and the memory store
// hand out, kept on those Buffers themselves. Those layers hand out the same Buffer for as long
// as they keep an entry (local/segment-memory.ts), so the decoded form lives as long as the entry
// and no longer, with no bound of its own.
//
// A property rather than a WeakMap keyed by the Buffer: V8 marks a WeakMap's entries as
// ephemerons, and with 20,000 route entries held a forced full GC took 75 to 102 ms with them in
// WeakMaps, 40 to 73 ms with them on the Buffers.

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
