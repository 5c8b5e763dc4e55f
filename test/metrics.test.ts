// Prometheus metrics: the text exposition (format 0.0.4) is checked line by line against the
// format's grammar, parsed by a real parser (parse-prometheus-text-format, a port of the
// Prometheus client's parser; and `promtool check metrics` when it is installed), and its values
// are compared with the statistics and Redis info they come from.
import { execFile } from 'node:child_process'
import t from 'tap'
import { build, uniquePrefix } from './helpers/app'
import { startRedis } from './helpers/redis-server'
import type { CacheManager } from '../lib/cache/manager'
import { connectionStatus } from '../lib/management/routes'
import {
  METRICS_CONTENT_TYPE,
  escapeHelp,
  escapeLabelValue,
  formatValue,
  renderMetrics,
  type MetricsInput
} from '../lib/management/metrics'
import type { CacheInfo, CacheStatistics } from '../types'

interface ParsedSample { value: string, labels?: Record<string, string> }
interface ParsedFamily { name: string, help: string, type: string, metrics: ParsedSample[] }
// The package ships no types; this is the shape its README documents (prom2json's).
const parsePrometheusTextFormat = require('parse-prometheus-text-format') as (text: string) => ParsedFamily[]

const P = 'fastify_redis_cache_'

function parse (text: string): Map<string, ParsedFamily> {
  const families = new Map<string, ParsedFamily>()
  for (const family of parsePrometheusTextFormat(text)) {
    if (families.has(family.name)) throw new Error(`family ${family.name} appears twice`)
    families.set(family.name, family)
  }
  return families
}

function value (families: Map<string, ParsedFamily>, name: string, labels?: Record<string, string>): number {
  const family = families.get(P + name)
  if (family === undefined) throw new Error(`no family ${P + name}`)
  const sample = family.metrics.find((m) => JSON.stringify(m.labels ?? {}) === JSON.stringify(labels ?? {}))
  if (sample === undefined) throw new Error(`no sample of ${P + name} with labels ${JSON.stringify(labels)}`)
  return Number(sample.value)
}

