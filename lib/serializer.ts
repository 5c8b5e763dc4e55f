// Values to stored bytes and back: the serializer (JSON by default, pluggable), gzip over a
// threshold, and the envelope (envelope.ts) that says how to read them back.
import { promisify } from 'node:util'
import { gunzipSync, gzip, gzipSync } from 'node:zlib'
import {
  CacheCompressionError,
  CacheDecompressionError,
  CacheSerializationError,
  CacheDeserializationError,
  notJson
} from './errors'
import { byteLength, ENCODING_GZIP, ENCODING_PLAIN, type Envelope, KIND_VALUE, openEnvelope, type Payload, type Stamp, writeEnvelope } from './envelope'
import type { Serializer } from '../types'

export const jsonSerializer: Serializer = {
  serialize (value: unknown): string {
    const text = JSON.stringify(value)
    // JSON.stringify answers undefined for functions and symbols: nothing to store.
    if (text === undefined) throw notJson(value)
    return text
  },
  deserialize (data: Buffer): unknown {
    return JSON.parse(data.toString('utf8'))
  }
}

export interface Compression {
  enabled: boolean
  threshold: number
  level: number
}

export interface EncodeResult {
  bytes: Buffer
  /** Size before compression when the payload was compressed, else 0. */
  uncompressedSize: number
}

// Payloads from this size on are gzipped off the event loop (a few hundred microseconds of work).
const ASYNC_GZIP_BYTES = 64 * 1024
const gzipAsync = promisify(gzip)

/** The envelope of a payload of `size` bytes, gzipped when `zipped` is given and smaller. */
function wrap (payload: Payload, zipped: Buffer | undefined, size: number, kind: number, stamp: Stamp, head: Buffer | undefined, tags: Buffer | undefined): EncodeResult {
  // Keep gzip only when it actually saves space (already-compressed data grows).
  if (zipped !== undefined && zipped.length < size) {
    return { bytes: writeEnvelope(ENCODING_GZIP, kind, stamp, zipped, head, tags), uncompressedSize: size }
  }
  return { bytes: writeEnvelope(ENCODING_PLAIN, kind, stamp, payload, head, tags), uncompressedSize: 0 }
}

function compressionFailed (err: unknown): CacheCompressionError {
  return new CacheCompressionError(`Cannot compress value: ${(err as Error).message}`, { cause: err })
}

export class Codec {
  readonly serializer: Serializer
  private readonly compression: Compression

  constructor (serializer: Serializer | undefined, compression: Compression) {
    this.serializer = serializer ?? jsonSerializer
    this.compression = compression
  }

  /** A string is kept as it is: the envelope encodes it in place. */
  serialize (value: unknown): Payload {
    let out: Buffer | string
    try {
      out = this.serializer.serialize(value)
    } catch (err) {
      throw new CacheSerializationError(`Cannot serialize value: ${(err as Error).message}`, { cause: err })
    }
    if (typeof out === 'string' || Buffer.isBuffer(out)) return out
    throw new CacheSerializationError(`Serializer returned ${typeof out}, expected a Buffer or a string`)
  }

  deserialize (payload: Buffer): unknown {
    try {
      return this.serializer.deserialize(payload)
    } catch (err) {
      throw new CacheDeserializationError(`Cannot deserialize stored value: ${(err as Error).message}`, { cause: err })
    }
  }

  /**
   * Wraps a payload in an envelope, gzipped when it is worth it and allowed. `head`, when given,
   * is stored uncompressed in front of the payload; `tags` (from `encodeTags`) before it.
   */
  encode (payload: Payload, kind: number, freshFor: number, compress: boolean | undefined, head?: Buffer, storedAt = Date.now(), tags?: Buffer): EncodeResult {
    const size = this.gzipSize(payload, compress)
    return wrap(payload, size > 0 ? this.gzip(payload) : undefined, size, kind, { storedAt, freshFor }, head, tags)
  }

  /**
   * `encode`, with large payloads gzipped on libuv's thread pool rather than on the event loop.
   * Smaller ones are encoded at once, in the same tick: a write that follows is queued ahead of
   * any later read.
   */
  encodeSoon (payload: Payload, kind: number, freshFor: number, compress: boolean | undefined, head: Buffer | undefined, storedAt: number, tags: Buffer | undefined): EncodeResult | Promise<EncodeResult> {
    const size = this.gzipSize(payload, compress)
    if (size < ASYNC_GZIP_BYTES) return wrap(payload, size > 0 ? this.gzip(payload) : undefined, size, kind, { storedAt, freshFor }, head, tags)
    return gzipAsync(payload, { level: this.compression.level }).then(
      (zipped) => wrap(payload, zipped, size, kind, { storedAt, freshFor }, head, tags),
      (err: unknown) => { throw compressionFailed(err) })
  }

  /**
   * The payload's size when it is to be gzipped (kept only when that saves space), else 0. A
   * string's UTF-8 length is a pass over it: counted only when compression is on the table.
   */
  private gzipSize (payload: Payload, compress: boolean | undefined): number {
    if (compress === false || !this.compression.enabled) return 0
    const size = byteLength(payload)
    return size >= this.compression.threshold ? size : 0
  }

  private gzip (payload: Payload): Buffer {
    try {
      return gzipSync(payload, { level: this.compression.level })
    } catch (err) {
      throw compressionFailed(err)
    }
  }

  /** The payload (or a part of it) with gzip undone. */
  static plain (envelope: Envelope, payload = envelope.payload): Buffer {
    if (envelope.encoding === ENCODING_PLAIN) return payload
    try {
      return gunzipSync(payload)
    } catch (err) {
      throw new CacheDecompressionError(`Cannot decompress stored entry: ${(err as Error).message}`, { cause: err })
    }
  }

  /** Envelope to value, for `get`. */
  decodeValue (bytes: Buffer): { value: unknown, envelope: Envelope } {
    const envelope = openEnvelope(bytes, KIND_VALUE)
    return { value: this.deserialize(Codec.plain(envelope)), envelope }
  }
}
