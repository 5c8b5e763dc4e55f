// The onSend stage of a cached GET: storing the handler's response on a miss (and handing it to
// the requests collapsed onto this one), answering 304s, and serving the stale entry when the
// handler failed within staleIfError.
import type { FastifyReply, FastifyRequest, onSendHookHandler } from 'fastify'
import { isGzipped, KIND_RESPONSE, type Payload, payloadStart } from '../envelope'
import { CacheDeserializationError } from '../errors'
import type { Flight } from '../flights'
import { freshness, secondsLeft } from '../freshness'
import { validateEntryTags } from '../keys'
import type { Lease } from '../lock'
import type { CompiledRoute } from './compile'
import { encodePolicy, responsePlan, routePlan, type StorePlan } from './entry-policy'
import { encodeHead, type HttpEntry, notModified, strongEtag } from './http-entry'
import { answerRange } from './range'
import { appendVary, CACHE_NAME, keepPrivate, unstorable } from './replay'
import { freshened, restoreConditionals } from './revalidation'
import type { RouteCache } from './route-cache'
import { kState, type RequestState } from './state'
import { discard, isStream, readWhole } from './whole-body'

type StoredPlan = Extract<StorePlan, { refusal: null }>

export function makeOnSend (cache: RouteCache, route: CompiledRoute): onSendHookHandler {
  // Callback style: nothing here waits (the store write is not awaited), so no promise and no
  // microtask per response, hits included.
  return function storeResponse (request, reply, payload, done) {
    // A stream (a proxied response) is read whole first, up to maxEntrySize, to be stored; only
    // when its headers allow storing it, so that one they forbid (an event stream, say) goes out
    // as it comes. A 304 has no body whatever its framing says (RFC 9110 15.4.5): never read.
    let plan: StorePlan | undefined
    if (route.byResponse && isStream(payload) && reply.statusCode !== 304 && storing(request)) {
      plan = responsePlan(route, request, reply, reply.hasHeader('etag'), Date.now())
      if (plan.refusal === null) {
        const readable = plan
        readWhole(payload, cache.core.maxEntrySize).then((body) => finish(cache, route, request, reply, body, done, isStream(body) ? OVERSIZED : readable), done)
        return
      }
    }
    finish(cache, route, request, reply, payload, done, plan)
  }
}

// A stream still a stream after readWhole: it was over maxEntrySize.
const OVERSIZED: StorePlan = { refusal: 'size' }

function finish (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (err: Error | null, payload?: unknown) => void, plan?: StorePlan): void {
  let send: unknown
  try {
    send = responseToSend(cache, route, request, reply, payload, plan)
  } catch (err) {
    // An unreadable entry the handler revalidated (see revalidated).
    done(err as Error)
    return
  }
  done(null, send)
}

/** Whether the request's response would be stored if the response allows it. */
function storing (request: FastifyRequest): boolean {
  const state = request[kState]
  return state !== null && !state.answered && state.outcome !== 'BYPASS' && request.method === 'GET'
}

/**
 * onSend's work on a cached route: headers, storing a miss, 304s. Returns the payload to send.
 * `decided`: the store plan, when onSend made it before reading a stream.
 */
function responseToSend (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, payload: unknown, decided?: StorePlan): unknown {
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
  if (state.revalidation !== null) {
    restoreConditionals(request, state.revalidation)
    if (reply.statusCode === 304 && state.stale !== null) payload = revalidated(cache, request, reply, state, state.stale, payload)
  }
  const flight = state.flight
  const lease = state.lease
  state.flight = null
  state.lease = null
  const plan = decided ?? (request.method === 'HEAD' ? { refusal: 'method' } : planOf(route, request, reply, payload))
  if (plan.refusal !== null) {
    flight?.settle(null)
    lease?.release()
    keepPrivate(request, reply)
    return notStored(cache, route, request, reply, state, payload, plan.refusal)
  }

  // A string body (what Fastify serialized) stays one: it is sent as it is and encoded straight
  // into the entry, never copied into a Buffer of its own. Other bytes (a serializer's
  // Uint8Array) become a Buffer.
  const body: Payload = payload === null || payload === undefined ? '' : typeof payload === 'string' || Buffer.isBuffer(payload) ? payload : Buffer.from(payload as Uint8Array)
  if (!reply.hasHeader('etag')) reply.header('etag', strongEtag(body))
  // Sent and stored: a hit sends the Date of the response it replays (RFC 9111 4).
  if (!reply.hasHeader('date')) reply.header('date', new Date().toUTCString())
  // Stored as `public`; an answer to a request with credentials says `private` (keepPrivate).
  if (route.maxAge !== undefined && !reply.hasHeader('cache-control')) reply.header('cache-control', `public, max-age=${route.maxAge}`)
  // The entry is split on these request headers: say so to every cache downstream.
  for (const header of route.vary) addVary(reply, header)
  const sent = storeMiss(cache, route, request, reply, state, body, flight, lease, plan)
  keepPrivate(request, reply)
  // As on hits, only a 200 becomes a 304 (RFC 9110 13.1.1: preconditions apply to 2xx only).
  if (reply.statusCode === 200 && notModified(request, reply.getHeader('etag') as string, reply.getHeaders())) {
    reply.code(304)
    return null
  }
  if (state.range !== undefined && reply.statusCode === 200) return answerRange(reply, Buffer.from(sent), state.range)
  return sent
}

