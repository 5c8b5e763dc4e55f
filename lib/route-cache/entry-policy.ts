// What a stored response needs besides its status and headers to be served the way its origin
// asked: decided once when it is stored, kept in the entry's head, read back once when the head is
// decoded, so a hit parses no Cache-Control.
import type { FastifyReply, FastifyRequest } from 'fastify'
import { NO_STALE, type StaleWindows } from '../freshness'
import type { CompiledRoute } from './compile'
import { deltaSeconds, type Directives, parseAge, parseCacheControl, parseHttpDate, parseTargetedCacheControl } from './http-fields'

export interface EntryPolicy {
  /** Seconds of age the response carried when it was stored (its Age header, RFC 9111 4.2.3). */
  age: number
  /** Its own stale windows (freshness: 'response'); the route's when absent. */
  windows?: StaleWindows
  /** Request headers the response varies on, with the values it was stored for (null: absent). */
  vary?: Array<[string, string | null]>
  /** Its ETag came from the handler (not made by the cache), so it can revalidate the entry. */
  originEtag?: boolean
}

/** What storing a response comes to: why not, or for how long and with which policy. */
export type StorePlan =
  | { refusal: string }
  | { refusal: null, freshFor: number, keepFor: number, policy: EntryPolicy }

// Statuses a cache may give heuristic freshness (RFC 9110 15.1).
const HEURISTIC = new Set([200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501])
// Of RFC 9111 4.2.2's suggestion: a tenth of the time since Last-Modified.
const HEURISTIC_FRACTION = 0.1

/** The plan of a response on a route with the default `freshness: 'route'`: the route's ttl. */
export function routePlan (route: CompiledRoute, reply: FastifyReply, originEtag: boolean): StorePlan {
  const policy: EntryPolicy = { age: parseAge(reply.getHeader('age')) }
  if (originEtag) policy.originEtag = true
  return { refusal: null, freshFor: route.ttl, keepFor: route.keepFor, policy }
}

/**
 * The plan of a response on a route with `freshness: 'response'`: whether RFC 9111 section 3 lets
 * a shared cache store it, and for how long it is fresh (4.2.1): s-maxage, then max-age, then
 * Expires minus Date, then a heuristic (4.2.2), less the Age it carried; the route's ttl is the
 * ceiling.
 */
export function responsePlan (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, originEtag: boolean, now: number): StorePlan {
  const status = reply.statusCode
  if (status < 200 || status === 206 || status === 304 || status > 599) return { refusal: 'status' }
  // A CDN-Cache-Control (RFC 9213) speaks to caches like this one: it wins over Cache-Control.
  const targeted = parseTargetedCacheControl(reply.getHeader('cdn-cache-control'))
  const cc = targeted ?? parseCacheControl(reply.getHeader('cache-control'))
  if (cc.has('no-store') || cc.has('private')) return { refusal: 'cache-control' }
  if (reply.hasHeader('set-cookie')) return { refusal: 'set-cookie' }
  // RFC 9111 3.5: an answer to a request with Authorization only when the response allows it.
  if (request.headers.authorization !== undefined && !cc.has('public') && !cc.has('s-maxage') && !cc.has('must-revalidate')) return { refusal: 'authorization' }
  const vary = varyOf(reply.getHeader('vary'), request)
  if (vary === null) return { refusal: 'vary' }
  const explicit = explicitLifetime(cc, targeted === undefined ? reply : undefined, now)
  let lifetime: number
  if (explicit !== undefined) {
    lifetime = explicit
  } else if (HEURISTIC.has(status) || cc.has('public')) {
    lifetime = heuristicLifetime(reply, now)
  } else {
    return { refusal: 'status' }
  }
  if (cc.has('no-cache')) lifetime = 0
  const age = parseAge(reply.getHeader('age'))
  // The route's ttl bounds how long this cache serves it, not what it was given.
  const freshFor = Math.min(Math.max(0, lifetime - age), route.ttl)
  // Stale serving is forbidden by these (RFC 9111 4.2.4, 5.2.2.2, 5.2.2.8, 5.2.2.10).
  const strict = cc.has('must-revalidate') || cc.has('proxy-revalidate') || cc.has('s-maxage') || cc.has('no-cache')
  const windows = strict ? NO_STALE : ownWindows(cc, route.windows)
  const policy: EntryPolicy = { age, windows }
  if (vary.length > 0) policy.vary = vary
  if (originEtag) policy.originEtag = true
  // An entry past its freshness is still worth keeping while it can be revalidated.
  const hadValidator = originEtag || reply.hasHeader('last-modified')
  const keepFor = freshFor + Math.max(windows.staleWhileRevalidate, windows.staleIfError, hadValidator ? route.ttl : 0)
  if (keepFor === 0) return { refusal: 'freshness' }
  return { refusal: null, freshFor, keepFor, policy }
}

