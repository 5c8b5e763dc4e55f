// Stored bytes are an envelope whose header says how to read the rest back:
//
//   byte 0       magic 0xC7 (anything else is foreign bytes: a miss)
//   byte 1       encoding: 0 plain, 1 gzip
//   byte 2       kind: 0 a value (serializer output), 1 an HTTP response (route caching)
//   bytes 3-8    stored at, milliseconds since the epoch (uint48)
//   bytes 9-12   fresh for, seconds (uint32): entries kept past it are stale (RFC 5861)
//   bytes 13-    payload: for a value, the serializer's bytes; for an HTTP response, an
//                uncompressed head (status and headers, see http-entry.ts) and then the body
//
// The encoding byte applies to the value, or to the response body only: a gzipped body can be
// sent to clients as it is stored, and its headers read without decompressing anything.
//
// Binary-safe, never base64. The timestamps serve `Age` and stale serving without a second
// Redis key.
import { gunzipSync, gzipSync } from 'node:zlib'
import {
  CacheCompressionError,
  CacheDecompressionError,
  CacheDeserializationError,
  CacheSerializationError
} from './errors'
import type { Serializer } from '../types'

export const MAGIC = 0xc7
export const HEADER_BYTES = 13
export const ENCODING_PLAIN = 0
export const ENCODING_GZIP = 1
export const KIND_VALUE = 0
export const KIND_RESPONSE = 1

export const jsonSerializer: Serializer = {
  serialize (value: unknown): string {
    const text = JSON.stringify(value)
    // JSON.stringify answers undefined for functions and symbols: nothing to store.
    if (text === undefined) throw new TypeError(`a ${typeof value} is not JSON`)
    return text
  },
  deserialize (data: Buffer): unknown {
    return JSON.parse(data.toString('utf8'))
  }
}

export interface Envelope {
  encoding: number
  kind: number
  storedAt: number
  freshFor: number
  /** The payload as stored (still gzipped when `encoding` is gzip). */
  payload: Buffer
}

/** Whether an entry is within its ttl, plus `grace` seconds. */
export function isFresh (envelope: Pick<Envelope, 'storedAt' | 'freshFor'>, grace = 0): boolean {
  return Date.now() < envelope.storedAt + (envelope.freshFor + grace) * 1000
}

/** Freshness read straight from stored bytes; foreign bytes are not fresh. */
export function isFreshBytes (bytes: Buffer): boolean {
  return bytes.length >= HEADER_BYTES && bytes[0] === MAGIC &&
    isFresh({ storedAt: bytes.readUIntBE(3, 6), freshFor: bytes.readUInt32BE(9) })
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

export class Codec {
  readonly serializer: Serializer
  private readonly compression: Compression

  constructor (serializer: Serializer | undefined, compression: Compression) {
    this.serializer = serializer ?? jsonSerializer
    this.compression = compression
  }

  serialize (value: unknown): Buffer {
    let out: Buffer | string
    try {
      out = this.serializer.serialize(value)
    } catch (err) {
      throw new CacheSerializationError(`Cannot serialize value: ${(err as Error).message}`, { cause: err })
    }
    if (typeof out === 'string') return Buffer.from(out, 'utf8')
    if (Buffer.isBuffer(out)) return out
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
   * is stored uncompressed in front of the payload.
   */
  encode (payload: Buffer, kind: number, freshFor: number, compress: boolean | undefined, head?: Buffer, storedAt = Date.now()): EncodeResult {
    let encoding = ENCODING_PLAIN
    let body = payload
    let uncompressedSize = 0
    if (compress !== false && this.compression.enabled && payload.length >= this.compression.threshold) {
      let zipped: Buffer
      try {
        zipped = gzipSync(payload, { level: this.compression.level })
      } catch (err) {
        throw new CacheCompressionError(`Cannot compress value: ${(err as Error).message}`, { cause: err })
      }
      // Keep gzip only when it actually saves space (already-compressed data grows).
      if (zipped.length < payload.length) {
        encoding = ENCODING_GZIP
        body = zipped
        uncompressedSize = payload.length
      }
    }
    const headLength = head === undefined ? 0 : head.length
    const bytes = Buffer.allocUnsafe(HEADER_BYTES + headLength + body.length)
    bytes[0] = MAGIC
    bytes[1] = encoding
    bytes[2] = kind
    bytes.writeUIntBE(storedAt, 3, 6)
    bytes.writeUInt32BE(Math.min(freshFor, 0xffffffff), 9)
    if (head !== undefined) head.copy(bytes, HEADER_BYTES)
    body.copy(bytes, HEADER_BYTES + headLength)
    return { bytes, uncompressedSize }
  }

  /** Reads an envelope's header; throws CacheDeserializationError on foreign or truncated bytes. */
  static open (bytes: Buffer, expectedKind: number): Envelope {
    if (bytes.length < HEADER_BYTES || bytes[0] !== MAGIC) {
      throw new CacheDeserializationError('Stored bytes are not a fastify-redis-cache entry')
    }
    const encoding = bytes[1]
    if (encoding !== ENCODING_PLAIN && encoding !== ENCODING_GZIP) {
      throw new CacheDeserializationError(`Stored entry has an unknown encoding ${encoding}`)
    }
    if (bytes[2] !== expectedKind) {
      throw new CacheDeserializationError(`Stored entry is of kind ${bytes[2]}, expected ${expectedKind}`)
    }
    return {
      encoding,
      kind: expectedKind,
      storedAt: bytes.readUIntBE(3, 6),
      freshFor: bytes.readUInt32BE(9),
      payload: bytes.subarray(HEADER_BYTES)
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
    const envelope = Codec.open(bytes, KIND_VALUE)
    return { value: this.deserialize(Codec.plain(envelope)), envelope }
  }
}
