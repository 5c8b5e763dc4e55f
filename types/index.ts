// Public types of fastify-redis-cache, and the augmentation of Fastify's interfaces that makes
// `fastify.cache` and route `config.cache` typed for users.
import type { FastifyReply, FastifyRequest, preHandlerHookHandler } from 'fastify'
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import type { Static } from '@sinclair/typebox'
import type { Credentials, GetOrSetDefaults, ManagementRoutesOptionsSchema, PlainOptions } from './options'
import type { CacheInfo, CacheStatistics } from './statistics'

export type { CallbackTimeout, CircuitBreakerOptions, CompressionOptions, Credentials, GetOrSetDefaults, LocalTierOptions, LockOptions, MemoryStoreOptions, RouteDefaults, TelemetryOptions } from './options'
export type { CacheInfo, CacheStatistics } from './statistics'

/** Turns values into bytes and back. JSON by default. */
export interface Serializer {
  serialize (value: unknown): Buffer | string
  deserialize (data: Buffer): unknown
}

/** Connection settings: a URL and/or ioredis options (host, port, db, username, password, tls, sentinels, ...). */
export interface RedisConnectionOptions extends RedisOptions {
  url?: string
  /** Name under which @fastify/redis decorates `fastify.redis[namespace]`. Default `'cache'`. */
  namespace?: string
}

/** A Redis Cluster: the startup nodes and ioredis cluster options. */
export interface RedisClusterConnectionOptions {
  cluster: { nodes: ClusterNode[], options?: ClusterOptions }
  namespace?: string
}

/** A client the application created; closed with the app only when `closeClient` is true. */
export interface RedisClientOption {
  client: Redis | Cluster
  closeClient?: boolean
  namespace?: string
}

/** The management routes: where they live and how they are protected. */
export interface ManagementRoutesOptions extends Static<typeof ManagementRoutesOptionsSchema> {
  /** Your own authentication instead of (or on top of) the token. */
  preHandler?: preHandlerHookHandler
}

export interface CacheOptions extends Omit<PlainOptions, 'routes'> {
  /**
   * `{ url }`, ioredis options, `{ cluster }`, `{ client, closeClient }`, or `false` for the
   * in-process memory store. Unset: `REDIS_URL`/`REDIS_HOST`, else the memory store.
   */
  redis?: false | RedisConnectionOptions | RedisClusterConnectionOptions | RedisClientOption
  serializer?: Serializer
  /** The management routes; `false` for none. */
  routes?: false | ManagementRoutesOptions
}

export interface NamespaceOption {
  namespace?: string
}

export interface SetOptions extends NamespaceOption {
  /** Seconds; default `defaultTtl`, clamped to `maxTtl`. */
  ttl?: number
  /** `false` never compresses this value. */
  compress?: boolean
  tags?: string[]
}

/**
 * getOrSet's options. `staleWhileRevalidate`, `staleIfError`, `eagerRefresh`, `timeout` and
 * `jitter` default to the plugin's `getOrSet` option; `false` turns a default off for one call.
 */
export interface GetOrSetOptions extends SetOptions, GetOrSetDefaults {
  /** Run the callback and store its result even when an entry exists. */
  forceRefresh?: boolean
}

/** What a getOrSet callback is handed: it may adapt how its result is stored. */
export interface GetOrSetContext<T = unknown> {
  /**
   * The value being replaced: an expired one kept by `staleWhileRevalidate`/`staleIfError`, or
   * the fresh one an eager refresh replaces. Undefined when there is none.
   */
  readonly stale: T | undefined
  /** Seconds the result stays fresh, instead of the call's `ttl` (clamped to `maxTtl`). */
  setTtl (seconds: number): void
  /** The result's tags, instead of the call's `tags`. */
  setTags (tags: string[]): void
  /** Return the result to the callers without storing it. */
  skip (): void
}

/**
 * A getOrSet callback; callbacks that take no argument are callbacks too. `S`, the type of
 * `ctx.stale`, is `T` when `T` is given (`getOrSet<Report>(...)`); when `T` is inferred from what
 * the callback returns, `ctx.stale` is `unknown` (TypeScript cannot infer both at once).
 */
export type GetOrSetCallback<T, S = T> = (ctx: GetOrSetContext<S>) => T | Promise<T>

export interface RateLimitOptions {
  /** Requests allowed per window. */
  max: number
  /** Window length in seconds. */
  window: number
  /**
   * What to do when Redis cannot count the request (down, timed out, out of memory, scripting
   * refused). Every such failure is counted in `errors` and logged (throttled).
   * - unset (default): follow `throwOnError`: with `false` the request is let through (counted in
   *   `rateLimitFailedOpen`), with `true` the typed error is thrown;
   * - `true`: reject with `RedisConnectionError` whatever `throwOnError` says, for limits that
   *   guard something costly or abusable (a login, a paid API);
   * - `false`: let the request through whatever `throwOnError` says.
   */
  failClosed?: boolean
}

export interface RateLimitResult {
  limit: number
  remaining: number
  /** Seconds until the window resets. */
  reset: number
}

