// Compiling `config.cache` once, in onRoute: everything a request on the route needs is checked
// and worked out here, so bad options fail registration naming the route and the hooks do no
// option handling per request.
import type { RouteCacheBustOptions, RouteCacheOptions } from '../../types'
import type { CacheCore } from '../cache/core'
import { CacheConfigError } from '../errors'
import type { StaleWindows } from '../freshness'
import { DEFAULT_NAMESPACE, validateKey, validateNamespace, validateStaleSeconds, validateTags } from '../keys'

export interface CompiledRoute {
  namespace: string
  /** `redisKey('', namespace)`: a route's entry keys are this plus the key. */
  keyPrefix: string
  /** Full keys of the default (URL) key by request URL, so a hit builds no string. */
  urlKeys: Map<string, string>
  ttl: number
  /** How long the store keeps an entry: `ttl` plus the longer stale window. */
  keepFor: number
  windows: StaleWindows
  key: RouteCacheOptions['key']
  tags: RouteCacheOptions['tags']
  vary: string[]
  statuses: Set<number>
  compress: boolean | undefined
  allowAuthorization: boolean
  maxAge: number | undefined
}

export interface CompiledBust {
  namespace: string
  keys: RouteCacheBustOptions['keys']
  tags: RouteCacheBustOptions['tags']
  /** A bust that names only a namespace clears it. */
  clearNamespace: boolean
}

// What `vary` may list: RFC 9110 tokens, as header names are.
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/

export function compileRoute (options: RouteCacheOptions, where: string, core: CacheCore): CompiledRoute {
  if (typeof options !== 'object' || options === null) {
    throw new CacheConfigError(`fastify-redis-cache: config.cache of ${where} must be an object or false`)
  }
  // Checked in this order, so a route with several mistakes is told of the same one every time.
  const what = `config.cache of ${where}`
  const windows: StaleWindows = {
    staleWhileRevalidate: check(what, () => validateStaleSeconds(options.staleWhileRevalidate, 'staleWhileRevalidate')),
    staleIfError: check(what, () => validateStaleSeconds(options.staleIfError, 'staleIfError'))
  }
  const ttl = check(what, () => core.resolveTtl(options.ttl))
  if (options.key !== undefined && typeof options.key !== 'function') check(what, () => validateKey(options.key))
  if (Array.isArray(options.tags)) check(what, () => validateTags(options.tags))
  else if (options.tags !== undefined && typeof options.tags !== 'function') throw invalid(what, 'tags must be an array or a function')
  const statuses = options.statuses ?? [200]
  if (!Array.isArray(statuses) || !statuses.every((s) => Number.isInteger(s) && s >= 200 && s <= 599)) {
    throw invalid(what, 'statuses must be an array of HTTP status codes')
  }
  const vary = options.vary ?? []
  if (!Array.isArray(vary) || !vary.every((h) => typeof h === 'string' && HEADER_NAME.test(h))) {
    throw invalid(what, 'vary must be an array of header names')
  }
  // max-age=0 is meaningful: stored downstream, revalidated before each use.
  if (options.maxAge !== false) check(what, () => validateStaleSeconds(options.maxAge, 'maxAge'))
  const namespace = options.namespace === undefined ? DEFAULT_NAMESPACE : check(what, () => validateNamespace(options.namespace))
  return {
    namespace,
    keyPrefix: core.layout.entry('', namespace),
    urlKeys: new Map(),
    ttl,
    keepFor: ttl + Math.max(windows.staleWhileRevalidate, windows.staleIfError),
    windows,
    key: options.key,
    tags: options.tags,
    vary: vary.map((h) => h.toLowerCase()),
    statuses: new Set(statuses),
    compress: options.compress,
    allowAuthorization: options.allowAuthorization === true,
    maxAge: options.maxAge === false ? undefined : options.maxAge
  }
}

export function compileBust (bust: RouteCacheBustOptions, routeNamespace: string, where: string): CompiledBust {
  const what = `config.cache.bust of ${where}`
  if (typeof bust !== 'object' || bust === null) throw invalid(what, 'bust must be an object')
  const namespace = bust.namespace === undefined ? routeNamespace : check(what, () => validateNamespace(bust.namespace))
  if (Array.isArray(bust.keys)) check(what, () => (bust.keys as string[]).forEach(validateKey))
  else if (bust.keys !== undefined && typeof bust.keys !== 'function') throw invalid(what, 'bust.keys must be an array or a function')
  if (Array.isArray(bust.tags)) check(what, () => validateTags(bust.tags))
  else if (bust.tags !== undefined && typeof bust.tags !== 'function') throw invalid(what, 'bust.tags must be an array or a function')
  const clearNamespace = bust.keys === undefined && bust.tags === undefined
  if (clearNamespace && bust.namespace === undefined) throw invalid(what, 'bust needs keys, tags or a namespace')
  return { namespace, keys: bust.keys, tags: bust.tags, clearNamespace }
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
