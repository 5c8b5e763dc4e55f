// What route caching keeps for the life of the app, and the steps its stages share: reading a
// stored response back, replaying it with the cache headers, counting hits and refreshing a
// stale entry in the background. The stages (answer.ts in the lookup hook, store.ts and bust.ts in
// onSend) are top-level functions handed this object, like a route's compiled settings.
import { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { FastifyCache } from '../../types'
import type { CacheCore } from '../cache/core'
import { ENCODING_GZIP, storedAtOf } from '../envelope'
import { CacheDeserializationError } from '../errors'
import { Flights } from '../flights'
import { isFreshBytes } from '../freshness'
import { BackgroundRefresh } from '../refresh'
import { Throttle } from '../throttled-log'
import type { CompiledRoute } from './compile'
import { attachment } from '../local/attached'
import { DecodedEntries } from './decoded-entries'
import { decodeEntry, type HttpEntry, notModified } from './http-entry'
import { answerRange } from './range'
import { restoreConditionals } from './revalidation'
import { acceptsGzip, ageOf, appendVary, CACHE_NAME, keepPrivate } from './replay'
import { kState, type Outcome, type RequestState } from './state'

const OUTCOMES = { HIT: 'hit', MISS: 'miss', STALE: 'stale', BYPASS: 'bypass' } as const

/** What busts go through: the public methods, so namespaces and tags are handled as for users. */
export type CacheBusting = Pick<FastifyCache, 'delete' | 'invalidateTags' | 'clear'>

/**
 * Log lines on the request path go through `request.log` (its `reqId`), marked as ours; throttled
 * ones through the plugin's logger with the request's id (see warn).
 */
const PLUGIN = 'fastify-redis-cache'

// Decoded heads and gunzipped bodies of recently hit entries, so hits skip that work.
const DECODED_MAX_BYTES = 32 * 1024 * 1024
/**
 * A background refresh is a request the plugin sends to itself (light-my-request builds its raw
 * request from this class). Only the class marks it: it carries the client's headers and address
 * and nothing else, so the handler sees what the client sent, and nothing a client can send makes
 * a request of its own skip the cache.
 */
class RefreshRequest extends IncomingMessage {}

export class RouteCache {
  readonly core: CacheCore
  /** `fastify.cache`, for busts only. */
  readonly fastifyCache: CacheBusting
  readonly log: FastifyBaseLogger
  /** Misses being fetched in this process, by entry id: later requests wait for them. */
  readonly flights = new Flights<Buffer | null>()
  /** The local tier or the memory store, read synchronously on the hit path. */
  readonly nearby: CacheCore['nearby']
  /** Checked once: building the debug line's fields costs an allocation on every request. */
  readonly debug: boolean
  /** Whether route decisions are traced (an OpenTelemetry SDK is registered). */
  private readonly traced: boolean
  private readonly fastify: FastifyInstance
  /** Entries being refreshed in the background, so each is refreshed once at a time. */
  private readonly refreshes = new BackgroundRefresh()
  /** Entries being refreshed in the background: when the entry they replace was stored. */
  private readonly replacing = new Map<string, number>()
  private readonly decoded = new DecodedEntries(DECODED_MAX_BYTES)
  /**
   * Entries read from a layer in this process (the local tier, the memory store), by the Buffer
   * it hands out: the same one while the entry lasts, so the decoded entry lives as long as it
   * and no longer, with views of its bytes rather than a copy, and no bound of its own.
   */
  private readonly decodedNearby = attachment<HttpEntry>('fastify-redis-cache.route-entry')
  /** Warnings a client can cause on every request (a key its request cannot make) are throttled. */
  private readonly warnings = new Throttle()

  constructor (fastify: FastifyInstance, core: CacheCore, cache: CacheBusting) {
    this.fastify = fastify
    this.core = core
    this.fastifyCache = cache
    this.log = core.log
    this.nearby = core.nearby
    this.debug = this.log.level === 'debug' || this.log.level === 'trace'
    this.traced = core.telemetry.on
  }

  /** Whether a request is this process's own background refresh (which must not hit). */
  isRefresh (request: FastifyRequest): boolean {
    return request.raw instanceof RefreshRequest
  }

  /**
   * Reads a stored response: null when an invalidation covers it (a miss), or when it is
   * unreadable (a miss too: deleted, counted, logged).
   */
  readEntry (request: FastifyRequest, bytes: Buffer, route: CompiledRoute, nearby = false): HttpEntry | null {
    const state = request[kState] as RequestState
    const known = nearby ? this.decodedNearby.get(bytes) : this.decoded.get(state.entryId, bytes)
    if (known !== undefined) return this.core.admits(state.fullKey, bytes) ? known : null
    try {
      const entry = decodeEntry(bytes)
      // A status this route never stores is forged or stale bytes, not an answer to replay.
      if (route.byResponse ? entry.status === 206 || entry.status === 304 : !route.statuses.has(entry.status)) throw new CacheDeserializationError(`Stored response has status ${entry.status}, which this route does not store`)
      if (nearby) this.decodedNearby.set(bytes, entry)
      else this.decoded.remember(state.entryId, entry)
      return this.core.admits(state.fullKey, bytes) ? entry : null
    } catch (err) {
      this.core.failures.count(err, 'get', state.fullKey, request)
      this.core.discard(state.fullKey)
      return null
    }
  }

  /** Logs a warning a request caused, at most once every few seconds. */
  warn (request: FastifyRequest, fields: Record<string, unknown>, message: string): void {
    const suppressed = this.warnings.pass()
    // The plugin's logger, with the request's id: a route's log level must not swallow a
    // throttled line (the others of its interval are left out anyway).
    if (suppressed !== undefined) this.log.warn({ reqId: request.id, ...fields, url: request.url, suppressed }, `fastify-redis-cache: ${message}`)
  }

  countHit (route: CompiledRoute, bytes: number): void {
    const stats = this.core.stats
    stats.hits++
    stats.bytesRead += bytes
    stats.namespaceHit(route.namespace)
    route.misses.note(false)
  }

  /**
   * Replays the request in-process, from the client's address and with its headers, so that the
   * route's hooks judge it as they judged the client and the handler's response is stored. Only
   * the validators are left out: the refresh needs the whole response, not a 304. `replacing`:
   * when the entry being refreshed was stored; only a newer one ends the refresh. Returns the
   * refresh under way (this one or one started before), or undefined when there is none.
   */
  refreshInBackground (request: FastifyRequest, entryId: string, replacing: number): Promise<void> | undefined {
    // Only a request the replay can repeat faithfully is refreshed. A socket that is gone has no
    // address any more, and light-my-request would then send from 127.0.0.1 (a client could
    // close its connection to be taken for the loopback); without a Host header (HTTP/1.0,
    // HTTP/2) it would add one of its own, and the replay would fill another entry; a TLS socket
    // it cannot imitate (`request.protocol` would say http). The stale entry then stays until it
    // expires, and the next miss refreshes it.
    const remoteAddress = request.socket.remoteAddress
    if (remoteAddress === undefined || request.headers.host === undefined || (request.socket as TLSSocket).encrypted === true) return undefined
    this.refreshes.start(entryId, () => {
      const headers = { ...request.headers }
      delete headers['if-none-match']
      delete headers['if-modified-since']
      this.replacing.set(entryId, replacing)
      return this.fastify.inject({ method: 'GET', url: request.url, headers, remoteAddress, Request: RefreshRequest })
        .finally(() => this.replacing.delete(entryId))
    }, (err) => request.log.warn({ plugin: PLUGIN, err, url: request.url }, 'fastify-redis-cache: background refresh failed'))
    return this.refreshes.get(entryId)
  }

  /** A hit past the route's `eagerRefresh`: refreshed in the background, once at a time. */
  refreshEarly (request: FastifyRequest, entryId: string, replacing: number): void {
    if (this.refreshes.get(entryId) !== undefined) return
    if (this.refreshInBackground(request, entryId, replacing) !== undefined) this.core.stats.eagerRefreshes++
  }

  /**
   * What a request that fetches an entry accepts as the result another instance stored: a fresh
   * entry, and for a background refresh one newer than the entry it replaces (under eager
   * refresh that one is still fresh).
   */
  usable (entryId: string): (bytes: Buffer) => boolean {
    const replacing = this.replacing.get(entryId)
    if (replacing === undefined) return isFreshBytes
    return (bytes) => isFreshBytes(bytes) && storedAtOf(bytes) > replacing
  }

  /**
   * Answers from an entry in the lookup hook; the handler does not run. Undefined, with the reply
   * untouched, when the entry's body cannot be read back.
   */
  sendEntry (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, outcome: Outcome, cacheStatus: string, now: number): FastifyReply | undefined {
    const state = request[kState] as RequestState
    // The handler is not asked after all: the client's own conditionals decide a 304, never the
    // validators put on the request for it (revalidation.ts).
    if (state.revalidation !== null) {
      restoreConditionals(request, state.revalidation)
      state.revalidation = null
    }
    // A byte range is cut from the body as the client would have it without gzip.
    const body = this.bodyOf(request, entry, state.range !== undefined)
    if (body === null) return undefined
    state.answered = true
    state.untyped = entry.headers['content-type'] === undefined
    const payload = this.replay(request, reply, entry, body, outcome, cacheStatus, now)
    return reply.send(state.range !== undefined && payload !== null && entry.status === 200 ? answerRange(reply, payload, state.range) : payload)
  }

  /**
   * The body to send from an entry: the stored bytes, gunzipped for a client that does not take
   * gzip. Null when they cannot be gunzipped (a corrupt or truncated entry): it is then
   * unreadable like any other, so dropped and counted, and the request is a miss.
   */
  bodyOf (request: FastifyRequest, entry: HttpEntry, plain = false): Buffer | null {
    if (entry.envelope.encoding !== ENCODING_GZIP || (!plain && acceptsGzip(request.headers['accept-encoding']))) return entry.body
    const { fullKey, entryId } = request[kState] as RequestState
    try {
      return this.decoded.plainBody(entryId, entry, this.decodedNearby.get(entry.stored) === entry)
    } catch (err) {
      this.decoded.forget(entryId)
      this.core.failures.count(err, 'get', fullKey, request)
      this.core.discard(fullKey)
      return null
    }
  }

  /**
   * Sets status and headers from an entry and returns the body to send (from bodyOf).
   * `cacheStatus` is the whole Cache-Status value.
   */
  replay (request: FastifyRequest, reply: FastifyReply, entry: HttpEntry, body: Buffer, outcome: Outcome, cacheStatus: string, now: number): Buffer | null {
    reply.code(entry.status)
    for (const name of entry.headerNames) reply.header(name, entry.headers[name])
    keepPrivate(request, reply)
    this.announce(request, reply, outcome, cacheStatus)
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
    if (entry.status === 200 && notModified(request, etag, entry.headers)) {
      reply.code(304)
      return null
    }
    return body
  }

  /** The cache headers of an answer not replayed from an entry; `status` without the cache name. */
  decided (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, status: string): void {
    this.announce(request, reply, outcome, `${CACHE_NAME}; ${status}`)
  }

  /** Sets X-Cache and the whole Cache-Status value, and logs and traces the decision. */
  announce (request: FastifyRequest, reply: FastifyReply, outcome: Outcome, cacheStatus: string): void {
    reply.header('x-cache', outcome)
    reply.header('cache-status', cacheStatus)
    // The plugin's logger (DEBUG=true lowers its level alone), with the request's id.
    if (this.debug) this.log.debug({ reqId: request.id, url: request.url, key: request[kState]?.fullKey, outcome, status: cacheStatus }, 'fastify-redis-cache: route cache decision')
    if (this.traced) {
      const state = request[kState]
      this.core.telemetry.decision(state?.namespace, state?.fullKey, OUTCOMES[outcome], cacheStatus, state === null ? Date.now() : state.lookedUpAt, state?.nearby === true)
    }
  }
}