/** The `fastify.cache` methods with the namespace fixed. */
export interface CacheNamespaceView {
  readonly name: string
  get<T = unknown> (key: string): Promise<T | null>
  set (key: string, value: unknown, opts?: Omit<SetOptions, 'namespace'>): Promise<boolean>
  delete (keys: string | string[]): Promise<number>
  exists (keys: string | string[]): Promise<number>
  getOrSet<T, S = T> (key: string, callback: GetOrSetCallback<T, S>, opts?: Omit<GetOrSetOptions, 'namespace'>): Promise<T>
  expire (key: string, seconds: number): Promise<boolean>
  ttl (key: string): Promise<number>
  clear (): Promise<number>
  redisKey (key: string): string
}

export interface FastifyCache {
  get<T = unknown> (key: string, opts?: NamespaceOption): Promise<T | null>
  set (key: string, value: unknown, opts?: SetOptions): Promise<boolean>
  delete (keys: string | string[], opts?: NamespaceOption): Promise<number>
  exists (keys: string | string[], opts?: NamespaceOption): Promise<number>
  getOrSet<T, S = T> (key: string, callback: GetOrSetCallback<T, S>, opts?: GetOrSetOptions): Promise<T>
  expire (key: string, seconds: number, opts?: NamespaceOption): Promise<boolean>
  ttl (key: string, opts?: NamespaceOption): Promise<number>
  clear (namespace?: string): Promise<number>
  invalidateTags (tags: string | string[]): Promise<number>
  ping (): Promise<boolean>
  info (): Promise<CacheInfo>
  getStatistics (): CacheStatistics
  resetStatistics (): void
  rateLimit (id: string, opts: RateLimitOptions): Promise<RateLimitResult>
  namespace (name: string): CacheNamespaceView
  redisKey (key: string, namespace?: string): string
}

type RequestValue<T> = T | ((request: FastifyRequest) => T)

/**
 * A cache key: a string, used as it is, or its parts, joined so that different parts never make
 * the same key (`['item:5', 'reviews']` and `['item', '5', 'reviews']` are two keys).
 */
export type CacheKey = string | readonly string[]

export interface RouteCacheBustOptions {
  namespace?: string
  keys?: CacheKey[] | ((request: FastifyRequest, reply: FastifyReply) => CacheKey[])
  tags?: string[] | ((request: FastifyRequest, reply: FastifyReply) => string[])
}

export interface RouteCacheOptions {
  ttl?: number
  namespace?: string
  /** The entry's key; default: the host, the path, the sorted query and the route's constraints. */
  key?: RequestValue<CacheKey>
  /**
   * Gzip bodies over `compression.threshold`: `true` always, `false` never; unset, when most of
   * the route's recent clients send `Accept-Encoding: gzip` (so the common hit needs no zlib).
   */
  compress?: boolean
  tags?: RequestValue<string[]>
  /** Request headers whose values split the entry. */
  vary?: string[]
  /** Seconds past `ttl` during which the old entry is served while it is refreshed. */
  staleWhileRevalidate?: number
  /** Seconds past `ttl` during which the old entry is served when the handler fails or is slow. */
  staleIfError?: number
  /**
   * Fraction of `ttl` (between 0 and 1) after which a hit answers from the entry and refreshes it
   * in the background, once, so a hot entry never expires under traffic.
   */
  eagerRefresh?: number | false
  /**
   * `soft`: milliseconds after which a request that found an expired entry within
   * `staleIfError` (the route's, or with `freshness: 'response'` the response's) is answered
   * from it while the handler finishes and stores its response.
   */
  timeout?: { soft?: number } | false
  /** Statuses that are stored. Default `[200]`. */
  statuses?: number[]
  /**
   * Requests with `Cookie` or `Authorization`: `'bypass'` (default) passes them to the handler,
   * `'shared'` says the answer does not depend on them, `'per-user'` that `key` includes the user.
   */
  credentials?: Credentials
  /** @deprecated `credentials: 'per-user'` says the same. */
  allowAuthorization?: boolean
  /**
   * Answer hits in `onRequest`, before every other hook: authentication and authorization in
   * `preValidation` or `preHandler` hooks do not run on hits. Faster; only for public routes.
   */
  skipHooksOnHit?: boolean
  /** `Cache-Control: max-age` (seconds) sent to clients and CDNs; `false` sends none. */
  maxAge?: number | false
  /** Invalidate after a successful (2xx) response. */
  bust?: RouteCacheBustOptions
  /**
   * What decides freshness: `'route'` (default) the route's `ttl`; `'response'` the response's
   * Cache-Control, Expires and Age as a shared HTTP cache reads them (RFC 9111), the route's
   * `ttl` then only the ceiling. See docs/http-caching.md.
   */
  freshness?: 'route' | 'response'
  /**
   * A response header whose space- or comma-separated values become the entry's tags, for
   * `invalidateTags` (`Cache-Tag`, `Surrogate-Key`). Default `'cache-tag'` with
   * `freshness: 'response'`, none otherwise; `false` reads none.
   */
  tagHeader?: string | false
}

declare module 'fastify' {
  interface FastifyInstance {
    cache: FastifyCache
  }
  interface FastifyContextConfig {
    cache?: RouteCacheOptions | false
  }
}
