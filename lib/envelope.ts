// Stored bytes are an envelope whose header says how to read the rest back:
//
//   byte 0       magic 0xC7 (anything else is foreign bytes: a miss)
//   byte 1       encoding: 0 plain, 1 gzip
//   byte 2       kind: 0 a value (serializer output), 1 an HTTP response (route caching)
//   bytes 3-8    stored at, milliseconds since the epoch (uint48)
//   bytes 9-12   fresh for, seconds (uint32): entries kept past it are stale (RFC 5861)
//   bytes 13-    payload: for a value, the serializer's bytes; for an HTTP response, an
//                uncompressed head (status and headers, see route-cache/http-entry.ts) and then
//                the body
//
// The encoding byte applies to the value, or to the response body only: a gzipped body can be
// sent to clients as it is stored, and its headers read without decompressing anything.
//
// Binary-safe, never base64. The timestamps serve `Age` and stale serving without a second
// Redis key. This file is the only one that knows where the header's fields are.
import { CacheDeserializationError } from './errors'

export const MAGIC = 0xc7
export const HEADER_BYTES = 13
export const ENCODING_PLAIN = 0
export const ENCODING_GZIP = 1
export const KIND_VALUE = 0
export const KIND_RESPONSE = 1

/** When an entry was stored (ms since the epoch) and for how many seconds it is fresh. */
export interface Stamp {
  storedAt: number
  freshFor: number
}

export interface Envelope extends Stamp {
  encoding: number
  kind: number
  /** The payload as stored (still gzipped when `encoding` is gzip). */
  payload: Buffer
}

/** Whether bytes are one of our envelopes (and long enough to hold its header). */
export function isEnvelope (bytes: Buffer): boolean {
  return bytes.length >= HEADER_BYTES && bytes[0] === MAGIC
}

/** Whether an envelope's payload (or response body) is gzipped; the caller made or checked it. */
export function isGzipped (bytes: Buffer): boolean {
  return bytes[1] === ENCODING_GZIP
}

/** The stored-at time of an envelope; the caller has checked `isEnvelope`. */
export function storedAtOf (bytes: Buffer): number {
  return bytes.readUIntBE(3, 6)
}

/** The stamp of an envelope; the caller has checked `isEnvelope`. */
export function stampOf (bytes: Buffer): Stamp {
  return { storedAt: bytes.readUIntBE(3, 6), freshFor: bytes.readUInt32BE(9) }
}

/** When an envelope stops being fresh (ms since the epoch); the caller has checked `isEnvelope`. */
export function freshUntilOf (bytes: Buffer): number {
  return bytes.readUIntBE(3, 6) + bytes.readUInt32BE(9) * 1000
}

/** Writes an envelope: the header, then `head` (stored as is, when given), then `body`. */
export function writeEnvelope (encoding: number, kind: number, stamp: Stamp, body: Buffer, head?: Buffer): Buffer {
  const headLength = head === undefined ? 0 : head.length
  const bytes = Buffer.allocUnsafe(HEADER_BYTES + headLength + body.length)
  bytes[0] = MAGIC
  bytes[1] = encoding
  bytes[2] = kind
  bytes.writeUIntBE(stamp.storedAt, 3, 6)
  bytes.writeUInt32BE(Math.min(stamp.freshFor, 0xffffffff), 9)
  if (head !== undefined) head.copy(bytes, HEADER_BYTES)
  body.copy(bytes, HEADER_BYTES + headLength)
  return bytes
}

/** Reads an envelope's header; throws CacheDeserializationError on foreign or truncated bytes. */
export function openEnvelope (bytes: Buffer, expectedKind: number): Envelope {
  if (!isEnvelope(bytes)) {
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