/** What storing the handler's response comes to, by the route's `freshness`. */
function planOf (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, payload: unknown): StorePlan {
  if (!route.byResponse) {
    const refusal = unstorable(route, reply, payload)
    return refusal === null ? routePlan(route, reply, reply.hasHeader('etag')) : { refusal }
  }
  return responsePlan(route, request, reply, reply.hasHeader('etag'), Date.now())
}

/**
 * The handler answered 304 to the stale entry's validators: the stored response, freshened by
 * the 304, is what the client gets and what is stored again (RFC 9111 4.3.4).
 */
function revalidated (cache: RouteCache, request: FastifyRequest, reply: FastifyReply, state: RequestState, entry: HttpEntry, payload: unknown): Buffer {
  if (isStream(payload)) discard(payload)
  const body = cache.bodyOf(request, entry, true)
  // Unreadable (and dropped): the client must not get a 304 it did not ask for.
  if (body === null) throw new CacheDeserializationError('The stale entry revalidated by the handler cannot be read back')
  state.status = 'fwd=stale; fwd-status=304'
  return freshened(reply, entry, body)
}

/**
 * A response that is not stored goes out as the handler made it, unless the handler failed and
 * the entry it would have replaced is still within staleIfError: then that entry is served.
 */
function notStored (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, payload: unknown, refusal: string): unknown {
  // The entry was kept past staleWhileRevalidate already, so this is the staleIfError window.
  // Not served when an invalidation came while the handler ran.
  if (state.stale !== null && reply.statusCode >= 500 && freshness(state.stale.envelope, state.stale.policy?.windows ?? route.windows) === 'stale-if-error' && cache.core.admits(state.fullKey, state.stale.stored)) {
    const body = cache.bodyOf(request, state.stale)
    if (body !== null) return serveStaleOnError(cache, request, reply, state.stale, body)
  }
  cache.decided(request, reply, 'MISS', `${state.status}; detail=${refusal}`)
  // The handler was asked for the whole response: the client still gets its range when the
  // body is at hand (a stream over maxEntrySize goes out whole, as a server may answer).
  if (state.range !== undefined && reply.statusCode === 200 && (Buffer.isBuffer(payload) || typeof payload === 'string')) {
    return answerRange(reply, Buffer.from(payload), state.range)
  }
  return payload
}

/**
 * Encodes and stores the handler's response (not awaited), hands it to the requests waiting on
 * this one, and lets go of the cross-instance lock once it is written. Returns the body to send:
 * a string body stored plain goes out as the stored bytes, which are UTF-8 already (the socket
 * would otherwise join it to the head and encode it again).
 */
function storeMiss (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, body: Payload, flight: Flight<Buffer | null> | null, lease: Lease | null, plan: StoredPlan): Payload {
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
    tags = entryTags(route, request, reply)
    failure = 'headers'
    head = encodeHead(reply.statusCode, reply.getHeaders(), encodePolicy(plan.policy))
  } catch (err) {
    core.failures.count(err, 'set', state.fullKey, request)
    giveUp(failure)
    return body
  }
  if (core.oversized(state.fullKey, body, head.length)) {
    giveUp('size')
    return body
  }
  // A body the handler already encoded is never gzipped a second time.
  const compress = reply.hasHeader('content-encoding') ? false : route.compress ?? route.gzipClients.most
  const encoded = core.encode(body, { kind: KIND_RESPONSE, freshFor: plan.freshFor, compress, head, tags, startedAt: state.startedAt })
  const store = (bytes: Buffer): void => {
    // Not awaited: the response does not depend on it, and the write is queued on the same
    // connection ahead of any later read, so the next request already sees it.
    const stored = core.storeBytes(state.fullKey, bytes, plan.keepFor, tags, state.field, lease?.held, request).catch(() => {})
    // A no-op when the write let go of the lock itself.
    stored.then(() => lease?.release())
    // Waiters get the response either way. The flight is findable until the entry is written,
    // not until the lock is let go: a bust that follows the write must not find the old
    // response still in flight.
    flight?.settle(bytes, stored)
  }
  let sent = body
  if (Buffer.isBuffer(encoded)) {
    // Hits of a gzipped entry depend on Accept-Encoding: say so from the first response.
    if (isGzipped(encoded)) addVary(reply, 'accept-encoding')
    else if (typeof body === 'string') sent = encoded.subarray(payloadStart(encoded) + head.length)
    store(encoded)
  } else {
    // Gzipped off the event loop while the response goes out: whether gzip is kept is not known
    // yet, and a Vary that may be one header too many is safe.
    addVary(reply, 'accept-encoding')
    // A bust that returns while this is being gzipped may cover this very answer: storeBytes
    // then refuses it, and waiters refuse it too (RouteCache.readEntry).
    encoded.then(store, (err: unknown) => {
      core.failures.count(err, 'set', state.fullKey, request)
      flight?.settle(null)
      lease?.release()
    })
  }
  cache.decided(request, reply, 'MISS', `${state.status}; stored`)
  return sent
}

/** The route's tags, and those the response names in the route's tag header. */
function entryTags (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply): string[] {
  let tags: string[] = route.tags === undefined ? [] : typeof route.tags === 'function' ? route.tags(request) : route.tags
  const header = route.tagHeader === undefined ? undefined : reply.getHeader(route.tagHeader)
  if (header !== undefined) {
    const named = String(Array.isArray(header) ? header.join(',') : header).split(/[\s,]+/).filter((tag) => tag !== '')
    tags = [...tags, ...named]
  }
  return tags.length === 0 ? tags : validateEntryTags(tags)
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
