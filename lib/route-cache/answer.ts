// The lookup stage: answering from the cache without running the handler. The hit path is
// one store read (or a synchronous read of the local tier) and a send of the stored bytes. On a
// miss, requests for the same entry are collapsed: within this process on a flight, across
// instances on the distributed lock, so one handler runs and the others get its response.
import type { FastifyReply, FastifyRequest, onRequestHookHandler, preHandlerHookHandler } from 'fastify'
import { freshness, isFresh, secondsLeft } from '../freshness'
import type { HeldLock } from '../lock'
import { refreshDue } from '../resilience'
import { awaitWithin, Fallback } from '../timeouts'
import type { CompiledRoute } from './compile'
import type { HttpEntry } from './http-entry'
import { acceptsGzip, CACHE_NAME, COLLAPSED_STATUS, hitStatus } from './replay'
import { varyMatches } from './entry-policy'
import { requestKey, variantOf } from './request-key'
import { askToRevalidate, restoreConditionals } from './revalidation'
import type { RouteCache } from './route-cache'
import { bypass, kState, type RequestState } from './state'

// How long requests that found another request already fetching their entry wait for it
// before running the handler themselves.
const COLLAPSE_WAIT_MS = 5000

/**
 * The hook that answers from the cache: a route-level preHandler, so that it runs after every
 * onRequest, preParsing, preValidation and preHandler hook of the route (authentication on hits
 * as on misses), or an onRequest hook for a route that opts into `skipHooksOnHit`.
 */
export function makeLookup (cache: RouteCache, route: CompiledRoute): onRequestHookHandler & preHandlerHookHandler {
  // Callback style, so a hit from the local tier is answered synchronously: no promise and no
  // microtask on the fastest path. Fastify ignores done() once a hook has replied.
  const traced = cache.core.telemetry.on
  const namespace = route.namespace
  return function answerFromCache (request, reply, done) {
    const state: RequestState = { outcome: 'MISS', answered: false, untyped: false, status: 'fwd=uri-miss', fullKey: '', field: undefined, entryId: '', stale: null, flight: null, lease: null, startedAt: 0, revalidation: null, range: undefined, namespace, lookedUpAt: traced ? Date.now() : 0, nearby: false }
    request[kState] = state
    const refusal = whyNotCached(cache, route, request, state)
    if (refusal !== null) {
      bypass(state, refusal)
      done()
      return
    }
    route.gzipClients.note(acceptsGzip(request.headers['accept-encoding']))
    const isRefresh = cache.isRefresh(request)
    const nearby = cache.nearby
    if (!isRefresh && nearby !== undefined && state.field === undefined) {
      const bytes = nearby.get(state.fullKey)
      if (bytes !== undefined && answerFromEntry(cache, route, request, reply, state, bytes, true)) return
    }
    // Once answered, the hook chain must stop here: with async onSend hooks the reply is not yet
    // `sent` when the lookup settles, and done() would run the handler as well.
    lookUp(cache, route, request, reply, state, isRefresh).then(() => { if (!state.answered) done() }, done)
  }
}

/**
 * Why a request neither reads nor fills the shared entry (its Cache-Status parameters), or null
 * when it does; then `state` has its key.
 */
function whyNotCached (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, state: RequestState): string | null {
  // A route for several methods: only GET and HEAD are answered from or stored in the cache.
  if (request.method !== 'GET' && request.method !== 'HEAD') return 'fwd=method'
  if (route.credentials === 'bypass') {
    if (request.headers.authorization !== undefined) return 'fwd=request; detail=authorization'
    if (request.headers.cookie !== undefined) return 'fwd=request; detail=cookie'
  }
  let fullKey: string | undefined
  try {
    fullKey = requestKey(route, request)
  } catch (err) {
    cache.warn(request, { err }, 'cannot build the cache key; request not cached')
    return 'fwd=bypass; detail=key'
  }
  if (fullKey === undefined) return 'fwd=request; detail=host'
  state.fullKey = state.entryId = fullKey
  if (route.vary.length > 0) {
    state.field = variantOf(route, request)
    state.entryId = `${fullKey}\n${state.field}`
  }
  if (route.byResponse) takeRange(request, state)
  return null
}

/**
 * A GET with one Range header (and no If-Range) is answered from the whole response: the handler
 * sees no Range, so what it answers can be stored, and the range is cut from it (range.ts).
 */
function takeRange (request: FastifyRequest, state: RequestState): void {
  const range = request.headers.range
  if (range === undefined || request.method !== 'GET' || request.headers['if-range'] !== undefined) return
  state.range = range
  delete request.headers.range
}

