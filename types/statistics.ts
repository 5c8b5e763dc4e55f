// The shapes of what the cache reports, defined once as TypeBox schemas: the management routes
// validate and document their replies with them, and the public types are derived from them.
import { Type, type Static, type TSchema } from '@sinclair/typebox'

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])
const StoreKind = Type.Union([Type.Literal('memory'), Type.Literal('redis')], { description: '`memory` or `redis`' })

export const CircuitSchema = Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half-open')], {
  description: 'Circuit breaker: closed while Redis is used, open while it is skipped'
})

export const StatisticsSchema = Type.Object({
  hits: Type.Integer(),
  misses: Type.Integer(),
  sets: Type.Integer(),
  deletes: Type.Integer(),
  evictions: Type.Integer(),
  errors: Type.Integer(),
  oversized: Type.Integer({ description: 'Entries not stored because they were larger than maxEntrySize' }),
  bytesRead: Type.Integer(),
  bytesWritten: Type.Integer({ description: 'Stored bytes, after compression' }),
  hitRate: Type.Number({ description: 'hits / (hits + misses); 0 without lookups' }),
  compressedBytesIn: Type.Integer({ description: 'Bytes before compression of the values that were compressed' }),
  compressedBytesOut: Type.Integer({ description: 'The same values after compression' }),
  compressionRatio: Type.Number({ description: 'compressed / original size of compressed values; 1 when none' }),
  invalidationsPending: Type.Integer({ description: 'Invalidations Redis has not applied yet, kept and retried' }),
  invalidationsRetried: Type.Integer({ description: 'Invalidations applied on a retry, after Redis had failed them' }),
  invalidatedReads: Type.Integer({ description: 'Entries read but not served because an invalidation covers them' }),
  rateLimitFailedOpen: Type.Integer({ description: 'rateLimit calls let through because Redis could not count them' }),
  staleOnTimeout: Type.Integer({ description: 'getOrSet callers given the stale value because the callback was slower than its timeout' }),
  timeouts: Type.Integer({ description: 'getOrSet callers rejected with CacheTimeoutError (hard timeout, no stale value)' }),
  eagerRefreshes: Type.Integer({ description: 'Background refreshes started because a hit was past eagerRefresh of its ttl' }),
  missingCapabilities: Type.Array(Type.String(), { description: 'What the Redis refuses (scripting, pubsub, info), each disabling a feature' }),
  namespaces: Type.Record(Type.String(), Type.Object({
    hits: Type.Integer(),
    misses: Type.Integer(),
    hitRate: Type.Number()
  }), { description: 'Route-cache hits and misses per namespace' }),
  store: StoreKind,
  connected: Type.Boolean({ description: 'Whether the store answers commands now' }),
  circuit: CircuitSchema,
  local: Nullable(Type.Object({
    entries: Type.Integer(),
    bytes: Type.Integer(),
    maxEntries: Type.Integer(),
    maxBytes: Type.Integer(),
    bypassed: Type.Boolean({ description: 'Whether the tier is bypassed because invalidations cannot reach it' })
  }, { description: 'The in-process tier in front of Redis: what it holds and its bounds; null when off' })),
  uptime: Type.Integer({ description: 'Seconds since the statistics were last reset' })
}, { additionalProperties: true })

export const CacheInfoSchema = Type.Object({
  store: StoreKind,
  redisVersion: Nullable(Type.String()),
  usedMemory: Nullable(Type.Integer()),
  usedMemoryHuman: Nullable(Type.String()),
  connectedClients: Nullable(Type.Integer()),
  evictedKeys: Nullable(Type.Integer()),
  expiredKeys: Nullable(Type.Integer()),
  keyspaceHits: Nullable(Type.Integer()),
  keyspaceMisses: Nullable(Type.Integer()),
  uptimeSeconds: Nullable(Type.Integer())
}, { additionalProperties: true, description: 'Server information; null where the store cannot tell (memory store, Redis down)' })

/** What `getStatistics()` returns (see StatisticsSchema for each field). */
export type CacheStatistics = Static<typeof StatisticsSchema>
/** What `info()` returns: Redis's figures, null where the store cannot tell. */
export type CacheInfo = Static<typeof CacheInfoSchema>
