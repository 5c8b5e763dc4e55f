// A cached HTTP response as stored: the envelope of serializer.ts (kind KIND_RESPONSE) whose
// payload is
//
//   uint32       length of the head
//   head         latin1 text: the status on the first line, then one `name:value` line per
//                header value (header values cannot contain a newline, names no colon)
//   body         the exact body bytes, gzipped when the envelope says so
//
// The head stays uncompressed so a hit reads headers without touching the body.
import { createHash } from 'node:crypto'
import { CacheDeserializationError } from './errors'
import { Codec, type Envelope, KIND_RESPONSE } from './serializer'

export type ReplayHeaders = Record<string, string | string[]>

export interface HttpEntry {
  status: number
  headers: ReplayHeaders
  /** As stored: gzipped when `envelope.encoding` says so. */
  body: Buffer
  envelope: Envelope
}

// Never replayed from the cache: hop-by-hop headers, what Node computes per response, what is
// per client (cookies) and what the cache itself sets on every answer.
const NOT_REPLAYED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'set-cookie',
  'date',
  'age',
  'x-cache',
  'cache-status'
])

/** A strong validator from the body bytes: the same on every instance for the same bytes. */
export function strongEtag (body: Buffer): string {
  return `"${createHash('sha1').update(body).digest('base64url')}"`
}

/** The headers worth replaying, as the head of an entry. */
export function encodeHead (status: number, headers: Record<string, string | number | string[] | undefined>): Buffer {
  let text = String(status)
  for (const name of Object.keys(headers)) {
    if (NOT_REPLAYED.has(name)) continue
    const value = headers[name]
    if (value === undefined) continue
    if (Array.isArray(value)) {
      for (const item of value) text += `\n${name}:${item}`
    } else {
      text += `\n${name}:${value}`
    }
  }
  const head = Buffer.allocUnsafe(4 + Buffer.byteLength(text, 'latin1'))
  head.writeUInt32BE(head.length - 4, 0)
  head.write(text, 4, 'latin1')
  return head
}

export function decodeEntry (bytes: Buffer): HttpEntry {
  const envelope = Codec.open(bytes, KIND_RESPONSE)
  const payload = envelope.payload
  const headLength = payload.length >= 4 ? payload.readUInt32BE(0) : -1
  if (headLength < 0 || 4 + headLength > payload.length) {
    throw new CacheDeserializationError('Stored response entry is truncated')
  }
  const lines = payload.toString('latin1', 4, 4 + headLength).split('\n')
  const status = Number(lines[0])
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new CacheDeserializationError('Stored response entry has no valid status')
  }
  const headers: ReplayHeaders = {}
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':')
    if (colon <= 0) throw new CacheDeserializationError('Stored response entry has a malformed header')
    const name = lines[i].slice(0, colon)
    const value = lines[i].slice(colon + 1)
    const previous = headers[name]
    if (previous === undefined) headers[name] = value
    else if (Array.isArray(previous)) previous.push(value)
    else headers[name] = [previous, value]
  }
  return { status, headers, body: payload.subarray(4 + headLength), envelope }
}

/** RFC 9110 13.1.2: If-None-Match uses the weak comparison; `*` matches any current entry. */
export function etagMatches (ifNoneMatch: string, etag: string): boolean {
  if (ifNoneMatch.trim() === '*') return true
  const opaque = etag.startsWith('W/') ? etag.slice(2) : etag
  for (const candidate of ifNoneMatch.split(',')) {
    const tag = candidate.trim()
    if ((tag.startsWith('W/') ? tag.slice(2) : tag) === opaque) return true
  }
  return false
}