/**
 * Answers from stored bytes when they are fresh, or stale within staleWhileRevalidate (then
 * refreshing them in the background). False when the request goes on to the handler; an
 * expired entry is kept for staleIfError. `nearby`: the bytes come from a layer in this process.
 */
function answerFromEntry (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, bytes: Buffer, nearby = false): boolean {
  const entry = cache.readEntry(request, bytes, route, nearby)
  if (entry === null) return false
  const policy = entry.policy
  // Stored for other values of the headers its response varies on: a miss that replaces it.
  if (!selects(request, entry)) return false
  state.nearby = nearby
  const now = Date.now()
  // sendEntry gives undefined when the body cannot be read back: then this is a miss.
  switch (freshness(entry.envelope, policy?.windows ?? route.windows, now)) {
    case 'fresh':
      if (cache.sendEntry(request, reply, entry, 'HIT', hitStatus(entry, secondsLeft(entry.envelope, now)), now) === undefined) return false
      cache.countHit(route, bytes.length)
      // A hot entry is refreshed before it expires: no request ever waits for its handler.
      if (route.eagerRefresh > 0 && refreshDue(entry.envelope, route.eagerRefresh, now)) cache.refreshEarly(request, state.entryId, entry.envelope.storedAt)
      return true
    case 'stale-while-revalidate':
      if (cache.sendEntry(request, reply, entry, 'STALE', `${CACHE_NAME}; hit; fwd=stale; ttl=${secondsLeft(entry.envelope, now)}`, now) === undefined) return false
      cache.countHit(route, bytes.length)
      cache.refreshInBackground(request, state.entryId, entry.envelope.storedAt)
      return true
    default:
      // Kept whether or not it is still within staleIfError: onSend decides once the handler
      // has answered, and says `fwd=stale` either way.
      state.stale = entry
      state.status = 'fwd=stale'
      if (request.method === 'GET') askToRevalidate(request, state, entry)
      return false
  }
}

/** The store read, and on a miss the single-flight within this process and across instances. */
async function lookUp (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, isRefresh: boolean): Promise<void> {
  const core = cache.core
  // The lock a miss takes in its first read: a HEAD never runs the handler here, so never asks.
  let lock: HeldLock | null | undefined
  if (!isRefresh) {
    let bytes: Buffer | null
    try {
      // An entry with stale windows of its own (freshness: 'response') is read plainly: the
      // store cannot tell from the route's windows whether it may still be served.
      ({ bytes, lock } = await core.readOrClaim(state.fullKey, state.field, route.misses.most && !route.byResponse && request.method !== 'HEAD', route.windows.staleWhileRevalidate * 1000))
    } catch (err) {
      readFailed(cache, request, state, err)
      return
    }
    if (bytes !== null) {
      // An entry with a tag this instance has no stamp for waits for it (a hit pays nothing).
      const learning = core.learn(bytes)
      if (learning !== undefined) await learning
      // A read that took the lock found the entry past its staleWhileRevalidate: never answered.
      if (answerFromEntry(cache, route, request, reply, state, bytes)) return
    }
    if (route.softTimeout > 0 && state.stale !== null && request.method === 'GET') {
      if (lock) {
        // The refresh takes the lock itself.
        core.lock.abandon(lock)
        lock = undefined
      }
      if (await answerWithinSoftTimeout(cache, route, request, reply, state, state.stale)) return
    }
  }
  core.stats.misses++
  core.stats.namespaceMiss(route.namespace)
  route.misses.note(true)
  if (request.method === 'HEAD') return
  // Before the handler reads anything: an invalidation from now on covers what it answers.
  state.startedAt = Date.now()

  const running = cache.flights.join(state.entryId)
  if (running !== undefined && !isRefresh) {
    // Taken while a request of this process already works on the entry (it waited for another
    // instance, so holds no lock): this one waits for it instead.
    if (lock) core.lock.abandon(lock)
    const bytes = await waitFor(running)
    if (bytes !== null) await core.learn(bytes)
    const entry = bytes === null ? null : cache.readEntry(request, bytes, route)
    if (entry !== null && shareable(route, request, entry)) cache.sendEntry(request, reply, entry, 'MISS', COLLAPSED_STATUS, Date.now())
    // Otherwise the request ahead produced nothing storable, or took too long: run the handler.
    return
  }
  const flight = state.flight = cache.flights.open(state.entryId)
  // A hijacked reply ends without onSend: its waiters must still be let go. (An aborted one
  // still reaches onSend when its handler is done, and its waiters get that response.) A
  // listener on misses only: hits pay nothing for it.
  reply.raw.once('close', () => { if (reply.sent) releaseFlight(state) })
  // Other instances may be fetching the same entry: one of them runs the handler.
  const usable = cache.usable(state.entryId)
  const claim = lock === undefined ? await core.lock.claim(state.fullKey, usable, state.field) : await core.lock.claimed(lock, state.fullKey, usable, state.field)
  if (claim.lease !== undefined) {
    state.lease = claim.lease
    return
  }
  const bytes = claim.bytes
  if (bytes !== null) await core.learn(bytes)
  const entry = bytes === null ? null : cache.readEntry(request, bytes, route)
  if (entry !== null && shareable(route, request, entry)) {
    state.flight = null
    flight.settle(bytes)
    cache.sendEntry(request, reply, entry, 'MISS', COLLAPSED_STATUS, Date.now())
  }
}

