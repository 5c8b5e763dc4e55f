// Counters for the hot path: plain number fields bumped in place, the snapshot (with derived
// rates) computed only when somebody asks.
import type { CacheStatistics } from '../types'

interface NamespaceCounters { hits: number, misses: number }

/** What the statistics report that the layers know rather than count. */
export type LayerReport = Pick<CacheStatistics, 'store' | 'connected' | 'circuit' | 'local' | 'invalidationsPending' | 'missingCapabilities'>

export class Statistics {
  hits = 0
  misses = 0
  sets = 0
  deletes = 0
  evictions = 0
  errors = 0
  oversized = 0
  bytesRead = 0
  bytesWritten = 0
  compressedBytesIn = 0
  compressedBytesOut = 0
  invalidationsRetried = 0
  invalidatedReads = 0
  rateLimitFailedOpen = 0
  staleOnTimeout = 0
  timeouts = 0
  eagerRefreshes = 0
  private since = Date.now()
  // Route caching counts per namespace; namespaces are route configuration, so this stays small.
  private readonly byNamespace = new Map<string, NamespaceCounters>()

  namespaceHit (namespace: string): void {
    this.counters(namespace).hits++
  }

  namespaceMiss (namespace: string): void {
    this.counters(namespace).misses++
  }

  compressed (before: number, after: number): void {
    this.compressedBytesIn += before
    this.compressedBytesOut += after
  }

  reset (): void {
    this.hits = this.misses = this.sets = this.deletes = this.evictions = this.errors = this.oversized = 0
    this.bytesRead = this.bytesWritten = this.compressedBytesIn = this.compressedBytesOut = 0
    this.invalidationsRetried = this.invalidatedReads = this.rateLimitFailedOpen = 0
    this.staleOnTimeout = this.timeouts = this.eagerRefreshes = 0
    this.byNamespace.clear()
    this.since = Date.now()
  }

  /** The counters with their rates, and what the layers report about themselves. */
  snapshot (layers: LayerReport): CacheStatistics {
    const namespaces: CacheStatistics['namespaces'] = {}
    for (const [name, { hits, misses }] of this.byNamespace) {
      namespaces[name] = { hits, misses, hitRate: rate(hits, misses) }
    }
    return {
      hits: this.hits,
      misses: this.misses,
      sets: this.sets,
      deletes: this.deletes,
      evictions: this.evictions,
      errors: this.errors,
      oversized: this.oversized,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      hitRate: rate(this.hits, this.misses),
      compressedBytesIn: this.compressedBytesIn,
      compressedBytesOut: this.compressedBytesOut,
      compressionRatio: this.compressedBytesIn === 0 ? 1 : this.compressedBytesOut / this.compressedBytesIn,
      invalidationsRetried: this.invalidationsRetried,
      invalidatedReads: this.invalidatedReads,
      rateLimitFailedOpen: this.rateLimitFailedOpen,
      staleOnTimeout: this.staleOnTimeout,
      timeouts: this.timeouts,
      eagerRefreshes: this.eagerRefreshes,
      namespaces,
      ...layers,
      uptime: Math.floor((Date.now() - this.since) / 1000)
    }
  }

  private counters (namespace: string): NamespaceCounters {
    let counters = this.byNamespace.get(namespace)
    if (counters === undefined) {
      counters = { hits: 0, misses: 0 }
      this.byNamespace.set(namespace, counters)
    }
    return counters
  }
}

function rate (hits: number, misses: number): number {
  return hits + misses === 0 ? 0 : hits / (hits + misses)
}