// The text format's grammar (exposition_formats.md), strictly: comment lines, then samples.
const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*'
const LABEL_VALUE = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"'
const LABELS = `\\{(?:[a-zA-Z_][a-zA-Z0-9_]*=${LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*=${LABEL_VALUE})*)?\\}`
const FLOAT = '(?:[+-]?(?:\\d+\\.?\\d*|\\.\\d+)(?:[eE][+-]?\\d+)?|NaN|[+-]Inf)'
const SAMPLE_LINE = new RegExp(`^(${NAME})(${LABELS})? (${FLOAT})$`)
const HELP_LINE = new RegExp(`^# HELP (${NAME}) ((?:[^\\\\\\n]|\\\\[\\\\n])*)$`)
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`)

/** Checks the exposition against the grammar; returns the problems found. */
function grammarProblems (text: string): string[] {
  const problems: string[] = []
  if (!text.endsWith('\n')) problems.push('does not end with a line feed')
  const typed = new Map<string, string>()
  const helped = new Set<string>()
  const sampled = new Set<string>()
  let current: string | undefined
  text.slice(0, -1).split('\n').forEach((line, i) => {
    const help = HELP_LINE.exec(line)
    const type = TYPE_LINE.exec(line)
    const sample = SAMPLE_LINE.exec(line)
    if (help !== null) {
      if (helped.has(help[1])) problems.push(`line ${i + 1}: second HELP for ${help[1]}`)
      helped.add(help[1])
      current = help[1]
    } else if (type !== null) {
      if (typed.has(type[1])) problems.push(`line ${i + 1}: second TYPE for ${type[1]}`)
      if (sampled.has(type[1])) problems.push(`line ${i + 1}: TYPE for ${type[1]} after its samples`)
      typed.set(type[1], type[2])
      current = type[1]
    } else if (sample !== null) {
      if (sample[1] !== current) problems.push(`line ${i + 1}: sample of ${sample[1]} outside its family`)
      if (!typed.has(sample[1])) problems.push(`line ${i + 1}: ${sample[1]} has no TYPE`)
      if (!helped.has(sample[1])) problems.push(`line ${i + 1}: ${sample[1]} has no HELP`)
      if (typed.get(sample[1]) === 'counter' && !sample[1].endsWith('_total')) problems.push(`line ${i + 1}: counter ${sample[1]} without _total`)
      sampled.add(sample[1])
    } else {
      problems.push(`line ${i + 1} is not valid: ${JSON.stringify(line)}`)
    }
  })
  for (const name of typed.keys()) if (!sampled.has(name)) problems.push(`${name} has no samples`)
  return problems
}

function promtool (text: string): Promise<{ code: number, output: string } | undefined> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        resolve(undefined)
        return
      }
      resolve({ code: err === null ? 0 : Number(err.code), output: `${stdout}${stderr}` })
    })
    child.stdin?.end(text)
  })
}

function statistics (over: Partial<CacheStatistics> = {}): CacheStatistics {
  return {
    hits: 3,
    misses: 1,
    sets: 2,
    deletes: 4,
    evictions: 5,
    errors: 6,
    oversized: 7,
    bytesRead: 100,
    bytesWritten: 200,
    hitRate: 0.75,
    compressedBytesIn: 3000,
    compressedBytesOut: 300,
    compressionRatio: 0.1,
    invalidationsPending: 0,
    invalidationsRetried: 0,
    invalidatedReads: 0,
    rateLimitFailedOpen: 0,
    staleOnTimeout: 21,
    timeouts: 22,
    eagerRefreshes: 23,
    missingCapabilities: [],
    namespaces: {},
    store: 'redis',
    connected: true,
    circuit: 'closed',
    local: null,
    uptime: 42,
    ...over
  }
}

const NO_INFO: CacheInfo = {
  store: 'memory',
  redisVersion: null,
  usedMemory: null,
  usedMemoryHuman: null,
  connectedClients: null,
  evictedKeys: null,
  expiredKeys: null,
  keyspaceHits: null,
  keyspaceMisses: null,
  uptimeSeconds: null
}

const REDIS_INFO: CacheInfo = {
  store: 'redis',
  redisVersion: '7.2.4',
  usedMemory: 1048576,
  usedMemoryHuman: '1.00M',
  connectedClients: 3,
  evictedKeys: 8,
  expiredKeys: 9,
  keyspaceHits: 10,
  keyspaceMisses: 11,
  uptimeSeconds: 12
}

t.test('escaping and number formatting follow the text format', async (t) => {
  t.equal(escapeLabelValue('plain'), 'plain')
  t.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd')
  t.equal(escapeHelp('a\\b"c\nd'), 'a\\\\b"c\\nd', 'HELP escapes backslash and line feed only')
  t.equal(formatValue(0), '0')
  t.equal(formatValue(0.1), '0.1')
  t.equal(formatValue(1e21), '1e+21')
  t.equal(formatValue(1e-7), '1e-7')
  t.equal(formatValue(-3), '-3')
  t.equal(formatValue(NaN), 'NaN')
  t.equal(formatValue(Infinity), '+Inf')
  t.equal(formatValue(-Infinity), '-Inf')
  t.equal(METRICS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8')
})

t.test('renderMetrics: every statistic, with HELP and TYPE, valid and parsable', async (t) => {
  const input: MetricsInput = {
    statistics: statistics({
      namespaces: {
        items: { hits: 4, misses: 1, hitRate: 0.8 },
        users: { hits: 0, misses: 2, hitRate: 0 }
      },
      local: { entries: 13, bytes: 14, maxEntries: 15, maxBytes: 16, bypassed: true },
      rateLimitFailedOpen: 17,
      invalidationsPending: 18,
      invalidationsRetried: 19,
      invalidatedReads: 20
    }),
    info: REDIS_INFO,
    connected: true
  }
  const text = renderMetrics(input)
  t.same(grammarProblems(text), [], 'valid text format 0.0.4')
  const families = parse(text)

  const expected: Array<[string, string, number]> = [
    ['hits_total', 'COUNTER', 3],
    ['misses_total', 'COUNTER', 1],
    ['sets_total', 'COUNTER', 2],
    ['deletes_total', 'COUNTER', 4],
    ['evictions_total', 'COUNTER', 5],
    ['errors_total', 'COUNTER', 6],
    ['oversized_total', 'COUNTER', 7],
    ['rate_limit_failed_open_total', 'COUNTER', 17],
    ['stale_on_timeout_total', 'COUNTER', 21],
    ['timeouts_total', 'COUNTER', 22],
    ['eager_refreshes_total', 'COUNTER', 23],
    ['invalidations_pending', 'GAUGE', 18],
    ['invalidations_retried_total', 'COUNTER', 19],
    ['invalidated_reads_total', 'COUNTER', 20],
    ['read_bytes_total', 'COUNTER', 100],
    ['written_bytes_total', 'COUNTER', 200],
    ['compression_input_bytes_total', 'COUNTER', 3000],
    ['compression_output_bytes_total', 'COUNTER', 300],
    ['hit_ratio', 'GAUGE', 0.75],
    ['compression_ratio', 'GAUGE', 0.1],
    ['statistics_age_seconds', 'GAUGE', 42],
    ['redis_connected', 'GAUGE', 1],
    ['local_entries', 'GAUGE', 13],
    ['local_bytes', 'GAUGE', 14],
    ['local_max_entries', 'GAUGE', 15],
    ['local_max_bytes', 'GAUGE', 16],
    ['local_bypassed', 'GAUGE', 1],
    ['redis_memory_used_bytes', 'GAUGE', 1048576],
    ['redis_connected_clients', 'GAUGE', 3],
    ['redis_evicted_keys_total', 'COUNTER', 8],
    ['redis_expired_keys_total', 'COUNTER', 9],
    ['redis_keyspace_hits_total', 'COUNTER', 10],
    ['redis_keyspace_misses_total', 'COUNTER', 11],
    ['redis_uptime_seconds', 'GAUGE', 12]
  ]
  for (const [name, type, v] of expected) {
    const family = families.get(P + name)
    t.equal(family?.type, type, `${name} is a ${type}`)
    t.ok((family?.help ?? '').length > 0, `${name} has help`)
    t.equal(value(families, name), v, `${name} = ${v}`)
  }
  t.equal(value(families, 'redis_info', { version: '7.2.4' }), 1)
  t.equal(value(families, 'store_info', { store: 'redis' }), 1)
  t.equal(value(families, 'circuit_state', { state: 'closed' }), 1)
  t.equal(value(families, 'circuit_state', { state: 'open' }), 0)
  t.equal(value(families, 'circuit_state', { state: 'half-open' }), 0)

  // Per-namespace route caching, labelled by namespace only.
  t.equal(families.get(`${P}route_hits_total`)?.type, 'COUNTER')
  t.equal(value(families, 'route_hits_total', { namespace: 'items' }), 4)
  t.equal(value(families, 'route_misses_total', { namespace: 'items' }), 1)
  t.equal(value(families, 'route_hit_ratio', { namespace: 'items' }), 0.8)
  t.equal(value(families, 'route_hits_total', { namespace: 'users' }), 0)
  t.equal(value(families, 'route_misses_total', { namespace: 'users' }), 2)
  for (const name of ['route_hits_total', 'route_misses_total', 'route_hit_ratio']) {
    const labelNames = new Set(families.get(P + name)?.metrics.flatMap((m) => Object.keys(m.labels ?? {})))
    t.same([...labelNames], ['namespace'], `${name} is labelled by namespace only`)
  }

  const checked = await promtool(text)
  if (checked === undefined) t.comment('promtool not installed: the Prometheus check is skipped')
  else t.same(checked, { code: 0, output: '' }, 'promtool check metrics: valid, no lint problems')
})

t.test('renderMetrics: unknown Redis values are left out, no namespaces means no route series', async (t) => {
  const text = renderMetrics({ statistics: statistics({ store: 'memory', circuit: 'open' }), info: NO_INFO, connected: false })
  t.same(grammarProblems(text), [])
  const families = parse(text)
  t.equal(value(families, 'redis_connected'), 0)
  t.equal(value(families, 'circuit_state', { state: 'open' }), 1)
  t.equal(value(families, 'circuit_state', { state: 'closed' }), 0)
  t.equal(value(families, 'store_info', { store: 'memory' }), 1)
  for (const name of ['redis_info', 'redis_memory_used_bytes', 'redis_connected_clients', 'redis_evicted_keys_total',
    'redis_expired_keys_total', 'redis_keyspace_hits_total', 'redis_keyspace_misses_total', 'redis_uptime_seconds',
    'route_hits_total', 'route_misses_total', 'route_hit_ratio', 'local_entries', 'local_bytes', 'local_bypassed']) {
    t.notOk(families.has(P + name), `${name} left out`)
  }
  t.notMatch(text, /# TYPE \S+ \S+\n# /, 'no family without samples')
  const checked = await promtool(text)
  if (checked !== undefined) t.same(checked, { code: 0, output: '' }, 'promtool check metrics')
})

t.test('renderMetrics: a local tier in use reports local_bypassed 0', async (t) => {
  const local = { entries: 0, bytes: 0, maxEntries: 1, maxBytes: 1, bypassed: false }
  const families = parse(renderMetrics({ statistics: statistics({ local }), info: NO_INFO, connected: true }))
  t.equal(value(families, 'local_bypassed'), 0)
})

t.test('renderMetrics escapes label values so any namespace or version round-trips', async (t) => {
  const odd = 'we"ird\\name\nwith newline'
  const text = renderMetrics({
    statistics: statistics({ namespaces: { [odd]: { hits: 1, misses: 0, hitRate: 1 } } }),
    info: { ...REDIS_INFO, redisVersion: '7.2.4 "custom"\\build' },
    connected: true
  })
  t.same(grammarProblems(text), [])
  t.match(text, `${P}route_hits_total{namespace="we\\"ird\\\\name\\nwith newline"} 1\n`)
  const families = parse(text)
  t.equal(value(families, 'route_hits_total', { namespace: odd }), 1, 'label value parsed back unchanged')
  t.equal(value(families, 'redis_info', { version: '7.2.4 "custom"\\build' }), 1)
  const checked = await promtool(text)
  if (checked !== undefined) t.same(checked, { code: 0, output: '' }, 'promtool check metrics')
})