/** A store read that failed: the request goes to the handler as if the route were not cached. */
function readFailed (cache: RouteCache, request: FastifyRequest, state: RequestState, err: unknown): void {
  cache.core.failures.count(err, 'get', state.fullKey, request)
  // A key of the other shape (the route's vary setting changed since it was stored), or foreign
  // data: unreadable like a corrupt entry, so dropped.
  if (err instanceof Error && err.message.startsWith('WRONGTYPE')) cache.core.discard(state.fullKey)
  // Not stored, so not revalidated: the handler's answer goes to the client as it is. (Only the
  // memory store hands out stale entries before this read, and it never fails.)
  /* c8 ignore next */
  if (state.revalidation !== null) restoreConditionals(request, state.revalidation)
  // Nor cut from a stored response: the handler (or upstream) answers the Range itself.
  if (state.range !== undefined) {
    request.headers.range = state.range
    state.range = undefined
  }
  bypass(state, 'fwd=bypass; detail=unavailable')
}

/** Whether the request selects the entry's variant (the Vary of a response, RFC 9111 4.1). */
function selects (request: FastifyRequest, entry: HttpEntry): boolean {
  const vary = entry.policy?.vary
  return vary === undefined || varyMatches(vary, request)
}

/**
 * Whether a response another request fetched answers this one too: the same variant and, when
 * the response decides freshness, fresh (one that must be revalidated at once, `no-cache` or
 * `max-age=0`, is not shared).
 */
function shareable (route: CompiledRoute, request: FastifyRequest, entry: HttpEntry): boolean {
  return selects(request, entry) && (!route.byResponse || isFresh(entry.envelope))
}

/**
 * A miss that found an expired entry within staleIfError, on a route with a soft timeout: the
 * handler runs in a background refresh (the same request, replayed); this request is answered
 * from its result if it lands within the timeout, else from the stale entry while the handler
 * finishes and stores its response. False when neither answered it (the refresh could not
 * start, or stored nothing fresh in time): then the request runs the handler itself.
 */
async function answerWithinSoftTimeout (cache: RouteCache, route: CompiledRoute, request: FastifyRequest, reply: FastifyReply, state: RequestState, stale: HttpEntry): Promise<boolean> {
  if (freshness(stale.envelope, stale.policy?.windows ?? route.windows) !== 'stale-if-error') return false
  const refreshing = cache.refreshInBackground(request, state.entryId, stale.envelope.storedAt)
  if (refreshing === undefined) return false
  const fallback = new Fallback<HttpEntry | null>()
  // Not served if an invalidation came since it was read.
  fallback.found(stale, () => cache.core.admits(state.fullKey, stale.stored))
  let servedStale = false
  await awaitWithin(refreshing.then(() => null), fallback, route.softTimeout, () => { servedStale = true })
  if (servedStale) {
    const now = Date.now()
    if (cache.sendEntry(request, reply, stale, 'STALE', `${CACHE_NAME}; hit; fwd=stale; detail=timeout; ttl=${secondsLeft(stale.envelope, now)}`, now) === undefined) return false
    cache.countHit(route, stale.stored.length)
    cache.core.stats.staleOnTimeout++
    return true
  }
  // The refresh finished in time: the entry it stored, read as any other.
  let bytes: Buffer | null
  try {
    bytes = await cache.core.read(state.fullKey, state.field)
  /* c8 ignore next 4: Redis failing right after the refresh wrote: the request goes on as a miss */
  } catch (err) {
    cache.core.failures.count(err, 'get', state.fullKey, request)
    return false
  }
  if (bytes === null) return false
  await cache.core.learn(bytes)
  return answerFromEntry(cache, route, request, reply, state, bytes)
}

// Settles the flight and releases the lock of a reply that never reached onSend (after onSend
// both are null already), so waiters do not hang.
function releaseFlight (state: RequestState): void {
  state.flight?.settle(null)
  state.lease?.release()
}

function waitFor (promise: Promise<Buffer | null>): Promise<Buffer | null> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<null>((resolve) => { timer = setTimeout(resolve, COLLAPSE_WAIT_MS, null) })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
