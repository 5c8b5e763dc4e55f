// The plain-data part of the plugin's options, defined once: these TypeBox schemas validate the
// options at registration (lib/config.ts) and the public option types are derived from them, doc
// comments included. Options that hold functions or clients (redis, serializer,
// routes.preHandler) are typed in index.ts and checked by hand.
import { Type, type Static } from '@sinclair/typebox'

/** What a namespace or a prefix may be made of: no ':' or '#', so none reaches into another. */
export const NAME_PATTERN = '^[A-Za-z0-9_.-]+$'
const Seconds = Type.Integer({ minimum: 1 })

export const CompressionOptionsSchema = Type.Object({
  enabled: Type.Optional(Type.Boolean()),
  /** Serialized size in bytes at or above which values are gzipped. Default 1024. */
  threshold: Type.Optional(Type.Integer({ minimum: 0 })),
  /** gzip level, 1 (fast) to 9 (small). Default 6. */
  level: Type.Optional(Type.Integer({ minimum: 1, maximum: 9 }))
}, { additionalProperties: false })

export const ManagementRoutesOptionsSchema = Type.Object({
  /** Default `/cache`. */
  prefix: Type.Optional(Type.String({ pattern: '^/' })),
  /** Bearer token every management route requires (or `CACHE_ADMIN_TOKEN`). */
  token: Type.Optional(Type.String({ minLength: 1 })),
  /** Allow the routes without a token or preHandler in production. */
  public: Type.Optional(Type.Boolean()),
  /** Serve the HTML dashboard. Default true. */
  dashboard: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export const LocalTierOptionsSchema = Type.Object({
  maxEntries: Type.Optional(Type.Integer({ minimum: 1 })),
  maxBytes: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Seconds an entry may live in the local tier at most. */
  ttl: Type.Optional(Seconds),
  /**
   * Milliseconds between the heartbeats that check that invalidations from other instances
   * still arrive. One that has not come back after three intervals bypasses the tier until they
   * do. Default 250: a silent subscription is caught within a second. Each instance receives
   * every instance's heartbeats: with many instances, a longer interval costs less.
   */
  heartbeat: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

export const CircuitBreakerOptionsSchema = Type.Object({
  /** Failures in a row that open the circuit. Default 5. */
  failureThreshold: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Milliseconds the circuit stays open before Redis is probed again. Default 2000. */
  resetTimeout: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

export const LockOptionsSchema = Type.Object({
  /** Milliseconds a lock is held at most (the holder may die). Default 5000. */
  ttl: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Milliseconds others wait for the holder's result before running the work themselves. Default 3000. */
  wait: Type.Optional(Type.Integer({ minimum: 0 }))
}, { additionalProperties: false })

export const MemoryStoreOptionsSchema = Type.Object({
  /** Entries the in-process store keeps at most. Default 100000. */
  maxEntries: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Bytes it keeps at most, the entries' bookkeeping included. Default 64 MiB. */
  maxBytes: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

/**
 * What a cached route does with requests that carry `Cookie` or `Authorization`:
 * - `'bypass'` (default): they neither read nor fill the shared entry; the handler answers them.
 * - `'shared'`: the answer does not depend on them; they share the entry with everybody.
 * - `'per-user'`: the route's `key` includes the user; it must be a function.
 */
export const CredentialsSchema = Type.Union([Type.Literal('bypass'), Type.Literal('shared'), Type.Literal('per-user')])

export const RouteDefaultsSchema = Type.Object({
  /** The `credentials` of every cached route that does not set its own. Default `'bypass'`. */
  credentials: Type.Optional(CredentialsSchema)
}, { additionalProperties: false })

/** Milliseconds a getOrSet caller waits for its callback (see `GetOrSetOptions.timeout`). */
export const CallbackTimeoutSchema = Type.Object({
  /** With a stale value at hand, serve it once the callback has run this long. */
  soft: Type.Optional(Type.Integer({ minimum: 1 })),
  /** The longest any caller waits: then the stale value, or a `CacheTimeoutError`. */
  hard: Type.Optional(Type.Integer({ minimum: 1 }))
}, { additionalProperties: false })

/** Defaults for every `getOrSet` call; each call may override any of them. */
export const GetOrSetDefaultsSchema = Type.Object({
  /** Seconds past `ttl` during which the old value is returned while it is refreshed. */
  staleWhileRevalidate: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Seconds past `ttl` during which the old value is returned when the callback fails or is slow. */
  staleIfError: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Fraction of `ttl` (between 0 and 1) after which a hit refreshes the value in the background. */
  eagerRefresh: Type.Optional(Type.Union([Type.Literal(false), Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })])),
  timeout: Type.Optional(Type.Union([Type.Literal(false), CallbackTimeoutSchema])),
  /** Fraction (0 to 1) by which each stored ttl is shortened at random. */
  jitter: Type.Optional(Type.Number({ minimum: 0, maximum: 1 }))
}, { additionalProperties: false })

/** OpenTelemetry traces and metrics (through `@opentelemetry/api`; nothing without an SDK). */
export const TelemetryOptionsSchema = Type.Object({
  /** Put the cache key on spans (`cache.key`). Off by default: keys can hold personal data. */
  keys: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export const PlainOptionsSchema = Type.Object({
  /**
   * The name `fastify.cache` is decorated under. Default `'cache'`; another name lets the plugin
   * sit beside one that takes `cache` (such as @fastify/caching).
   */
  decorator: Type.Optional(Type.String({ pattern: '^[A-Za-z_$][A-Za-z0-9_$]*$' })),
  /** Every key lives under `${prefix}:`. Default `'cache'`. */
  prefix: Type.Optional(Type.String({ pattern: NAME_PATTERN })),
  /** Seconds. Default 3600. */
  defaultTtl: Type.Optional(Seconds),
  /** Seconds; larger TTLs are clamped to this. Default 86400. */
  maxTtl: Type.Optional(Seconds),
  compression: Type.Optional(Type.Union([Type.Boolean(), CompressionOptionsSchema])),
  routes: Type.Optional(Type.Union([Type.Literal(false), ManagementRoutesOptionsSchema])),
  /** Map CacheError subclasses thrown from routes to JSON replies. Default true. */
  errorHandler: Type.Optional(Type.Boolean()),
  /** Throw typed errors on Redis failures instead of degrading. Default false. */
  throwOnError: Type.Optional(Type.Boolean()),
  local: Type.Optional(Type.Union([Type.Literal(false), LocalTierOptionsSchema])),
  /** Milliseconds a Redis command may take before it counts as failed. Default 500. */
  commandTimeout: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Largest stored entry in bytes (after compression); larger ones are not stored. Default 8 MiB. */
  maxEntrySize: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Skip Redis for a while after repeated failures; `false` turns it off. */
  circuitBreaker: Type.Optional(Type.Union([Type.Literal(false), CircuitBreakerOptionsSchema])),
  /** Milliseconds between health-check PINGs. Default 30000. */
  healthCheckInterval: Type.Optional(Type.Integer({ minimum: 1 })),
  /** Cross-instance single-flight for misses of cached routes and getOrSet. */
  lock: Type.Optional(Type.Union([Type.Literal(false), LockOptionsSchema])),
  /** Bounds of the in-process store used without Redis. */
  memory: Type.Optional(MemoryStoreOptionsSchema),
  /** Defaults for every route's `config.cache`. */
  routeDefaults: Type.Optional(RouteDefaultsSchema),
  /** Defaults for every `getOrSet` call: stale windows, eager refresh, timeouts, jitter. */
  getOrSet: Type.Optional(GetOrSetDefaultsSchema),
  /** OpenTelemetry spans and metrics; `false` turns them off even with an SDK registered. */
  telemetry: Type.Optional(Type.Union([Type.Literal(false), TelemetryOptionsSchema]))
}, { additionalProperties: false })

export type CompressionOptions = Static<typeof CompressionOptionsSchema>
export type LocalTierOptions = Static<typeof LocalTierOptionsSchema>
export type CircuitBreakerOptions = Static<typeof CircuitBreakerOptionsSchema>
export type LockOptions = Static<typeof LockOptionsSchema>
export type MemoryStoreOptions = Static<typeof MemoryStoreOptionsSchema>
export type RouteDefaults = Static<typeof RouteDefaultsSchema>
export type Credentials = Static<typeof CredentialsSchema>
export type CallbackTimeout = Static<typeof CallbackTimeoutSchema>
export type GetOrSetDefaults = Static<typeof GetOrSetDefaultsSchema>
export type TelemetryOptions = Static<typeof TelemetryOptionsSchema>
export type PlainOptions = Static<typeof PlainOptionsSchema>
