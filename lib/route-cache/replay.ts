// The HTTP side of route caching that needs no store: what may be stored, content coding, and
// the cache headers of an answer. Pure functions of their arguments (some memoize on the entry),
// testable without Redis.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CompiledRoute } from './compile'
import type { HttpEntry } from './http-entry'

export const CACHE_NAME = 'fastify-redis-cache'
export const COLLAPSED_STATUS = `${CACHE_NAME}; fwd=uri-miss; collapsed`

/**
 * The Cache-Status of a fresh hit with `ttl` seconds left. It changes once a second: made once
 * per second per entry, not per hit.
 */
export function hitStatus (entry: HttpEntry, ttl: number): string {
  if (entry.hitTtl !== ttl) {
    entry.hitTtl = ttl
    entry.hitStatus = `${CACHE_NAME}; hit; ttl=${ttl}`
  }
  return entry.hitStatus as string
}

/** The Age header of an entry, in whole seconds; likewise made once per second. */
export function ageOf (entry: HttpEntry, now: number): string {
  // The age it carried when stored plus its time here (RFC 9111 4.2.3).
  const age = (entry.policy?.age ?? 0) + Math.max(0, Math.floor((now - entry.envelope.storedAt) / 1000))
  if (entry.ageSeconds !== age) {
    entry.ageSeconds = age
    entry.age = String(age)
  }
  return entry.age as string
}

/** Why a response must not be stored, or null when it may be. */
export function unstorable (route: CompiledRoute, reply: FastifyReply, payload: unknown): string | null {
  if (!route.statuses.has(reply.statusCode)) return 'status'
  if (payload !== null && payload !== undefined && typeof payload !== 'string' && !Buffer.isBuffer(payload)) return 'stream'
  if (reply.hasHeader('set-cookie')) return 'set-cookie'
  const cacheControl = reply.getHeader('cache-control')
  if (cacheControl !== undefined && /(?:^|[,\s])(?:no-store|private|no-cache)\b/i.test(String(cacheControl))) return 'cache-control'
  const vary = reply.getHeader('vary')
  if (vary !== undefined) {
    for (const name of String(vary).split(',')) {
      const header = name.trim().toLowerCase()
      if (header === '*') return 'vary'
      // The entry may only vary on what its key includes. Accept-Encoding is the cache's own
      // business, unless the handler negotiated a content coding itself.
      if (header === '' || route.vary.includes(header)) continue
      if (header !== 'accept-encoding' || reply.hasHeader('content-encoding')) return 'vary'
    }
  }
  return null
}

/**
 * An answer to a request with credentials is never `public`, whoever made the header (the
 * route's maxAge for an anonymous request that filled the entry, or the handler): a CDN would
 * keep it for everyone.
 */
export function keepPrivate (request: FastifyRequest, reply: FastifyReply): void {
  if (request.headers.authorization === undefined && request.headers.cookie === undefined) return
  const cacheControl = reply.getHeader('cache-control')
  if (cacheControl !== undefined && /\bpublic\b/i.test(String(cacheControl))) {
    reply.header('cache-control', String(cacheControl).replace(/\bpublic\b/gi, 'private'))
  }
}

const GZIP_LISTED = /(?:^|,)[ \t]*(?:x-gzip|gzip|\*)[ \t]*(?:,|$)/i

/** Whether Accept-Encoding allows gzip: an explicit `gzip` (or `x-gzip`) entry wins over `*`. */
export function acceptsGzip (acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined) return false
  // Without q-values (the common header), any listed gzip, x-gzip or * accepts it: no parsing.
  if (!acceptEncoding.includes(';')) return GZIP_LISTED.test(acceptEncoding)
  let wildcard = false
  for (const part of acceptEncoding.split(',')) {
    const [coding, ...params] = part.split(';')
    const name = coding.trim().toLowerCase()
    if (name !== 'gzip' && name !== 'x-gzip' && name !== '*') continue
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='))
    const accepted = q === undefined || Number(q.slice(2)) > 0
    if (name !== '*') return accepted
    wildcard = accepted
  }
  return wildcard
}

export function appendVary (existing: string | string[] | undefined, header: string): string {
  const current = existing === undefined ? '' : String(existing)
  if (current.toLowerCase().split(',').some((name) => name.trim() === header)) return current
  return current === '' ? header : `${current}, ${header}`
}
