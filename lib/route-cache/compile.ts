// Compiling `config.cache` once, in onRoute: everything a request on the route needs is checked
// and worked out here, so bad options fail registration naming the route and the hooks do no
// option handling per request.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { CacheKey, Credentials, RouteCacheBustOptions, RouteCacheOptions, RouteDefaults } from '../../types'
import type { CacheCore } from '../cache/core'
import { CacheConfigError } from '../errors'
import type { StaleWindows } from '../freshness'
import { DEFAULT_NAMESPACE, toKey, validateEntryTags, validateNamespace, validateStaleSeconds, validateTags } from '../keys'
import { validateEagerRefresh, validateTimeout } from '../resilience'
import { schemaProblem } from '../schema-check'
import { RouteCacheOptionsSchema } from '../../types/route-options'
import { RecentShare } from './recent-share'
import { constraintKey, type UrlKeys } from './request-key'

export interface CompiledRoute {
  namespace: string
  /** `redisKey('', namespace)`: a route's entry keys are this plus the key. */
  keyPrefix: string
  /** Full default keys by host and URL, so a hit builds no string. */
  urlKeys: UrlKeys
  /** The route's constraints, as they end its default keys. */
  constraintKey: string
  ttl: number
  /** How long the store keeps an entry: `ttl` plus the longer stale window. */
  keepFor: number
  windows: StaleWindows
  /** Fraction of `ttl` after which a hit refreshes the entry in the background; 0: never. */
  eagerRefresh: number
  /** Milliseconds a miss with an entry within staleIfError waits for the handler; 0: no limit. */
  softTimeout: number
  key: RequestValue<CacheKey> | undefined
  tags: RequestValue<string[]> | undefined
  vary: string[]
  statuses: Set<number>
  /** True or false as the route says; unset, as its clients' Accept-Encoding suggests. */
  compress: boolean | undefined
  /** Of its recent requests, those that took gzip, and those that missed (recent-share.ts). */
  gzipClients: RecentShare
  misses: RecentShare
  credentials: Credentials
  /** Hits are answered in onRequest, before the route's other hooks (an opt-in). */
  skipHooksOnHit: boolean
  maxAge: number | undefined
  /** The response decides freshness (RFC 9111) rather than the route's ttl. */
  byResponse: boolean
  /** The response header tags are read from (lower case), if any. */
  tagHeader: string | undefined
}

// The callbacks as the hooks call them: the route's request type is the user's concern.
type RequestValue<T> = T | ((request: FastifyRequest) => T)
type MutationValue<T> = T | ((request: FastifyRequest, reply: FastifyReply) => T)

export interface CompiledBust {
  namespace: string
  keys: MutationValue<CacheKey[]> | undefined
  tags: MutationValue<string[]> | undefined
  /** A bust that names only a namespace clears it. */
  clearNamespace: boolean
}

// What `vary` may list: RFC 9110 tokens, as header names are.
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/

/** What compiling a route needs besides its `config.cache`. */
export interface RouteContext {
  /** `GET /path`, for errors and logs. */
  where: string
  /** The constraints Fastify picks the route by. */
  constraints: Record<string, unknown> | undefined
  defaults: Required<RouteDefaults>
}

/** A route's `config.cache`, compiled with its bust; a CacheConfigError naming the route if wrong. */
export function compileRouteCache (options: RouteCacheOptions, context: RouteContext, core: CacheCore): { route: CompiledRoute, bust: CompiledBust | undefined } {
  const what = `config.cache of ${context.where}`
  if (typeof options !== 'object' || options === null) {
    throw new CacheConfigError(`fastify-redis-cache: ${what} must be an object or false`)
  }
  // Checked in this order, so a route with several mistakes is told of the same one every time:
  // a misspelled name first, then the rules with messages of their own, then the schema's types.
  const problem = schemaProblem(RouteCacheOptionsSchema, options, 'config.cache.')
  if (problem?.startsWith('unknown') === true) throw invalid(what, problem)
  const route = compileRoute(options, context, core, what)
  const bust = options.bust === undefined ? undefined : compileBust(options.bust, route.namespace, context.where)
  if (problem !== undefined) throw invalid(what, problem)
  return { route, bust }
}

