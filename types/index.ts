// Public types of fastify-redis-cache, and the augmentation of Fastify's interfaces that makes
// `fastify.cache` and route `config.cache` typed for users.
import type { preHandlerHookHandler } from 'fastify'
// @fastify/redis types `fastify.redis` (the cache's client is `fastify.redis.cache` by default).
import type { FastifyRedis } from '@fastify/redis'
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import type { Static } from '@sinclair/typebox'
import type { GetOrSetDefaults, ManagementRoutesOptionsSchema, PlainOptions } from './options'
import type { CacheInfo, CacheStatistics } from './statistics'
import type { RouteCacheOptions, RouteRateLimitOptions } from './route-options'

export type { CallbackTimeout, CircuitBreakerOptions, CompressionOptions, Credentials, GetOrSetDefaults, LocalTierOptions, LockOptions, MemoryStoreOptions, RouteDefaults, TelemetryOptions } from './options'
export type { CacheInfo, CacheStatistics } from './statistics'
export type { CacheKey, CacheRouteGeneric, RouteCacheBustOptions, RouteCacheOptions, RouteRateLimitOptions } from './route-options'

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

/**
 * `fastify.cache` under the name of the `decorator` option, for your own augmentation:
 * `declare module 'fastify' { interface FastifyInstance extends CacheDecorator<'redisCache'> {} }`.
 */
export type CacheDecorator<Name extends string> = { readonly [K in Name]: FastifyCache }

/** `fastify.redis`, as @fastify/redis decorates it: the cache's client under its namespace. */
export type CacheRedis = FastifyRedis

declare module 'fastify' {
  interface FastifyInstance {
    cache: FastifyCache
  }
  interface FastifyContextConfig {
    cache?: RouteCacheOptions | false
    rateLimit?: RouteRateLimitOptions | false
  }
}