t.test('the grammar check itself rejects what Prometheus rejects', async (t) => {
  t.not(grammarProblems('x{a="b} 1\n').length, 0, 'unterminated label value')
  t.not(grammarProblems('# HELP x_total h\n# TYPE x_total counter\nx_total 1').length, 0, 'no final line feed')
  t.not(grammarProblems('# HELP x h\n# TYPE x counter\nx 1\n').length, 0, 'counter without _total')
  t.not(grammarProblems('x 1\n').length, 0, 'no TYPE or HELP')
  t.not(grammarProblems('# HELP x h\n# TYPE x gauge\nx one\n').length, 0, 'not a number')
  t.same(grammarProblems('# HELP x h\n# TYPE x gauge\nx{a="q\\"\\n\\\\"} +Inf\n'), [])
})

t.test('GET /cache/metrics on the memory store reflects the live statistics', async (t) => {
  const { app, cache } = await build(t, { redis: false, routes: {}, compression: { threshold: 64 } })
  await cache.set('a', 1)
  await cache.get('a') // hit
  await cache.get('b') // miss
  await cache.set('big', 'x'.repeat(4096)) // compressed
  cache.core.stats.namespaceHit('items')
  cache.core.stats.namespaceHit('items')
  cache.core.stats.namespaceMiss('items')
  cache.core.stats.namespaceMiss('users')

  const res = await app.inject('/cache/metrics')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['content-type'], METRICS_CONTENT_TYPE)
  t.same(grammarProblems(res.body), [])
  const families = parse(res.body)
  const stats = cache.getStatistics()
  t.equal(value(families, 'hits_total'), 1)
  t.equal(value(families, 'misses_total'), 1)
  t.equal(value(families, 'sets_total'), 2)
  t.equal(value(families, 'hit_ratio'), 0.5)
  t.equal(value(families, 'written_bytes_total'), stats.bytesWritten)
  t.ok(stats.compressionRatio < 0.1, 'the repeated string compresses well')
  t.equal(value(families, 'compression_ratio'), stats.compressionRatio)
  t.equal(value(families, 'compression_input_bytes_total'), stats.compressedBytesIn)
  t.equal(value(families, 'route_hits_total', { namespace: 'items' }), 2)
  t.equal(value(families, 'route_misses_total', { namespace: 'items' }), 1)
  t.equal(value(families, 'route_misses_total', { namespace: 'users' }), 1)
  t.equal(value(families, 'store_info', { store: 'memory' }), 1)
  t.equal(value(families, 'redis_connected'), 1)
  t.ok(value(families, 'redis_memory_used_bytes') > 4, 'memory store reports what it holds')
  t.notOk(families.has(`${P}redis_info`), 'no Redis version on the memory store')

  cache.resetStatistics()
  const after = parse((await app.inject('/cache/metrics')).body)
  t.equal(value(after, 'hits_total'), 0, 'counters restart after a reset')
  t.notOk(after.has(`${P}route_hits_total`))
})