/** Explicit freshness (RFC 9111 4.2.1); Expires only counts without a targeted field (`reply`). */
function explicitLifetime (cc: Directives, reply: FastifyReply | undefined, now: number): number | undefined {
  const seconds = deltaSeconds(cc, 's-maxage') ?? deltaSeconds(cc, 'max-age')
  if (seconds !== undefined) return seconds
  const expiresHeader = reply?.getHeader('expires')
  if (expiresHeader === undefined) return undefined
  const expires = parseHttpDate(expiresHeader)
  // An Expires that is not a valid date means already expired (RFC 9111 5.3).
  if (expires === undefined) return 0
  const date = parseHttpDate((reply as FastifyReply).getHeader('date')) ?? now
  return Math.max(0, Math.floor((expires - date) / 1000))
}

function heuristicLifetime (reply: FastifyReply, now: number): number {
  const lastModified = parseHttpDate(reply.getHeader('last-modified'))
  if (lastModified === undefined) return 0
  const date = parseHttpDate(reply.getHeader('date')) ?? now
  return Math.max(0, Math.floor((date - lastModified) * HEURISTIC_FRACTION / 1000))
}

function ownWindows (cc: Directives, route: StaleWindows): StaleWindows {
  return {
    staleWhileRevalidate: deltaSeconds(cc, 'stale-while-revalidate') ?? route.staleWhileRevalidate,
    staleIfError: deltaSeconds(cc, 'stale-if-error') ?? route.staleIfError
  }
}

/** The request headers a response varies on, with this request's values; null for `Vary: *`. */
function varyOf (header: string | number | string[] | undefined, request: FastifyRequest): Array<[string, string | null]> | null {
  if (header === undefined) return []
  const vary: Array<[string, string | null]> = []
  for (const item of String(Array.isArray(header) ? header.join(',') : header).split(',')) {
    const name = item.trim().toLowerCase()
    if (name === '*') return null
    if (name === '' || vary.some(([seen]) => seen === name)) continue
    vary.push([name, requestValue(request.headers[name])])
  }
  return vary
}

function requestValue (value: string | string[] | undefined): string | null {
  return value === undefined ? null : String(value)
}

/** Whether a request selects the stored variant (RFC 9111 4.1). */
export function varyMatches (vary: Array<[string, string | null]>, request: FastifyRequest): boolean {
  for (const [name, value] of vary) {
    if (requestValue(request.headers[name]) !== value) return false
  }
  return true
}

/** The policy as the head's first line carries it after the status; empty for the plain case. */
export function encodePolicy (policy: EntryPolicy): string {
  if (policy.age === 0 && policy.windows === undefined && policy.vary === undefined && policy.originEtag !== true) return ''
  return ` ${JSON.stringify(policy)}`
}

/** Reads back what encodePolicy wrote; undefined when it is not a policy (a corrupt head). */
export function decodePolicy (text: string): EntryPolicy | undefined {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return undefined
  }
  if (typeof value !== 'object' || value === null) return undefined
  const policy = value as EntryPolicy
  if (!Number.isInteger(policy.age) || policy.age < 0) return undefined
  const windows = policy.windows
  if (windows !== undefined && !(Number.isInteger(windows.staleWhileRevalidate) && Number.isInteger(windows.staleIfError))) return undefined
  const vary = policy.vary
  if (vary !== undefined && !(Array.isArray(vary) && vary.every((pair) => Array.isArray(pair) && typeof pair[0] === 'string' && (typeof pair[1] === 'string' || pair[1] === null)))) return undefined
  return policy
}
