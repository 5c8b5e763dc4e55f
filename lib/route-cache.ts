// Route-level caching through `config.cache`: whole GET responses stored in the cache and
// answered in `onRequest` without running the handler, and busts after successful mutations.
//
// Everything a route needs is compiled once in `onRoute`; routes without `config.cache` get no
// hook at all. The hit path is one store read and a send of the stored bytes: headers and body
// come from one value, and the body is never parsed or re-serialized.
import { randomBytes } from 'node:crypto'
import type {
  FastifyInstance,
  FastifyReply,
  FastifyRequest,
  onRequestHookHandler,
  onSendHookHandler,
  RouteOptions
} from 'fastify'
import type { RouteCacheBustOptions, RouteCacheOptions } from '../types'
import type { CacheManager } from './cache'
import { CacheConfigError, CacheDeserializationError, RedisConnectionError } from './errors'
import { DecodedEntries, decodeEntry, encodeHead, etagMatches, type HttpEntry, strongEtag } from './http-entry'
import { boundedKey, DEFAULT_NAMESPACE, defaultRouteKey, validateKey, validateNamespace, validateStaleSeconds, validateTags } from './keys'
import { ENCODING_GZIP, isFreshBytes, KIND_RESPONSE } from './serializer'
import type { Lease } from './single-flight'

type Outcome = 'HIT' | 'MISS' | 'STALE' | 'BYPASS'

/** What one request on a cached route has found out so far. */
interface RequestState {
  outcome: Outcome
  /** Answered from the cache in onRequest: onSend has nothing left to do. */
  answered: boolean
  /** The entry it was answered from has no content type (Fastify adds one to a Buffer). */
  untyped: boolean
  /** RFC 9211 parameters after the cache name, e.g. `fwd=uri-miss; stored`. */
  status: string
  fullKey: string
  /** The variant's field in the hash at `fullKey`, for a route with `vary`. */
  field: string | undefined
  /** `fullKey` plus the variant: what this process's flights and decoded entries go by. */
  entryId: string
  /** The expired entry kept for stale-if-error. */
  stale: HttpEntry | null
  /** Set when this request runs the handler for others waiting on the same entry. */
  flight: Flight | null
  /** The cross-instance lock this request holds while its handler runs. */
  lease: Lease | null
}

interface Flight {
  promise: Promise<Buffer | null>
  /**
   * Hands the result to the waiters. The flight stays findable until `stored` settles, so a
   * request arriving before the entry lands in the store still gets this result.
   */
  settle (bytes: Buffer | null, stored?: Promise<unknown>): void
}

interface CompiledRoute {
  namespace: string
  /** `redisKey('', namespace)`: a route's entry keys are this plus the key. */
  keyPrefix: string
  /** Full keys of the default (URL) key by request URL, so a hit builds no string. */
  urlKeys: Map<string, string>
  ttl: number
  /** How long the store keeps an entry: `ttl` plus the longer stale window. */
  keepFor: number
  staleWhileRevalidate: number
  staleIfError: number
  key: string | ((request: FastifyRequest) => string) | undefined
  tags: string[] | ((request: FastifyRequest) => string[]) | undefined
  vary: string[]
  statuses: Set<number>
  compress: boolean | undefined
  allowAuthorization: boolean
  maxAge: number | undefined
}

export const CACHE_NAME = 'fastify-redis-cache'
// How long requests that found another request already fetching their entry wait for it
// before running the handler themselves.
const COLLAPSE_WAIT_MS = 5000
// URLs per route whose full keys are remembered, and the longest URL remembered: a bounded
// memo, refilled when full, for the URLs that are hit again and again.
const URL_KEYS_MAX = 1024
const URL_KEY_MAX_LENGTH = 512
// Decoded heads and gunzipped bodies of recently hit entries, so hits skip that work.
const DECODED_MAX_ENTRIES = 1024
const DECODED_MAX_BYTES = 16 * 1024 * 1024
// A background refresh is a request the plugin sends to itself; this header, with a secret
// made per process, marks it so that no client can force one.
const REFRESH_HEADER = 'x-fastify-redis-cache-refresh'

const kState = Symbol('fastify-redis-cache.state')

