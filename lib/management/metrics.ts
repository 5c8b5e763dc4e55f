// Prometheus text exposition (format 0.0.4) of the cache's statistics, the Redis server's
// counters and the connection state. Labels only ever carry namespaces (route configuration, a
// bounded set) and the store kind, never keys or URLs, so the number of series stays bounded.
import type { CacheInfo, CacheStatistics } from '../../types'

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
export const METRIC_PREFIX = 'fastify_redis_cache_'

const CIRCUIT_STATES: ReadonlyArray<CacheStatistics['circuit']> = ['closed', 'open', 'half-open']

type MetricType = 'counter' | 'gauge'
type Labels = Record<string, string>

interface Sample { labels?: Labels, value: number }

export interface MetricsInput {
  statistics: CacheStatistics
  info: CacheInfo
  /** Whether the store answers commands now (`CacheStack.connected`). */
  connected: boolean
}

/** Escapes `# HELP` text: backslash and line feed. */
export function escapeHelp (text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue (value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

/** A sample value as the format spells it: `NaN`, `+Inf`, `-Inf` or a Go-parsable float. */
export function formatValue (value: number): string {
  if (Number.isNaN(value)) return 'NaN'
  if (value === Infinity) return '+Inf'
  if (value === -Infinity) return '-Inf'
  return String(value)
}

function formatLabels (labels: Labels | undefined): string {
  if (labels === undefined) return ''
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabelValue(value)}"`)
  return `{${pairs.join(',')}}`
}

class Exposition {
  private readonly lines: string[] = []

  family (name: string, type: MetricType, help: string, samples: Sample[]): void {
    // A family without samples says nothing; some parsers reject a lone HELP/TYPE pair.
    if (samples.length === 0) return
    const fullName = METRIC_PREFIX + name
    this.lines.push(`# HELP ${fullName} ${escapeHelp(help)}`, `# TYPE ${fullName} ${type}`)
    for (const sample of samples) this.lines.push(`${fullName}${formatLabels(sample.labels)} ${formatValue(sample.value)}`)
  }

  /** A family of one unlabelled sample, left out when the value is unknown (`null`). */
  single (name: string, type: MetricType, help: string, value: number | null): void {
    this.family(name, type, help, value === null ? [] : [{ value }])
  }

  toString (): string {
    return `${this.lines.join('\n')}\n`
  }
}

export function renderMetrics ({ statistics: s, info, connected }: MetricsInput): string {
  const out = new Exposition()
  out.single('hits_total', 'counter', 'Cache lookups that found an entry.', s.hits)
  out.single('misses_total', 'counter', 'Cache lookups that found no usable entry.', s.misses)
  out.single('sets_total', 'counter', 'Entries stored.', s.sets)
  out.single('deletes_total', 'counter', 'Entries removed by delete, clear and tag invalidation.', s.deletes)
  out.single('evictions_total', 'counter', 'Entries evicted by the cache (the in-process tier when it is on).', s.evictions)
  out.single('errors_total', 'counter', 'Failed cache operations (store failures, unreadable entries).', s.errors)
  out.single('oversized_total', 'counter', 'Entries not stored because they exceeded maxEntrySize.', s.oversized)
  out.single('rate_limit_failed_open_total', 'counter', 'rateLimit calls let through because Redis could not count them.', s.rateLimitFailedOpen)
  out.single('stale_on_timeout_total', 'counter', 'getOrSet callers given the stale value because the callback was slower than its timeout.', s.staleOnTimeout)
  out.single('timeouts_total', 'counter', 'getOrSet callers rejected after the hard timeout, with no stale value to serve.', s.timeouts)
  out.single('eager_refreshes_total', 'counter', 'Background refreshes started because a hit was past eagerRefresh of its ttl.', s.eagerRefreshes)
  out.single('invalidations_pending', 'gauge', 'Invalidations Redis has not applied yet, kept and retried.', s.invalidationsPending)
  out.single('invalidations_retried_total', 'counter', 'Invalidations applied on a retry, after Redis had failed them.', s.invalidationsRetried)
  out.single('invalidated_reads_total', 'counter', 'Entries read but not served because an invalidation covers them.', s.invalidatedReads)
  out.single('read_bytes_total', 'counter', 'Bytes read from the store on hits.', s.bytesRead)
  out.single('written_bytes_total', 'counter', 'Bytes written to the store (after compression).', s.bytesWritten)
  out.single('compression_input_bytes_total', 'counter', 'Bytes of compressed values before compression.', s.compressedBytesIn)
  out.single('compression_output_bytes_total', 'counter', 'Bytes of compressed values after compression.', s.compressedBytesOut)
  out.single('hit_ratio', 'gauge', 'hits / (hits + misses) since the statistics were last reset; 0 without lookups.', s.hitRate)
  out.single('compression_ratio', 'gauge', 'Compressed size / original size of compressed values; 1 when nothing was compressed.', s.compressionRatio)
  out.single('statistics_age_seconds', 'gauge', 'Seconds since the statistics were last reset (counters restart from 0 then).', s.uptime)

  const namespaces = Object.keys(s.namespaces).sort()
  out.family('route_hits_total', 'counter', 'Route-cache hits per namespace.',
    namespaces.map((namespace) => ({ labels: { namespace }, value: s.namespaces[namespace].hits })))
  out.family('route_misses_total', 'counter', 'Route-cache misses per namespace.',
    namespaces.map((namespace) => ({ labels: { namespace }, value: s.namespaces[namespace].misses })))
  out.family('route_hit_ratio', 'gauge', 'Route-cache hits / (hits + misses) per namespace.',
    namespaces.map((namespace) => ({ labels: { namespace }, value: s.namespaces[namespace].hitRate })))

  if (s.local !== null) {
    out.single('local_entries', 'gauge', 'Entries held by the in-process tier.', s.local.entries)
    out.single('local_bytes', 'gauge', 'Bytes held by the in-process tier.', s.local.bytes)
    out.single('local_max_entries', 'gauge', 'Entries the in-process tier holds at most.', s.local.maxEntries)
    out.single('local_max_bytes', 'gauge', 'Bytes the in-process tier holds at most.', s.local.maxBytes)
    out.single('local_bypassed', 'gauge', 'Whether the in-process tier is bypassed (1) because invalidations cannot reach it, or used (0).', s.local.bypassed ? 1 : 0)
  }

  out.family('store_info', 'gauge', 'The store behind the cache (1 for the one in use).',
    [{ labels: { store: s.store }, value: 1 }])
  out.family('circuit_state', 'gauge', 'Circuit breaker state in front of Redis (1 for the current one).',
    CIRCUIT_STATES.map((state) => ({ labels: { state }, value: s.circuit === state ? 1 : 0 })))
  out.single('redis_connected', 'gauge', 'Whether the store answers commands now (1) or not (0).', connected ? 1 : 0)

  if (info.redisVersion !== null) {
    out.family('redis_info', 'gauge', 'Redis server version (always 1).', [{ labels: { version: info.redisVersion }, value: 1 }])
  }
  out.single('redis_memory_used_bytes', 'gauge', 'Memory used by the store (Redis used_memory).', info.usedMemory)
  out.single('redis_connected_clients', 'gauge', 'Clients connected to Redis.', info.connectedClients)
  out.single('redis_evicted_keys_total', 'counter', 'Keys Redis evicted under maxmemory (whole server).', info.evictedKeys)
  out.single('redis_expired_keys_total', 'counter', 'Keys Redis expired (whole server).', info.expiredKeys)
  out.single('redis_keyspace_hits_total', 'counter', 'Successful key lookups in Redis (whole server).', info.keyspaceHits)
  out.single('redis_keyspace_misses_total', 'counter', 'Failed key lookups in Redis (whole server).', info.keyspaceMisses)
  out.single('redis_uptime_seconds', 'gauge', 'Seconds since the Redis server started.', info.uptimeSeconds)
  return out.toString()
}
