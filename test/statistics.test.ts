// The statistics counters and their snapshot.
import t from 'tap'
import { Statistics } from '../lib/statistics'
import type { CacheStatistics } from '../types'

/** A snapshot; the store-level fields (circuit, local tier) are passed through as given. */
function snap (stats: Statistics, store: CacheStatistics['store'], connected: boolean, circuit: CacheStatistics['circuit']): CacheStatistics {
  return stats.snapshot({ store, connected, circuit, local: null, invalidationsPending: 0, missingCapabilities: [] })
}

t.test('a fresh snapshot', async (t) => {
  const stats = new Statistics()
  t.match(snap(stats, 'redis', false, 'open'), {
    hits: 0,
    misses: 0,
    sets: 0,
    deletes: 0,
    evictions: 0,
    errors: 0,
    oversized: 0,
    bytesRead: 0,
    bytesWritten: 0,
    hitRate: 0,
    compressedBytesIn: 0,
    compressedBytesOut: 0,
    compressionRatio: 1,
    namespaces: {},
    store: 'redis',
    connected: false,
    circuit: 'open',
    local: null,
    uptime: 0
  })
})

t.test('counters, rates and namespaces', async (t) => {
  const stats = new Statistics()
  stats.hits = 3
  stats.misses = 1
  stats.sets = 2
  stats.deletes = 4
  stats.evictions = 5
  stats.errors = 6
  stats.oversized = 7
  stats.bytesRead = 8
  stats.bytesWritten = 9
  stats.compressed(1000, 250)
  stats.compressed(1000, 150)
  stats.namespaceHit('items')
  stats.namespaceHit('items')
  stats.namespaceMiss('items')
  stats.namespaceMiss('users')
  const snapshot = snap(stats, 'memory', true, 'closed')
  t.match(snapshot, {
    hits: 3,
    misses: 1,
    sets: 2,
    deletes: 4,
    evictions: 5,
    errors: 6,
    oversized: 7,
    bytesRead: 8,
    bytesWritten: 9,
    hitRate: 0.75,
    compressedBytesIn: 2000,
    compressedBytesOut: 400,
    compressionRatio: 0.2,
    store: 'memory',
    connected: true
  })
  t.same(snapshot.namespaces, {
    items: { hits: 2, misses: 1, hitRate: 2 / 3 },
    users: { hits: 0, misses: 1, hitRate: 0 }
  })
  stats.hits = 0
  t.equal(snap(stats, 'memory', true, 'closed').hitRate, 0, 'only misses')
})

t.test('reset', async (t) => {
  const stats = new Statistics()
  const fresh = snap(stats, 'redis', true, 'closed')
  stats.hits = stats.misses = stats.sets = stats.deletes = stats.evictions = stats.errors = stats.oversized = 1
  stats.bytesRead = stats.bytesWritten = 1
  stats.compressed(10, 5)
  stats.namespaceHit('a')
  stats.reset()
  t.same(snap(stats, 'redis', true, 'closed'), fresh)
})

t.test('uptime counts whole seconds since the last reset', async (t) => {
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  const start = realNow()
  Date.now = () => start
  const stats = new Statistics()
  Date.now = () => start + 2500
  t.equal(snap(stats, 'redis', true, 'closed').uptime, 2)
  stats.reset()
  Date.now = () => start + 3400
  t.equal(snap(stats, 'redis', true, 'closed').uptime, 0)
})