function compileRoute (options: RouteCacheOptions, context: RouteContext, core: CacheCore, what: string): CompiledRoute {
  const windows: StaleWindows = {
    staleWhileRevalidate: check(what, () => validateStaleSeconds(options.staleWhileRevalidate, 'staleWhileRevalidate')),
    staleIfError: check(what, () => validateStaleSeconds(options.staleIfError, 'staleIfError'))
  }
  const ttl = check(what, () => core.resolveTtl(options.ttl))
  if (options.key !== undefined && typeof options.key !== 'function') check(what, () => toKey(options.key))
  if (Array.isArray(options.tags)) check(what, () => validateEntryTags(options.tags))
  else if (options.tags !== undefined && typeof options.tags !== 'function') throw invalid(what, 'tags must be an array or a function')
  const statuses = options.statuses ?? [200]
  if (!Array.isArray(statuses) || !statuses.every((s) => Number.isInteger(s) && s >= 200 && s <= 599)) {
    throw invalid(what, 'statuses must be an array of HTTP status codes')
  }
  // A 206 answers one Range; stored under a key that ignores Range, it would answer plain GETs.
  if (statuses.includes(206)) throw invalid(what, 'statuses cannot include 206: a partial response is never stored')
  const vary = options.vary ?? []
  if (!Array.isArray(vary) || !vary.every((h) => typeof h === 'string' && HEADER_NAME.test(h))) {
    throw invalid(what, 'vary must be an array of header names')
  }
  // max-age=0 is meaningful: stored downstream, revalidated before each use.
  if (options.maxAge !== false) check(what, () => validateStaleSeconds(options.maxAge, 'maxAge'))
  const namespace = options.namespace === undefined ? DEFAULT_NAMESPACE : check(what, () => validateNamespace(options.namespace))
  const credentials = compileCredentials(options, context.defaults, what)
  const freshness = options.freshness ?? 'route'
  if (freshness !== 'route' && freshness !== 'response') throw invalid(what, "freshness must be 'route' or 'response'")
  const tagHeader = options.tagHeader ?? (freshness === 'response' ? 'cache-tag' : false)
  if (tagHeader !== false && (typeof tagHeader !== 'string' || !HEADER_NAME.test(tagHeader))) throw invalid(what, 'tagHeader must be a header name or false')
  const eagerRefresh = options.eagerRefresh === undefined ? 0 : check(what, () => validateEagerRefresh(options.eagerRefresh))
  const softTimeout = compileSoftTimeout(options.timeout, freshness === 'response' ? undefined : windows, what)
  return {
    namespace,
    keyPrefix: core.layout.entry('', namespace),
    urlKeys: new Map(),
    constraintKey: constraintKey(context.constraints),
    ttl,
    keepFor: ttl + Math.max(windows.staleWhileRevalidate, windows.staleIfError),
    windows,
    eagerRefresh,
    softTimeout,
    key: options.key as RequestValue<CacheKey> | undefined,
    tags: options.tags as RequestValue<string[]> | undefined,
    vary: vary.map((h) => h.toLowerCase()),
    statuses: new Set(statuses),
    compress: options.compress,
    gzipClients: new RecentShare(),
    misses: new RecentShare(),
    credentials,
    skipHooksOnHit: options.skipHooksOnHit === true,
    maxAge: options.maxAge === false ? undefined : options.maxAge,
    byResponse: freshness === 'response',
    tagHeader: tagHeader === false ? undefined : tagHeader.toLowerCase()
  }
}

/**
 * A route's `timeout`: `soft` only, as its schema says (a request's handler is never abandoned).
 * `windows`: the route's, undefined when responses bring their own (freshness: 'response').
 */
function compileSoftTimeout (timeout: RouteCacheOptions['timeout'], windows: StaleWindows | undefined, what: string): number {
  if (timeout === undefined) return 0
  const { soft } = check(what, () => validateTimeout(timeout))
  // The soft timeout serves the expired entry kept for staleIfError: without one it never applies.
  if (soft > 0 && windows?.staleIfError === 0) throw invalid(what, 'timeout.soft needs staleIfError: it serves the entry kept for it')
  return soft
}

const CREDENTIALS: readonly Credentials[] = ['bypass', 'shared', 'per-user']

/** What the route does with requests carrying Cookie or Authorization; see `credentials`. */
function compileCredentials (options: RouteCacheOptions, defaults: Required<RouteDefaults>, what: string): Credentials {
  const credentials = options.credentials ?? (options.allowAuthorization === true ? 'per-user' : defaults.credentials)
  if (!CREDENTIALS.includes(credentials)) throw invalid(what, `credentials must be one of ${CREDENTIALS.join(', ')}`)
  // A key that is the same for every request cannot tell one user from another.
  if (credentials === 'per-user' && typeof options.key !== 'function') {
    throw invalid(what, "credentials: 'per-user' needs a key function that includes the user")
  }
  return credentials
}

function compileBust (bust: RouteCacheBustOptions, routeNamespace: string, where: string): CompiledBust {
  const what = `config.cache.bust of ${where}`
  if (typeof bust !== 'object' || bust === null) throw invalid(what, 'bust must be an object')
  const namespace = bust.namespace === undefined ? routeNamespace : check(what, () => validateNamespace(bust.namespace))
  const keys = bust.keys
  if (Array.isArray(keys)) check(what, () => keys.forEach(toKey))
  else if (bust.keys !== undefined && typeof bust.keys !== 'function') throw invalid(what, 'bust.keys must be an array or a function')
  if (Array.isArray(bust.tags)) check(what, () => validateTags(bust.tags))
  else if (bust.tags !== undefined && typeof bust.tags !== 'function') throw invalid(what, 'bust.tags must be an array or a function')
  const clearNamespace = bust.keys === undefined && bust.tags === undefined
  if (clearNamespace && bust.namespace === undefined) throw invalid(what, 'bust needs keys, tags or a namespace')
  return { namespace, keys: bust.keys as MutationValue<CacheKey[]> | undefined, tags: bust.tags as MutationValue<string[]> | undefined, clearNamespace }
}

/** The error of an option that is wrong: `what` names the option and the route. */
function invalid (what: string, message: string, cause?: unknown): CacheConfigError {
  return new CacheConfigError(`fastify-redis-cache: invalid ${what}: ${message}`, cause === undefined ? undefined : { cause })
}

/** Runs a shared validator (keys.ts, the TTL rule), its error told as one of `what`. */
function check<T> (what: string, validate: () => T): T {
  try {
    return validate()
  } catch (err) {
    throw invalid(what, (err as Error).message, err)
  }
}
