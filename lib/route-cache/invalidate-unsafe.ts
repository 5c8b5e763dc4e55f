// RFC 9111 4.4: after a successful answer to an unsafe method (POST, PUT, DELETE, PATCH...), a
// cache invalidates what it stored for the target URI, and for the same-origin URIs in the
// response's Location and Content-Location. On routes with `freshness: 'response'`, without a
// `bust` written by hand.
import type { FastifyRequest, onSendHookHandler } from 'fastify'
import type { CompiledRoute } from './compile'
import { defaultKey, requestKey } from './request-key'
import { invalidateBeforeSending } from './bust'
import type { RouteCache } from './route-cache'

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])

export function isSafeMethod (method: string): boolean {
  return SAFE.has(method)
}

export function makeUnsafeInvalidation (cache: RouteCache, route: CompiledRoute): onSendHookHandler {
  // Callback style: on a route for every method, reads pay no promise here.
  return function invalidateAfterUnsafe (request, reply, payload, done) {
    if (SAFE.has(request.method) || reply.statusCode < 200 || reply.statusCode >= 400) {
      done(null, payload)
      return
    }
    const keys = new Set<string>()
    addKey(keys, route, () => requestKey(route, request))
    // Other URIs have a key only when the route's keys are the default ones (host and URL).
    if (route.key === undefined) {
      for (const header of ['location', 'content-location']) {
        const value = reply.getHeader(header)
        const url = value === undefined ? undefined : sameOriginUrl(request, String(value))
        if (url !== undefined) addKey(keys, route, () => defaultKey(route, request.host, url))
      }
    }
    if (keys.size === 0) {
      done(null, payload)
      return
    }
    invalidateBeforeSending(cache, request, payload, done, 'invalidation after an unsafe method', () => cache.fastifyCache.delete([...keys], { namespace: route.namespace }))
  }
}

/** Adds a full key's part after the route's prefix (what `delete` takes with the namespace). */
function addKey (keys: Set<string>, route: CompiledRoute, fullKey: () => string | undefined): void {
  let key: string | undefined
  try {
    key = fullKey()
  } catch {
    // A key function that cannot make this request's key: nothing of it is stored either.
    return
  }
  if (key !== undefined) keys.add(key.slice(route.keyPrefix.length))
}

/** The path and query of a URI reference when it is on the request's own origin. */
function sameOriginUrl (request: FastifyRequest, reference: string): string | undefined {
  let base: URL
  let url: URL
  try {
    base = new URL(`${request.protocol}://${request.host}${request.url}`)
    url = new URL(reference, base)
  } catch {
    return undefined
  }
  return url.origin === base.origin ? url.pathname + url.search : undefined
}
