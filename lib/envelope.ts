// Stored bytes are an envelope whose header says how to read the rest back:
//
//   byte 0       magic: 0xC7, or 0xC8 for an entry with tags (anything else is foreign: a miss)
//   byte 1       encoding: 0 plain, 1 gzip
//   byte 2       kind: 0 a value (serializer output), 1 an HTTP response (route caching)
//   bytes 3-8    stored at, milliseconds since the epoch (uint48): when the work that made the
//                entry began, so an invalidation after that time covers it (see invalidation/),
//                and the response's age counts from the request, as RFC 9111 4.2.3 does
//   bytes 9-12   fresh for, seconds (uint32): entries kept past it are stale (RFC 5861)
//   0xC8 only:   bytes 13-14 the length of the tags (uint16), then each tag as a uint16 length
//                and its UTF-8 bytes: an entry carries its tags, so a tag's invalidation is
//                checked on every read, whatever became of the tag's index
//   then         payload: for a value, the serializer's bytes; for an HTTP response, an
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
const MAGIC_TAGGED = 0xc8
export const HEADER_BYTES = 13
const TAGS_LENGTH_BYTES = 2
export const ENCODING_PLAIN = 0
export const ENCODING_GZIP = 1
export const KIND_VALUE = 0
export const KIND_RESPONSE = 1

/** What an envelope carries: bytes, or a string stored as UTF-8 (a serialized value or body). */
export type Payload = Buffer | string

/** The bytes a payload takes in an envelope. */
export function byteLength (payload: Payload): number {
  return typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
}

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
  if (bytes.length < HEADER_BYTES) return false
  if (bytes[0] === MAGIC) return true
  return bytes[0] === MAGIC_TAGGED && bytes.length >= HEADER_BYTES + TAGS_LENGTH_BYTES &&
    bytes.length >= HEADER_BYTES + TAGS_LENGTH_BYTES + bytes.readUInt16BE(HEADER_BYTES)
}

/** Whether an envelope carries tags; the caller has checked `isEnvelope`. */
export function hasTags (bytes: Buffer): boolean {
  return bytes[0] === MAGIC_TAGGED
}

/** The tags an envelope carries; the caller has checked `isEnvelope` and `hasTags`. */
export function tagsOf (bytes: Buffer): string[] {
  const end = HEADER_BYTES + TAGS_LENGTH_BYTES + bytes.readUInt16BE(HEADER_BYTES)
  const tags: string[] = []
  let at = HEADER_BYTES + TAGS_LENGTH_BYTES
  while (at + 2 <= end) {
    const length = bytes.readUInt16BE(at)
    tags.push(bytes.toString('utf8', at + 2, Math.min(end, at + 2 + length)))
    at += 2 + length
  }
  return tags
}

/** The bytes an envelope's tags take, as `writeEnvelope` lays them out (validated: keys.ts). */
export function encodeTags (tags: readonly string[]): Buffer | undefined {
  if (tags.length === 0) return undefined
  const parts = tags.map((tag) => Buffer.from(tag, 'utf8'))
  let length = 0
  for (const part of parts) length += 2 + part.length
  const bytes = Buffer.allocUnsafe(TAGS_LENGTH_BYTES + length)
  bytes.writeUInt16BE(length, 0)
  let at = TAGS_LENGTH_BYTES
  for (const part of parts) {
    bytes.writeUInt16BE(part.length, at)
    part.copy(bytes, at + 2)
    at += 2 + part.length
  }
  return bytes
}

/** Where an envelope's payload begins; the caller made or checked it. */
export function payloadStart (bytes: Buffer): number {
  return bytes[0] === MAGIC_TAGGED ? HEADER_BYTES + TAGS_LENGTH_BYTES + bytes.readUInt16BE(HEADER_BYTES) : HEADER_BYTES
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

/**
 * Writes an envelope: the header, the tags (from `encodeTags`, when any), then `head` (stored as
 * is, when given), then `body`.
 */
export function writeEnvelope (encoding: number, kind: number, stamp: Stamp, body: Payload, head?: Buffer, tags?: Buffer): Buffer {
  const tagsLength = tags === undefined ? 0 : tags.length
  const headLength = head === undefined ? 0 : head.length
  const bytes = Buffer.allocUnsafe(HEADER_BYTES + tagsLength + headLength + byteLength(body))
  bytes[0] = tags === undefined ? MAGIC : MAGIC_TAGGED
  bytes[1] = encoding
  bytes[2] = kind
  bytes.writeUIntBE(stamp.storedAt, 3, 6)
  bytes.writeUInt32BE(Math.min(stamp.freshFor, 0xffffffff), 9)
  if (tags !== undefined) tags.copy(bytes, HEADER_BYTES)
  if (head !== undefined) head.copy(bytes, HEADER_BYTES + tagsLength)
  // A string is encoded straight into the envelope: no Buffer of its own, no second copy.
  if (typeof body === 'string') bytes.write(body, HEADER_BYTES + tagsLength + headLength)
  else body.copy(bytes, HEADER_BYTES + tagsLength + headLength)
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
    payload: bytes.subarray(payloadStart(bytes))
  }
}
