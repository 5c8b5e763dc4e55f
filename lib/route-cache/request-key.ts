// Which entry a request on a cached route reads and fills. The default key is the host (lower
// case), the path, the query with its parameters sorted, and the route's constraints: two virtual
// hosts or tenants never share an entry, nor do two routes Fastify tells apart by a constraint
// (`Accept-Version`, a host constraint). A request whose Host could not be told apart from a
// path (a `/` in it, say) is not cached at all: otherwise `Host: a.com/x` and `/y` would fill the
// entry of `a.com` and `/x/y`.
import type { FastifyRequest } from 'fastify'
import { boundedKey, defaultRouteKey, toKey } from '../keys'
import type { CompiledRoute } from './compile'

// Hosts and URLs per route whose full keys are remembered, and the longest URL remembered: a
// bounded memo, refilled when full, for the requests that come again and again.
const HOSTS_MAX = 16
const URL_KEYS_MAX = 1024
const URL_KEY_MAX_LENGTH = 512

// A host name, an IPv4 or a bracketed IPv6 address, each with an optional port; empty when the
// request had no Host (HTTP/1.0).
const VALID_HOST = /^(?:[a-z0-9._-]*|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i

/** Where the default keys of a route are remembered: by host, then by URL. */
export type UrlKeys = Map<string, Map<string, string>>

/** The full key of a request's entry; undefined when the request must not be cached (its Host). */
export function requestKey (route: CompiledRoute, request: FastifyRequest): string | undefined {
  // Fastify gives a request without a Host (HTTP/1.0) the empty host: a host of its own.
  if (route.key === undefined) return defaultKey(route, request.host, request.url)
  return route.keyPrefix + toKey(typeof route.key === 'function' ? route.key(request) : route.key)
}

/** The full default key of a URL (path and query) on a host; undefined for a host not cached. */
export function defaultKey (route: CompiledRoute, host: string, url: string): string | undefined {
  let byUrl = route.urlKeys.get(host)
  let fullKey = byUrl?.get(url)
  if (fullKey !== undefined) return fullKey
  if (!VALID_HOST.test(host)) return undefined
  fullKey = route.keyPrefix + boundedKey(host.toLowerCase() + defaultRouteKey(url) + route.constraintKey)
  if (url.length > URL_KEY_MAX_LENGTH) return fullKey
  if (byUrl === undefined) {
    if (route.urlKeys.size >= HOSTS_MAX) route.urlKeys.clear()
    byUrl = new Map()
    route.urlKeys.set(host, byUrl)
  }
  if (byUrl.size >= URL_KEYS_MAX) byUrl.clear()
  byUrl.set(url, fullKey)
  return fullKey
}

/**
 * For a route that varies on request headers, the variant: the field of the hash at the entry's
 * key where this combination of header values is stored.
 */
export function variantOf (route: CompiledRoute, request: FastifyRequest): string {
  let field = ''
  for (const header of route.vary) {
    const value = request.headers[header]
    field += `${header}:${value === undefined ? '' : String(value)}\n`
  }
  return boundedKey(field)
}

/**
 * The route's constraints as they end its default keys: a space (which cannot occur in a
 * request's path or query) and the name-value pairs in name order as JSON, so that no two sets
 * of constraints read alike; empty for a route without constraints.
 */
export function constraintKey (constraints: Record<string, unknown> | undefined): string {
  if (constraints === undefined) return ''
  const pairs = Object.keys(constraints).sort().map((name) => [name, constraintValue(constraints[name])])
  return ` ${JSON.stringify(pairs)}`
}

/** A constraint's value as text: a RegExp (a host constraint) as its source and flags. */
function constraintValue (value: unknown): unknown {
  return value instanceof RegExp ? String(value) : value
}
