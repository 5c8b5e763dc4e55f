// A cached HTTP response as stored: the envelope of envelope.ts (kind KIND_RESPONSE) whose
// payload is
//
//   uint32       length of the head
//   head         latin1 text: the status on the first line (followed, for some entries, by a
//                space and the entry's policy as JSON, see entry-policy.ts), then one
//                `name:value` line per header value (header values cannot contain a newline,
//                names no colon)
//   body         the exact body bytes, gzipped when the envelope says so
//
// The head stays uncompressed so a hit reads headers without touching the body.
import { hash } from 'node:crypto'
import { validateHeaderName, validateHeaderValue } from 'node:http'
import type { FastifyRequest } from 'fastify'
import { type Envelope, KIND_RESPONSE, openEnvelope, type Payload } from '../envelope'
import { CacheDeserializationError, CacheSerializationError } from '../errors'
import { decodePolicy, type EntryPolicy } from './entry-policy'

export type ReplayHeaders = Record<string, string | string[]>

export interface HttpEntry {
  status: number
  headers: ReplayHeaders
  /** The names in `headers`, listed once. */
  headerNames: string[]
  /** As stored: gzipped when `envelope.encoding` says so. */
  body: Buffer
  envelope: Envelope
  /** Age carried, own stale windows, variant, validators; undefined for the plain case. */
  policy: EntryPolicy | undefined
  /** The stored bytes it was decoded from: `body` and `envelope.payload` are views of them. */
  stored: Buffer
  /** The body gunzipped, once some client needed it so. */
  plain?: Buffer
  /** Hit since the memo last passed it over (decoded-entries.ts). */
  hit?: boolean
  /** For a gzipped body: its Vary (with Accept-Encoding) and the ETag of the gzip coding. */
  gzipVary?: string
  gzipEtag?: string
  /** Header values of hits that change once a second, with the second they were made for. */
  hitTtl?: number
  hitStatus?: string
  ageSeconds?: number
  age?: string
}

// Never replayed from the cache: hop-by-hop headers and those a shared cache must not store
// (RFC 9111 3.1), what Node computes per response, what is per client (cookies) and what the
// cache itself sets on every answer. Date is stored and sent as stored (RFC 9111 4).
const NOT_REPLAYED = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authentication-info',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'content-length',
  'set-cookie',
  'age',
  'x-cache',
  'cache-status'
])

// What Node accepts as a header name (an RFC 9110 token) and as a header value.
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/

/** A strong validator from the body bytes: the same on every instance for the same bytes. */
export function strongEtag (body: Payload): string {
  return `"${hash('sha1', body, 'base64url')}"`
}

/**
 * The headers worth replaying, as the head of an entry. Throws CacheSerializationError on a name
 * or value Node would refuse to send: a line break in one would otherwise come back from the
 * cache as an extra header (say, a Set-Cookie) that Node never let through.
 */
export function encodeHead (status: number, headers: Record<string, string | number | string[] | undefined>, policy = ''): Buffer {
  let text = String(status) + policy
  const hopByHop = connectionOptions(headers.connection)
  for (const name of Object.keys(headers)) {
    if (NOT_REPLAYED.has(name) || hopByHop?.has(name) === true) continue
    const value = headers[name]
    if (value === undefined) continue
    for (const item of Array.isArray(value) ? value : [value]) {
      try {
        validateHeaderName(name)
        validateHeaderValue(name, String(item))
      } catch (err) {
        throw new CacheSerializationError(`Response header ${JSON.stringify(name)} cannot be stored: ${(err as Error).message}`, { cause: err })
      }
      text += `\n${name}:${item}`
    }
  }
  const head = Buffer.allocUnsafe(4 + Buffer.byteLength(text, 'latin1'))
  head.writeUInt32BE(head.length - 4, 0)
  head.write(text, 4, 'latin1')
  return head
}

/** The headers a response's Connection header names: hop-by-hop too (RFC 9110 7.6.1). */
function connectionOptions (connection: string | number | string[] | undefined): Set<string> | undefined {
  if (connection === undefined) return undefined
  return new Set(String(connection).split(',').map((name) => name.trim().toLowerCase()))
}

export function decodeEntry (bytes: Buffer): HttpEntry {
  const envelope = openEnvelope(bytes, KIND_RESPONSE)
  const payload = envelope.payload
  const headLength = payload.length >= 4 ? payload.readUInt32BE(0) : -1
  if (headLength < 0 || 4 + headLength > payload.length) {
    throw new CacheDeserializationError('Stored response entry is truncated')
  }
  const lines = payload.toString('latin1', 4, 4 + headLength).split('\n')
  const space = lines[0].indexOf(' ')
  const status = Number(space === -1 ? lines[0] : lines[0].slice(0, space))
  const policy = space === -1 ? undefined : decodePolicy(lines[0].slice(space + 1))
  if (space !== -1 && policy === undefined) throw new CacheDeserializationError('Stored response entry has a malformed policy')
  // Only final statuses are ever stored: a 1xx would leave the client waiting for another one.
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new CacheDeserializationError('Stored response entry has no valid status')
  }
  const headers: ReplayHeaders = {}
  for (let i = 1; i < lines.length; i++) {
    const colon = lines[i].indexOf(':')
    const name = lines[i].slice(0, colon)
    const value = lines[i].slice(colon + 1)
    // Forged or corrupt bytes: a name or value Node refuses would fail the reply with a 500, and
    // a header that is never stored (Transfer-Encoding, say) would break the response framing.
    if (colon <= 0 || !HEADER_NAME.test(name) || !HEADER_VALUE.test(value) || NOT_REPLAYED.has(name.toLowerCase())) {
      throw new CacheDeserializationError('Stored response entry has a malformed header')
    }
    const previous = headers[name]
    if (previous === undefined) headers[name] = value
    else if (Array.isArray(previous)) previous.push(value)
    else headers[name] = [previous, value]
  }
  return { status, headers, headerNames: Object.keys(headers), body: payload.subarray(4 + headLength), envelope, policy, stored: bytes }
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

/**
 * Whether a client's conditional request is answered with 304 (RFC 9110 13.2.2): If-None-Match
 * when it sent one, otherwise If-Modified-Since against Last-Modified (or, lacking one, the
 * response's Date, RFC 9111 4.3.2).
 */
export function notModified (request: FastifyRequest, etag: string | undefined, headers: ReplayHeaders | Record<string, unknown>): boolean {
  const ifNoneMatch = request.headers['if-none-match']
  if (ifNoneMatch !== undefined) return etag !== undefined && etagMatches(ifNoneMatch, etag)
  const ifModifiedSince = request.headers['if-modified-since']
  if (ifModifiedSince === undefined) return false
  const since = Date.parse(ifModifiedSince)
  const modified = Date.parse(String(headers['last-modified'] ?? headers.date))
  // A date later than the server's time is invalid (RFC 9110 13.1.3).
  return !Number.isNaN(since) && !Number.isNaN(modified) && modified <= since && since <= Date.now()
}
