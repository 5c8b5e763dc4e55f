// Public types of fastify-redis-cache, and the augmentation of Fastify's interfaces that makes
// `fastify.cache` and route `config.cache` typed for users.
import type { FastifyReply, FastifyRequest, preHandlerHookHandler } from 'fastify'
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis'

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

export interface CompressionOptions {
  enabled?: boolean
  /** Serialized size in bytes at or above which values are gzipped. Default 1024. */
  threshold?: number
  /** gzip level, 1 (fast) to 9 (small). Default 6. */
  level?: number
}

export interface ManagementRoutesOptions {
  /** Default `/cache`. */
  prefix?: string
  /** Bearer token every management route requires (or `CACHE_ADMIN_TOKEN`). */
  token?: string
  /** Your own authentication instead of (or on top of) the token. */
  preHandler?: preHandlerHookHandler
  /** Allow the routes without a token or preHandler in production. */
  public?: boolean
  /** Serve the HTML dashboard. Default true. */
  dashboard?: boolean
}

export interface LocalTierOptions {
  maxEntries?: number
  maxBytes?: number
  /** Seconds an entry may live in the local tier at most. */
  ttl?: number
}

export interface CacheOptions {
  /**
   * `{ url }`, ioredis options, `{ cluster }`, `{ client, closeClient }`, or `false` for the
   * in-process memory store. Unset: `REDIS_URL`/`REDIS_HOST`, else the memory store.
   */
  redis?: false | RedisConnectionOptions | RedisClusterConnectionOptions | RedisClientOption
  /** Every key lives under `${prefix}:`. Default `'cache'`. */
  prefix?: string
  /** Seconds. Default 3600. */
  defaultTtl?: number
  /** Seconds; larger TTLs are clamped to this. Default 86400. */
  maxTtl?: number
  compression?: boolean | CompressionOptions
  serializer?: Serializer
  routes?: false | ManagementRoutesOptions
  /** Map CacheError subclasses thrown from routes to JSON replies. Default true. */
  errorHandler?: boolean
  /** Throw typed errors on Redis failures instead of degrading. Default false. */
  throwOnError?: boolean
  local?: false | LocalTierOptions
  /** Milliseconds a Redis command may take before it counts as failed. Default 500. */
  commandTimeout?: number
  /** Largest stored entry in bytes (after compression); larger ones are not stored. Default 8 MiB. */
  maxEntrySize?: number
  /** Skip Redis for a while after repeated failures; `false` turns it off. */
  circuitBreaker?: false | CircuitBreakerOptions
  /** Milliseconds between health-check PINGs. Default 30000. */
  healthCheckInterval?: number
  /** Cross-instance single-flight for misses of cached routes and getOrSet. */
  lock?: false | LockOptions
}

export interface CircuitBreakerOptions {
  /** Failures in a row that open the circuit. Default 5. */
  failureThreshold?: number
  /** Milliseconds the circuit stays open before Redis is probed again. Default 2000. */
  resetTimeout?: number
}

export interface LockOptions {
  /** Milliseconds a lock is held at most (the holder may die). Default 5000. */
  ttl?: number
  /** Milliseconds others wait for the holder's result before running the work themselves. Default 3000. */
  wait?: number
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

export interface GetOrSetOptions extends SetOptions {
  /** Run the callback and store its result even when an entry exists. */
  forceRefresh?: boolean
  /** Seconds past `ttl` during which the old value is returned while it is refreshed in the background. */
  staleWhileRevalidate?: number
  /** Seconds past `ttl` during which the old value is returned when the callback throws. */
  staleIfError?: number
}

export interface RateLimitOptions {
  /** Requests allowed per window. */
  max: number
  /** Window length in seconds. */
  window: number
}

export interface RateLimitResult {
  limit: number
  remaining: number
  /** Seconds until the window resets. */
  reset: number
}

export interface CacheStatistics {
  hits: number
  misses: number
  sets: number
  deletes: number
  evictions: number
  errors: number
  /** Entries not stored because they were larger than `maxEntrySize`. */
  oversized: number
  bytesRead: number
  bytesWritten: number
  hitRate: number
  /** Bytes before compression of the values that were compressed, and after. */
  compressedBytesIn: number
  compressedBytesOut: number
  /** compressedBytesOut / compressedBytesIn, `1` when nothing was compressed. */
  compressionRatio: number
  /** Route-cache hits and misses per namespace. */
  namespaces: Record<string, { hits: number, misses: number, hitRate: number }>
  /** `'memory'` or `'redis'`. */
  store: 'memory' | 'redis'
  /** Whether the store answers commands now. */
  connected: boolean
  /** The circuit breaker: `'closed'` while Redis is used, `'open'` while skipped. */
  circuit: 'closed' | 'open' | 'half-open'
  /** The local tier, when on: entries and bytes held, and its bounds. */
  local: { entries: number, bytes: number, maxEntries: number, maxBytes: number } | null
  /** Seconds since the statistics were last reset. */
  uptime: number
}

export interface CacheInfo {
  store: 'memory' | 'redis'
  redisVersion: string | null
  usedMemory: number | null
  usedMemoryHuman: string | null
  connectedClients: number | null
  evictedKeys: number | null
  expiredKeys: number | null
  keyspaceHits: number | null
  keyspaceMisses: number | null
  uptimeSeconds: number | null
}

/** The `fastify.cache` methods with the namespace fixed. */
export interface CacheNamespaceView {
  readonly name: string
  get<T = unknown> (key: string): Promise<T | null>
  set (key: string, value: unknown, opts?: Omit<SetOptions, 'namespace'>): Promise<boolean>
  delete (keys: string | string[]): Promise<number>
  exists (keys: string | string[]): Promise<number>
  getOrSet<T> (key: string, callback: () => T | Promise<T>, opts?: Omit<GetOrSetOptions, 'namespace'>): Promise<T>
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
  getOrSet<T> (key: string, callback: () => T | Promise<T>, opts?: GetOrSetOptions): Promise<T>
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

export interface RouteCacheBustOptions {
  namespace?: string
  keys?: string[] | ((request: FastifyRequest, reply: FastifyReply) => string[])
  tags?: string[] | ((request: FastifyRequest, reply: FastifyReply) => string[])
}

export interface RouteCacheOptions {
  ttl?: number
  namespace?: string
  key?: RequestValue<string>
  compress?: boolean
  tags?: RequestValue<string[]>
  /** Request headers whose values split the entry. */
  vary?: string[]
  /** Seconds past `ttl` during which the old entry is served while it is refreshed. */
  staleWhileRevalidate?: number
  /** Seconds past `ttl` during which the old entry is served when the handler fails. */
  staleIfError?: number
  /** Statuses that are stored. Default `[200]`. */
  statuses?: number[]
  /** Serve and store requests that carry `Authorization`; the key must then include the user. */
  allowAuthorization?: boolean
  /** `Cache-Control: max-age` (seconds) sent to clients and CDNs; `false` sends none. */
  maxAge?: number | false
  /** Invalidate after a successful (2xx) response. */
  bust?: RouteCacheBustOptions
}

declare module 'fastify' {
  interface FastifyInstance {
    cache: FastifyCache
  }
  interface FastifyContextConfig {
    cache?: RouteCacheOptions | false
  }
}
