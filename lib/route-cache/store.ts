// The onSend stage of a cached GET: storing the handler's response on a miss (and handing it to
// the requests collapsed onto this one), answering 304s, and serving the stale entry when the
// handler failed within staleIfError.
import type { FastifyReply, FastifyRequest, onSendHookHandler } from 'fastify'
import { isGzipped, KIND_RESPONSE } from '../envelope'
import type { Flight } from '../flights'
import { freshness, secondsLeft } from '../freshness'
import { validateEntryTags } from '../keys'
import type { Lease } from '../lock'
import type { CompiledRoute } from './compile'
import { encodeHead, etagMatches, type HttpEntry, strongEtag } from './http-entry'
import { appendVary, CACHE_NAME, keepPrivate, unstorable } from './replay'
import type { RouteCache } from './route-cache'
import { kState, type RequestState } from './state'

export function makeOnSend (cache: RouteCache, route: CompiledRoute): onSendHookHandler {
  // Callback style: nothing here waits (the store write is not awaited), so no promise and no
  // microtask per response, hits included.
  return function storeResponse (request, reply, payload, done) {
    let send: unknown
    try {
      send = responseToSend(cache, route, request, reply, payload)
    /* c8 ignore start: nothing in responseToSend throws; the guard keeps a bug from hanging the reply */
    } catch (err) {
      done(err as Error)
      return
    }
    /* c8 ignore stop */
    done(null, send)
  }
}

/** onSend's work on a cached route: headers, storing a miss, 304s. Returns the payload to send. */
function responseToSend (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, payload: unknown): unknown {
  const state = request[kState]
  // An earlier hook replied (say, a 401 from authentication) before the cache looked.
  if (state === null) {
    keepPrivate(request, reply)
    cache.decided(request, reply, 'BYPASS', 'fwd=request; detail=early-reply')
    return payload
  }
  if (state.answered) {
    if (state.untyped) reply.removeHeader('content-type')
    return payload
  }
  if (state.outcome === 'BYPASS') {
    keepPrivate(request, reply)
    cache.decided(request, reply, 'BYPASS', state.status)
    return payload
  }
  const flight = state.flight
  const lease = state.lease
  state.flight = null
  state.lease = null
  const refusal = request.method === 'HEAD' ? 'method' : unstorable(route, reply, payload)
  if (refusal !== null) {
    flight?.settle(null)
    lease?.release()
    keepPrivate(request, reply)
    return notStored(cache, route, request, reply, state, payload, refusal)
  }

  const body = payload === null || payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(payload as string)
  if (!reply.hasHeader('etag')) reply.header('etag', strongEtag(body))
  // Stored as `public`; an answer to a request with credentials says `private` (keepPrivate).
  if (route.maxAge !== undefined && !reply.hasHeader('cache-control')) reply.header('cache-control', `public, max-age=${route.maxAge}`)
  // The entry is split on these request headers: say so to every cache downstream.
  for (const header of route.vary) addVary(reply, header)
  storeMiss(cache, route, request, reply, state, body, flight, lease)
  keepPrivate(request, reply)
  const ifNoneMatch = request.headers['if-none-match']
  // As on hits, only a 200 becomes a 304 (RFC 9110 13.1.1: preconditions apply to 2xx only).
  if (ifNoneMatch !== undefined && reply.statusCode === 200 && etagMatches(ifNoneMatch, reply.getHeader('etag') as string)) {
    reply.code(304)
    return null
  }
  return body
}

/**
 * A response that is not stored goes out as the handler made it, unless the handler failed and
 * the entry it would have replaced is still within staleIfError: then that entry is served.
 */
function notStored (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, payload: unknown, refusal: string): unknown {
  // The entry was kept past staleWhileRevalidate already, so this is the staleIfError window.
  if (state.stale !== null && reply.statusCode >= 500 && freshness(state.stale.envelope, route.windows) === 'stale-if-error') {
    const body = cache.bodyOf(request, state.stale)
    if (body !== null) return serveStaleOnError(cache, request, reply, state.stale, body)
  }
  cache.decided(request, reply, 'MISS', `${state.status}; detail=${refusal}`)
  return payload
}

/**
 * Encodes and stores the handler's response (not awaited), hands it to the requests waiting on
 * this one, and lets go of the cross-instance lock once it is written.
 */
function storeMiss (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, body: Buffer, flight: Flight<Buffer | null> | null, lease: Lease | null): void {
  const core = cache.core
  const giveUp = (detail: string): void => {
    flight?.settle(null)
    lease?.release()
    cache.decided(request, reply, 'MISS', `${state.status}; detail=${detail}`)
  }
  let tags: string[] = []
  let head: Buffer
  let failure = 'tags'
  try {
    if (route.tags !== undefined) tags = validateEntryTags(typeof route.tags === 'function' ? route.tags(request) : route.tags)
    failure = 'headers'
    head = encodeHead(reply.statusCode, reply.getHeaders())
  } catch (err) {
    core.failures.count(err, 'set', state.fullKey)
    giveUp(failure)
    return
  }
  if (core.oversized(state.fullKey, head.length + body.length)) {
    giveUp('size')
    return
  }
  // A body the handler already encoded is never gzipped a second time.
  const compress = reply.hasHeader('content-encoding') ? false : route.compress ?? route.gzipClients.most
  const encoded = core.encode(body, { kind: KIND_RESPONSE, freshFor: route.ttl, compress, head, tags, startedAt: state.startedAt })
  const store = (bytes: Buffer): void => {
    // Not awaited: the response does not depend on it, and the write is queued on the same
    // connection ahead of any later read, so the next request already sees it.
    const stored = core.storeBytes(state.fullKey, bytes, route.keepFor, tags, state.field, lease?.held).catch(() => {})
    // A no-op when the write let go of the lock itself.
    stored.then(() => lease?.release())
    // Waiters get the response either way. The flight is findable until the entry is written,
    // not until the lock is let go: a bust that follows the write must not find the old
    // response still in flight.
    flight?.settle(bytes, stored)
  }
  if (Buffer.isBuffer(encoded)) {
    // Hits of a gzipped entry depend on Accept-Encoding: say so from the first response.
    if (isGzipped(encoded)) addVary(reply, 'accept-encoding')
    store(encoded)
  } else {
    // Gzipped off the event loop while the response goes out: whether gzip is kept is not known
    // yet, and a Vary that may be one header too many is safe.
    addVary(reply, 'accept-encoding')
    // A bust that returns while this is being gzipped may cover this very answer: storeBytes
    // then refuses it, and waiters refuse it too (RouteCache.readEntry).
    encoded.then(store, (err: unknown) => {
      core.failures.count(err, 'set', state.fullKey)
      flight?.settle(null)
      lease?.release()
    })
  }
  cache.decided(request, reply, 'MISS', `${state.status}; stored`)
}

function addVary (reply: FastifyReply, header: string): void {
  reply.header('vary', appendVary(reply.getHeader('vary') as string | undefined, header))
}

// Counted as the miss it was (the handler ran); the answer says it came from the old entry.
function serveStaleOnError (cache: RouteCache, request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, body: Buffer): Buffer | null {
  reply.removeHeader('content-type')
  const now = Date.now()
  return cache.replay(request, reply, entry, body, 'STALE', `${CACHE_NAME}; hit; fwd=stale; detail=error; ttl=${secondsLeft(entry.envelope, now)}`, now)
}