t.test('GET /cache/metrics on Redis: server counters and the connection state', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, commandTimeout: 200 })
  await cache.set('k', 'v')
  await cache.get('k')
  await cache.get('missing')

  const res = await app.inject('/cache/metrics')
  t.equal(res.statusCode, 200)
  t.same(grammarProblems(res.body), [])
  const families = parse(res.body)
  const version = await server.cli('info', 'server').then((out) => /redis_version:(\S+)/.exec(out)?.[1])
  t.ok(version, 'the server says its version')
  t.equal(value(families, 'redis_info', { version: version ?? '' }), 1)
  t.equal(value(families, 'redis_connected'), 1)
  t.equal(value(families, 'store_info', { store: 'redis' }), 1)
  t.ok(value(families, 'redis_memory_used_bytes') > 0)
  t.ok(value(families, 'redis_connected_clients') >= 1)
  t.ok(value(families, 'redis_keyspace_hits_total') >= 1)
  t.ok(value(families, 'redis_keyspace_misses_total') >= 1)
  t.equal(value(families, 'redis_evicted_keys_total'), 0)
  t.ok(value(families, 'redis_uptime_seconds') >= 0)
  const checked = await promtool(res.body)
  if (checked !== undefined) t.same(checked, { code: 0, output: '' }, 'promtool check metrics')

  // Redis goes away: the scrape still answers, with the connection state at 0.
  await server.kill()
  await waitDisconnected(cache)
  const down = await app.inject('/cache/metrics')
  t.equal(down.statusCode, 200)
  t.same(grammarProblems(down.body), [])
  const downFamilies = parse(down.body)
  t.equal(value(downFamilies, 'redis_connected'), 0)
  t.notOk(downFamilies.has(`${P}redis_info`), 'no version while Redis does not answer')
  t.ok(value(downFamilies, 'errors_total') >= 1, 'the failed INFO is counted')
})

t.test('GET /cache/metrics with throwOnError still answers while Redis is down', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const { app, cache } = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), routes: {}, throwOnError: true, commandTimeout: 200 })
  await server.kill()
  await waitDisconnected(cache)
  const res = await app.inject('/cache/metrics')
  t.equal(res.statusCode, 200)
  t.equal(value(parse(res.body), 'redis_connected'), 0)
})

async function waitDisconnected (cache: CacheManager): Promise<void> {
  const deadline = Date.now() + 5000
  while (connectionStatus(cache.core.stack) === 'ready') {
    if (Date.now() > deadline) throw new Error('client still ready')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