declare module 'fastify' {
  interface FastifyRequest {
    [kState]: RequestState | null
  }
}

export function installRouteCaching (fastify: FastifyInstance, cache: CacheManager): void {
  const log = cache.log
  const refreshSecret = randomBytes(16).toString('hex')
  // Misses being fetched in this process, by entry key: later requests wait for them.
  const flights = new Map<string, Flight>()
  // Entries being refreshed in the background, so each is refreshed once at a time.
  const refreshing = new Set<string>()
  const decoded = new DecodedEntries(DECODED_MAX_ENTRIES, DECODED_MAX_BYTES)
  // The local tier, read synchronously on the hit path when it is on.
  const local = cache.local
  // Checked once: building the debug line's fields costs an allocation on every request.
  const debug = log.level === 'debug' || log.level === 'trace'

  fastify.decorateRequest(kState, null)

  fastify.addHook('onRoute', (routeOptions) => {
    const options = routeOptions.config?.cache
    if (options === undefined || options === false) return
    const where = `${String(routeOptions.method)} ${routeOptions.url}`
    const route = compileRoute(options, where, cache)
    const methods = [routeOptions.method].flat()
    if (methods.includes('GET') || methods.includes('HEAD')) {
      addHook(routeOptions, 'onRequest', makeOnRequest(route))
      addHook(routeOptions, 'onSend', makeOnSend(route))
    }
    if (options.bust !== undefined) {
      addHook(routeOptions, 'onSend', makeBust(compileBust(options.bust, route.namespace, where)))
    }
  })

  function makeOnRequest (route: CompiledRoute): onRequestHookHandler {
    // Callback style, so a hit from the local tier is answered synchronously: no promise and no
    // microtask on the fastest path. Fastify ignores done() once a hook has replied.
    return function answerFromCache (request, reply, done) {
      const state: RequestState = { outcome: 'MISS', answered: false, untyped: false, status: 'fwd=uri-miss', fullKey: '', field: undefined, entryId: '', stale: null, flight: null, lease: null }
      request[kState] = state
      // A route for several methods: only GET and HEAD are answered from or stored in the cache.
      if (request.method !== 'GET' && request.method !== 'HEAD') {
        bypass(state, 'fwd=method')
        done()
        return
      }
      if (!route.allowAuthorization && request.headers.authorization !== undefined) {
        bypass(state, 'fwd=request; detail=authorization')
        done()
        return
      }
      try {
        state.fullKey = route.key === undefined ? urlKey(route, request.url) : route.keyPrefix + validateKey(typeof route.key === 'function' ? route.key(request) : route.key)
        state.entryId = state.fullKey
        if (route.vary.length > 0) {
          state.field = variantOf(route, request)
          state.entryId = `${state.fullKey}\n${state.field}`
        }
      } catch (err) {
        log.warn({ err, url: request.url }, 'fastify-redis-cache: cannot build the cache key; request not cached')
        bypass(state, 'fwd=bypass; detail=key')
        done()
        return
      }
      const isRefresh = request.headers[REFRESH_HEADER] === refreshSecret
      if (!isRefresh && local !== undefined && state.field === undefined) {
        const bytes = local.get(state.fullKey)
        if (bytes !== undefined && answerFromEntry(route, request, reply, state, bytes)) return
      }
      lookUp(route, request, reply, state, isRefresh).then(() => done(), done)
    }
  }

  /**
   * Answers from stored bytes when they are fresh, or stale within staleWhileRevalidate (then
   * refreshing them in the background). False when the request goes on to the handler; an
   * expired entry is kept for staleIfError.
   */
  function answerFromEntry (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, bytes: Buffer): boolean {
    const entry = readEntry(bytes, state, route)
    if (entry === null) return false
    const now = Date.now()
    const age = now - entry.envelope.storedAt
    const fresh = entry.envelope.freshFor * 1000
    // sendEntry gives undefined when the body cannot be read back: then this is a miss.
    if (age < fresh) {
      if (sendEntry(request, reply, entry, 'HIT', hitStatus(entry, Math.floor((fresh - age) / 1000)), now) === undefined) return false
      countHit(route, bytes.length)
      return true
    }
    if (age < fresh + route.staleWhileRevalidate * 1000) {
      if (sendEntry(request, reply, entry, 'STALE', `${CACHE_NAME}; hit; fwd=stale; ttl=${Math.floor((fresh - age) / 1000)}`, now) === undefined) return false
      countHit(route, bytes.length)
      refreshInBackground(request, state.entryId)
      return true
    }
    state.stale = entry
    state.status = 'fwd=stale'
    return false
  }

  /** The store read, and on a miss the single-flight within this process and across instances. */
  async function lookUp (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, isRefresh: boolean): Promise<void> {
    if (!isRefresh) {
      let bytes: Buffer | null
      try {
        bytes = await cache.store.get(state.fullKey, state.field)
      } catch (err) {
        cache.countFailure(err, 'get', state.fullKey)
        // A key of the other shape (the route's vary setting changed since it was stored).
        if (err instanceof Error && err.message.startsWith('WRONGTYPE')) cache.discard(state.fullKey)
        bypass(state, 'fwd=bypass; detail=unavailable')
        return
      }
      if (bytes !== null && answerFromEntry(route, request, reply, state, bytes)) return
    }
    cache.stats.misses++
    cache.stats.namespaceMiss(route.namespace)
    if (request.method === 'HEAD') return

    const running = flights.get(state.entryId)
    if (running !== undefined && !isRefresh) {
      const bytes = await waitFor(running.promise)
      const entry = bytes === null ? null : readEntry(bytes, state, route)
      if (entry !== null) sendEntry(request, reply, entry, 'MISS', COLLAPSED_STATUS, Date.now())
      // Otherwise the request ahead produced nothing storable, or took too long: run the handler.
      return
    }
    const flight = state.flight = startFlight(state.entryId)
    // A hijacked reply ends without onSend: its waiters must still be let go. (An aborted one
    // still reaches onSend when its handler is done, and its waiters get that response.) A
    // listener on misses only: hits pay nothing for it.
    reply.raw.once('close', () => { if (reply.sent) releaseFlight(state) })
    // Other instances may be fetching the same entry: one of them runs the handler.
    const claim = await cache.flight.claim(state.fullKey, isFreshBytes, state.field)
    if (claim.lease !== undefined) {
      state.lease = claim.lease
      return
    }
    const bytes = claim.bytes
    const entry = bytes === null ? null : readEntry(bytes, state, route)
    if (entry !== null) {
      state.flight = null
      flight.settle(bytes)
      sendEntry(request, reply, entry, 'MISS', COLLAPSED_STATUS, Date.now())
    }
  }

  function makeOnSend (route: CompiledRoute): onSendHookHandler {
    // Callback style: nothing here waits (the store write is not awaited), so no promise and no
    // microtask per response, hits included.
    return function storeResponse (request, reply, payload, done) {
      let send: unknown
      try {
        send = responseToSend(route, request, reply, payload)
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
  function responseToSend (route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, payload: unknown): unknown {
    const state = request[kState]
    // An earlier onRequest hook replied (say, a 401) before the cache looked.
    if (state === null) {
      decided(request, reply, 'BYPASS', 'fwd=request; detail=early-reply')
      return payload
    }
    if (state.answered) {
      if (state.untyped) reply.removeHeader('content-type')
      return payload
    }
    if (state.outcome === 'BYPASS') {
      decided(request, reply, 'BYPASS', state.status)
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
      if (state.stale !== null && reply.statusCode >= 500 && isWithinStaleIfError(route, state.stale)) {
        const body = bodyOf(request, state.stale)
        if (body !== null) return serveStaleOnError(request, reply, state.stale, body)
      }
      decided(request, reply, 'MISS', `${state.status}; detail=${refusal}`)
      return payload
    }

    const body = payload === null || payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(payload as string)
    if (!reply.hasHeader('etag')) reply.header('etag', strongEtag(body))
    if (route.maxAge !== undefined && !reply.hasHeader('cache-control')) {
      reply.header('cache-control', `${request.headers.authorization === undefined ? 'public' : 'private'}, max-age=${route.maxAge}`)
    }
    // The entry is split on these request headers: say so to every cache downstream.
    for (const header of route.vary) reply.header('vary', appendVary(reply.getHeader('vary') as string | undefined, header))
    let tags: string[] = []
    let bytes: Buffer | null = null
    let failure = 'tags'
    try {
      if (route.tags !== undefined) tags = validateTags(typeof route.tags === 'function' ? route.tags(request) : route.tags)
      failure = 'headers'
      bytes = cache.encode(body, {
        kind: KIND_RESPONSE,
        freshFor: route.ttl,
        // A body the handler already encoded is never gzipped a second time.
        compress: reply.hasHeader('content-encoding') ? false : route.compress,
        head: encodeHead(reply.statusCode, reply.getHeaders())
      })
    } catch (err) {
      cache.countFailure(err, 'set', state.fullKey)
    }
    if (bytes !== null) {
      // Hits of a gzipped entry depend on Accept-Encoding: say so from the first response.
      if (bytes[1] === ENCODING_GZIP) reply.header('vary', appendVary(reply.getHeader('vary') as string | undefined, 'accept-encoding'))
      // Not awaited: the response does not depend on it, and the write is queued on the same
      // connection ahead of any later read, so the next request already sees it.
      const stored = cache.storeBytes(state.fullKey, bytes, route.keepFor, tags, state.field).catch(() => {})
      stored.then(() => lease?.release())
      // Waiters get the response either way; only an entry within maxEntrySize is stored. The
      // flight is findable until the entry is written, not until the lock is let go: a bust that
      // follows the write must not find the old response still in flight.
      flight?.settle(bytes, stored)
      decided(request, reply, 'MISS', `${state.status}; ${bytes.length > cache.maxEntrySize ? 'detail=size' : 'stored'}`)
    } else {
      flight?.settle(null)
      lease?.release()
      decided(request, reply, 'MISS', `${state.status}; detail=${failure}`)
    }
    const ifNoneMatch = request.headers['if-none-match']
    // As on hits, only a 200 becomes a 304 (RFC 9110 13.1.1: preconditions apply to 2xx only).
    if (ifNoneMatch !== undefined && reply.statusCode === 200 && etagMatches(ifNoneMatch, reply.getHeader('etag') as string)) {
      reply.code(304)
      return null
    }
    return body
  }

  // Settles the flight and releases the lock of a reply that never reached onSend (after onSend
  // both are null already), so waiters do not hang.
  function releaseFlight (state: RequestState): void {
    state.flight?.settle(null)
    state.lease?.release()
  }

  function makeBust (bust: CompiledBust): onSendHookHandler {
    return async function bustAfterSuccess (request, reply, payload) {
      // Reads never bust, even on a route that also takes writes.
      if (request.method === 'GET' || request.method === 'HEAD') return payload
      if (reply.statusCode < 200 || reply.statusCode >= 300) return payload
      const work: Array<Promise<number>> = []
      try {
        if (bust.keys !== undefined) {
          const keys = typeof bust.keys === 'function' ? bust.keys(request, reply) : bust.keys
          work.push(cache.delete(keys, { namespace: bust.namespace }))
        }
        if (bust.tags !== undefined) {
          work.push(cache.invalidateTags(typeof bust.tags === 'function' ? bust.tags(request, reply) : bust.tags))
        }
        if (bust.clearNamespace) work.push(cache.clear(bust.namespace))
        // Awaited: a client that reads after this response must not get the old entry.
        await Promise.all(work)
      } catch (err) {
        // Store failures were counted where they happened; anything else is counted here.
        if (!(err instanceof RedisConnectionError)) cache.countFailure(err, 'bust', request.url)
        log.error({ err, url: request.url }, 'fastify-redis-cache: cache bust failed; the response is sent anyway')
      }
      return payload
    }
  }

  function startFlight (fullKey: string): Flight {
    let settle!: (bytes: Buffer | null) => void
    const promise = new Promise<Buffer | null>((resolve) => { settle = resolve })
    const flight: Flight = {
      promise,
      settle (bytes, stored) {
        settle(bytes)
        const forget = (): void => { if (flights.get(fullKey) === flight) flights.delete(fullKey) }
        if (stored === undefined) forget()
        else stored.finally(forget)
      }
    }
    flights.set(fullKey, flight)
    return flight
  }

  /** Reads a stored response; an unreadable one is a miss: deleted, counted, logged. */
  function readEntry (bytes: Buffer, state: RequestState, route: CompiledRoute): HttpEntry | null {
    const known = decoded.get(state.entryId, bytes)
    if (known !== undefined) return known
    try {
      const entry = decodeEntry(bytes)
      // A status this route never stores is forged or stale bytes, not an answer to replay.
      if (!route.statuses.has(entry.status)) throw new CacheDeserializationError(`Stored response has status ${entry.status}, which this route does not store`)
      decoded.remember(state.entryId, entry)
      return entry
    } catch (err) {
      cache.countFailure(err, 'get', state.fullKey)
      cache.discard(state.fullKey)
      return null
    }
  }

  function countHit (route: CompiledRoute, bytes: number): void {
    cache.stats.hits++
    cache.stats.bytesRead += bytes
    cache.stats.namespaceHit(route.namespace)
  }

  /** Replays the refresh request in-process so the handler runs and its response is stored. */
  function refreshInBackground (request: FastifyRequest, entryId: string): void {
    if (refreshing.has(entryId)) return
    refreshing.add(entryId)
    const headers = { ...request.headers, [REFRESH_HEADER]: refreshSecret }
    delete headers['if-none-match']
    fastify.inject({ method: 'GET', url: request.url, headers })
      .catch((err: unknown) => log.warn({ err, url: request.url }, 'fastify-redis-cache: background refresh failed'))
      .finally(() => refreshing.delete(entryId))
  }

  // Counted as the miss it was (the handler ran); the answer says it came from the old entry.
  function serveStaleOnError (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, body: Buffer): Buffer | null {
    reply.removeHeader('content-type')
    const now = Date.now()
    const age = now - entry.envelope.storedAt
    return replay(request, reply, entry, body, 'STALE', `${CACHE_NAME}; hit; fwd=stale; detail=error; ttl=${Math.floor((entry.envelope.freshFor * 1000 - age) / 1000)}`, now)
  }

  /**
   * Answers from an entry in onRequest; the handler does not run. Undefined, with the reply
   * untouched, when the entry's body cannot be read back.
   */
  function sendEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, outcome: Outcome, cacheStatus: string, now: number): FastifyReply | undefined {
    const body = bodyOf(request, entry)
    if (body === null) return undefined
    const state = request[kState] as RequestState
    state.answered = true
    state.untyped = entry.headers['content-type'] === undefined
    return reply.send(replay(request, reply, entry, body, outcome, cacheStatus, now))
  }

  /**
   * The body to send from an entry: the stored bytes, gunzipped for a client that does not take
   * gzip. Null when they cannot be gunzipped (a corrupt or truncated entry): it is then
   * unreadable like any other, so dropped and counted, and the request is a miss.
   */
  function bodyOf (request: FastifyRequest, entry: HttpEntry): Buffer | null {
    if (entry.envelope.encoding !== ENCODING_GZIP || acceptsGzip(request.headers['accept-encoding'])) return entry.body
    const { fullKey, entryId } = request[kState] as RequestState
    try {
      return decoded.plainBody(entryId, entry)
    } catch (err) {
      decoded.forget(entryId)
      cache.countFailure(err, 'get', fullKey)
      cache.discard(fullKey)
      return null
    }
  }

  /**
   * Sets status and headers from an entry and returns the body to send (from bodyOf).
   * `cacheStatus` is the whole Cache-Status value.
   */
  function replay (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, body: Buffer, outcome: Outcome, cacheStatus: string, now: number): Buffer | null {
    reply.code(entry.status)
    for (const name of entry.headerNames) reply.header(name, entry.headers[name])
    announce(request, reply, outcome, cacheStatus)
    reply.header('age', ageOf(entry, now))
    let etag = entry.headers.etag as string | undefined
    if (entry.envelope.encoding === ENCODING_GZIP) {
      // Same bytes for every client that takes gzip; decompressed once for those that do not.
      entry.gzipVary ??= appendVary(entry.headers.vary, 'accept-encoding')
      reply.header('vary', entry.gzipVary)
      if (body === entry.body) {
        reply.header('content-encoding', 'gzip')
        // A strong validator must differ between content codings (RFC 9110 8.8.3).
        if (etag !== undefined) {
          etag = entry.gzipEtag ??= etag.replace(/"$/, '-gzip"')
          reply.header('etag', etag)
        }
      }
    }
    const ifNoneMatch = request.headers['if-none-match']
    if (ifNoneMatch !== undefined && etag !== undefined && entry.status === 200 && etagMatches(ifNoneMatch, etag)) {
      reply.code(304)
      return null
    }
    return body
  }

  /** The cache headers of an answer not replayed from an entry; `status` without the cache name. */
  function decided (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, status: string): void {
    announce(request, reply, outcome, `${CACHE_NAME}; ${status}`)
  }

  /** Sets X-Cache and the whole Cache-Status value, and logs the decision when debugging. */
  function announce (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, cacheStatus: string): void {
    reply.header('x-cache', outcome)
    reply.header('cache-status', cacheStatus)
    if (debug) log.debug({ url: request.url, key: request[kState]?.fullKey, outcome, status: cacheStatus }, 'fastify-redis-cache: route cache decision')
  }

  function bypass (state: RequestState, status: string): void {
    state.outcome = 'BYPASS'
    state.status = status
  }
}

const COLLAPSED_STATUS = `${CACHE_NAME}; fwd=uri-miss; collapsed`

/**
 * The Cache-Status of a fresh hit with `ttl` seconds left. It changes once a second: made once
 * per second per entry, not per hit.
 */
function hitStatus (entry: HttpEntry, ttl: number): string {
  if (entry.hitTtl !== ttl) {
    entry.hitTtl = ttl
    entry.hitStatus = `${CACHE_NAME}; hit; ttl=${ttl}`
  }
  return entry.hitStatus as string
}

/** The Age header of an entry, in whole seconds; likewise made once per second. */
function ageOf (entry: HttpEntry, now: number): string {
  const age = Math.max(0, Math.floor((now - entry.envelope.storedAt) / 1000))
  if (entry.ageSeconds !== age) {
    entry.ageSeconds = age
    entry.age = String(age)
  }
  return entry.age as string
}

/** Why a response must not be stored, or null when it may be. */
function unstorable (route: CompiledRoute, reply: FastifyReply, payload: unknown): string | null {
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

function isWithinStaleIfError (route: CompiledRoute, entry: HttpEntry): boolean {
  const age = Date.now() - entry.envelope.storedAt
  return age < (entry.envelope.freshFor + route.staleIfError) * 1000
}

/**
 * For a route that varies on request headers, the variant: the field of the hash at the entry's
 * key where this combination of header values is stored.
 */
function variantOf (route: CompiledRoute, request: FastifyRequest): string {
  let field = ''
  for (const header of route.vary) {
    const value = request.headers[header]
    field += `${header}:${value === undefined ? '' : String(value)}\n`
  }
  return boundedKey(field)
}

/** The full key of the default key: the path plus the sorted query, remembered per URL. */
function urlKey (route: CompiledRoute, url: string): string {
  let fullKey = route.urlKeys.get(url)
  if (fullKey === undefined) {
    fullKey = route.keyPrefix + boundedKey(defaultRouteKey(url))
    if (url.length <= URL_KEY_MAX_LENGTH) {
      if (route.urlKeys.size >= URL_KEYS_MAX) route.urlKeys.clear()
      route.urlKeys.set(url, fullKey)
    }
  }
  return fullKey
}

/** Whether Accept-Encoding allows gzip: an explicit `gzip` (or `x-gzip`) entry wins over `*`. */
function acceptsGzip (acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined) return false
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

function appendVary (existing: string | string[] | undefined, header: string): string {
  const current = existing === undefined ? '' : String(existing)
  if (current.toLowerCase().split(',').some((name) => name.trim() === header)) return current
  return current === '' ? header : `${current}, ${header}`
}

function waitFor (promise: Promise<Buffer | null>): Promise<Buffer | null> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<null>((resolve) => { timer = setTimeout(resolve, COLLAPSE_WAIT_MS, null) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

type HookName = 'onRequest' | 'onSend'

/** Appends a route-level hook without mutating arrays Fastify shares with the HEAD route. */
function addHook<T> (routeOptions: RouteOptions, name: HookName, hook: T): void {
  const existing = routeOptions[name] as T | T[] | undefined
  const hooks = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
  ;(routeOptions as unknown as Record<HookName, T[]>)[name] = [...hooks, hook]
}

function compileRoute (options: RouteCacheOptions, where: string, cache: CacheManager): CompiledRoute {
  if (typeof options !== 'object' || options === null) {
    throw new CacheConfigError(`fastify-redis-cache: config.cache of ${where} must be an object or false`)
  }
  try {
    const staleWhileRevalidate = validateStaleSeconds(options.staleWhileRevalidate, 'staleWhileRevalidate')
    const staleIfError = validateStaleSeconds(options.staleIfError, 'staleIfError')
    const ttl = cache.resolveTtl(options.ttl)
    if (options.key !== undefined && typeof options.key !== 'function') validateKey(options.key)
    if (Array.isArray(options.tags)) validateTags(options.tags)
    else if (options.tags !== undefined && typeof options.tags !== 'function') throw new TypeError('tags must be an array or a function')
    const statuses = options.statuses ?? [200]
    if (!Array.isArray(statuses) || !statuses.every((s) => Number.isInteger(s) && s >= 200 && s <= 599)) {
      throw new TypeError('statuses must be an array of HTTP status codes')
    }
    const vary = options.vary ?? []
    if (!Array.isArray(vary) || !vary.every((h) => typeof h === 'string' && /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(h))) {
      throw new TypeError('vary must be an array of header names')
    }
    // max-age=0 is meaningful: stored downstream, revalidated before each use.
    if (options.maxAge !== false) validateStaleSeconds(options.maxAge, 'maxAge')
    const namespace = options.namespace === undefined ? DEFAULT_NAMESPACE : validateNamespace(options.namespace)
    return {
      namespace,
      keyPrefix: cache.layout.entry('', namespace),
      urlKeys: new Map(),
      ttl,
      keepFor: ttl + Math.max(staleWhileRevalidate, staleIfError),
      staleWhileRevalidate,
      staleIfError,
      key: options.key,
      tags: options.tags,
      vary: vary.map((h) => h.toLowerCase()),
      statuses: new Set(statuses),
      compress: options.compress,
      allowAuthorization: options.allowAuthorization === true,
      maxAge: options.maxAge === false ? undefined : options.maxAge
    }
  } catch (err) {
    throw new CacheConfigError(`fastify-redis-cache: invalid config.cache of ${where}: ${(err as Error).message}`, { cause: err })
  }
}

interface CompiledBust {
  namespace: string
  keys: RouteCacheBustOptions['keys']
  tags: RouteCacheBustOptions['tags']
  /** A bust that names only a namespace clears it. */
  clearNamespace: boolean
}

function compileBust (bust: RouteCacheBustOptions, routeNamespace: string, where: string): CompiledBust {
  try {
    if (typeof bust !== 'object' || bust === null) throw new TypeError('bust must be an object')
    const namespace = bust.namespace === undefined ? routeNamespace : validateNamespace(bust.namespace)
    if (Array.isArray(bust.keys)) bust.keys.forEach(validateKey)
    else if (bust.keys !== undefined && typeof bust.keys !== 'function') throw new TypeError('bust.keys must be an array or a function')
    if (Array.isArray(bust.tags)) validateTags(bust.tags)
    else if (bust.tags !== undefined && typeof bust.tags !== 'function') throw new TypeError('bust.tags must be an array or a function')
    const clearNamespace = bust.keys === undefined && bust.tags === undefined
    if (clearNamespace && bust.namespace === undefined) throw new TypeError('bust needs keys, tags or a namespace')
    return { namespace, keys: bust.keys, tags: bust.tags, clearNamespace }
  } catch (err) {
    throw new CacheConfigError(`fastify-redis-cache: invalid config.cache.bust of ${where}: ${(err as Error).message}`, { cause: err })
  }
}
