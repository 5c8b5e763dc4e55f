// OpenTelemetry, with the SDK's in-memory exporters: a request's trace holds the cache's spans
// (route decision, getOrSet, get, ...) as children of the request's span, with outcome, layer and
// namespace, errors recorded on them, and counters and a histogram through the metrics API.
// The SDK is registered before any app is built, as an application does at start.
import t from 'tap'
import { context, metrics, SpanStatusCode, trace } from '@opentelemetry/api'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { BasicTracerProvider, InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base'
import { AggregationTemporality, type DataPoint, type Histogram, MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import fastifyRedisCache from '../index'
import { Telemetry } from '../lib/telemetry'
import type { CacheOptions } from '../types'
import { rawClient, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

const exporter = new InMemorySpanExporter()
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())

/** A reader the test collects from when it wants to. */
class TestReader extends MetricReader {
  protected async onForceFlush (): Promise<void> {}
  protected async onShutdown (): Promise<void> {}
}
const reader = new TestReader({ aggregationTemporalitySelector: () => AggregationTemporality.CUMULATIVE })
metrics.setGlobalMeterProvider(new MeterProvider({ readers: [reader] }))

const tracer = trace.getTracer('test')

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(() => server?.stop())

function cacheSpans (): ReadableSpan[] {
  return exporter.getFinishedSpans().filter((span) => span.instrumentationScope.name === 'fastify-redis-cache')
}

/** Runs `work` inside a span standing for the incoming request; returns that span's ids. */
async function inRequest<T> (work: () => Promise<T>): Promise<{ traceId: string, spanId: string, result: T }> {
  const parent = tracer.startSpan('GET request')
  const result = await context.with(trace.setSpan(context.active(), parent), work)
  parent.end()
  return { ...parent.spanContext(), result }
}

/**
 * `inject` with a callback: the promise form defers the request to `ready()`, which runs it in
 * the async context ready() was first awaited in, where a real server's request would run in its
 * own (the HTTP instrumentation's).
 */
function get (fastify: FastifyInstance, opts: string | { url: string, headers: Record<string, string> }): Promise<LightMyRequestResponse> {
  return new Promise((resolve, reject) => fastify.inject(opts, (err, res) => err === null || err === undefined ? resolve(res as LightMyRequestResponse) : reject(err)))
}

async function app (t: tap.Test, options: CacheOptions = {}, routes?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const instance = Fastify()
  t.teardown(() => instance.close())
  await instance.register(fastifyRedisCache, { redis: { url: server.url }, prefix: uniquePrefix('otel'), routes: false, ...options })
  routes?.(instance)
  await instance.ready()
  return instance
}

t.beforeEach(() => exporter.reset())

t.test('a request\'s trace holds the route decision and getOrSet spans, with hit and miss outcomes', async (t) => {
  const fastify = await app(t, {}, (instance) => {
    instance.addHook('onRequest', async (request, reply) => {
      if (request.headers['x-deny'] !== undefined) return reply.code(401).send({ denied: true })
    })
    instance.get('/items', { config: { cache: { ttl: 60, namespace: 'items' } } }, async function () {
      return this.cache.getOrSet('list', () => ['a', 'b'], { namespace: 'data' })
    })
  })

  const first = await inRequest(() => get(fastify, '/items'))
  t.equal(first.result.headers['x-cache'], 'MISS')
  const spans = cacheSpans()
  const route = spans.find((span) => span.name === 'cache route')
  const getOrSet = spans.find((span) => span.name === 'cache getOrSet')
  t.ok(route !== undefined && getOrSet !== undefined, 'a route span and a getOrSet span')
  for (const span of [route, getOrSet] as ReadableSpan[]) {
    t.equal(span.spanContext().traceId, first.traceId, `${span.name} is in the request's trace`)
    t.equal(span.parentSpanContext?.spanId, first.spanId, `${span.name} is a child of the request's span`)
    t.notOk('cache.key' in span.attributes, 'no key without telemetry.keys')
  }
  t.match(route?.attributes, { 'cache.operation': 'route', 'cache.outcome': 'miss', 'cache.namespace': 'items', 'cache.layer': 'redis' })
  t.match(getOrSet?.attributes, { 'cache.operation': 'getOrSet', 'cache.outcome': 'miss', 'cache.namespace': 'data', 'cache.layer': 'redis' })

  exporter.reset()
  const second = await inRequest(() => get(fastify, '/items'))
  t.equal(second.result.headers['x-cache'], 'HIT')
  const hit = cacheSpans().find((span) => span.name === 'cache route')
  t.equal(hit?.spanContext().traceId, second.traceId)
  t.equal(hit?.parentSpanContext?.spanId, second.spanId)
  t.match(hit?.attributes, { 'cache.outcome': 'hit', 'cache.namespace': 'items' })
  t.notOk(cacheSpans().some((span) => span.name === 'cache getOrSet'), 'the handler did not run')

  exporter.reset()
  await inRequest(() => fastify.cache.getOrSet('list', () => ['c'], { namespace: 'data' }))
  t.match(cacheSpans()[0].attributes, { 'cache.outcome': 'hit', 'cache.layer': 'redis' })

  exporter.reset()
  await inRequest(() => get(fastify, { url: '/items', headers: { authorization: 'Bearer x' } }))
  t.match(cacheSpans().find((span) => span.name === 'cache route')?.attributes, { 'cache.outcome': 'bypass' }, 'a request with credentials bypasses')

  // An earlier hook answered before the cache looked: a decision without a namespace.
  exporter.reset()
  await inRequest(() => get(fastify, { url: '/items', headers: { 'x-deny': '1' } }))
  const early = cacheSpans().find((span) => span.name === 'cache route')
  t.match(early?.attributes, { 'cache.outcome': 'bypass', 'cache.status': /early-reply/ })
  t.notOk('cache.namespace' in (early?.attributes ?? {}))
})

t.test('every operation has its span; outcomes and layers', async (t) => {
  const fastify = await app(t, { local: { maxEntries: 100 } })
  const cache = fastify.cache
  await cache.set('a', 1, { namespace: 'n' })
  t.equal(await cache.get('a', { namespace: 'n' }), 1)
  t.equal(await cache.get('missing'), null)
  await cache.exists('a', { namespace: 'n' })
  await cache.expire('a', 100, { namespace: 'n' })
  await cache.ttl('a', { namespace: 'n' })
  await cache.set('t', 1, { tags: ['x'] })
  await cache.invalidateTags('x')
  await cache.delete(['a'], { namespace: 'n' })
  await cache.clear('n')
  await cache.getOrSet('g', () => 'v')
  await cache.getOrSet('g', () => 'v')
  await cache.getOrSet('g', () => 'v')
  const byName = (name: string): ReadableSpan[] => cacheSpans().filter((span) => span.name === name)
  for (const op of ['set', 'get', 'exists', 'expire', 'ttl', 'invalidateTags', 'delete', 'clear']) {
    t.ok(byName(`cache ${op}`).length > 0, `a span for ${op}`)
  }
  t.same(byName('cache get').map((span) => span.attributes['cache.outcome']), ['hit', 'miss'])
  t.equal(byName('cache get')[0].attributes['cache.namespace'], 'n')
  t.same(byName('cache getOrSet').map((span) => [span.attributes['cache.outcome'], span.attributes['cache.layer']]), [['miss', 'redis'], ['hit', 'redis'], ['hit', 'local']],
    'once read back, getOrSet answers from the local tier')

  const memory = await app(t, { redis: false }, (instance) => {
    instance.get('/mem', { config: { cache: { ttl: 60 } } }, async () => 'm')
  })
  exporter.reset()
  for (let i = 0; i < 3; i++) await memory.cache.getOrSet('m', () => 1)
  t.same(cacheSpans().map((span) => span.attributes['cache.layer']), ['memory', 'memory', 'memory'])

  const local = await app(t, { local: { maxEntries: 100 } }, (instance) => {
    instance.get('/near', { config: { cache: { ttl: 60 } } }, async () => 'n')
  })
  for (const [fastify, url, layer] of [[memory, '/mem', 'memory'], [local, '/near', 'local']] as const) {
    await get(fastify, url)
    await until(async () => (await get(fastify, url)).headers['x-cache'] === 'HIT', 5000, 'a hit')
    exporter.reset()
    // A hit from the layer in this process (the local tier learns the entry on its first read).
    await until(async () => {
      exporter.reset()
      await get(fastify, url)
      return cacheSpans()[0]?.attributes['cache.layer'] === layer
    }, 5000, `a ${layer} hit`)
    t.match(cacheSpans()[0].attributes, { 'cache.outcome': 'hit' })
  }
})

t.test('a getOrSet answered with the stale value on a timeout is a stale outcome', async (t) => {
  const fastify = await app(t)
  const realNow = Date.now
  t.teardown(() => { Date.now = realNow })
  await fastify.cache.getOrSet('slow', () => 'v1', { ttl: 10, staleIfError: 60 })
  Date.now = () => realNow() + 11_000
  let release!: (value: string) => void
  exporter.reset()
  const answer = await fastify.cache.getOrSet('slow', () => new Promise<string>((resolve) => { release = resolve }), { ttl: 10, staleIfError: 60, timeout: { soft: 10 } })
  t.equal(answer, 'v1')
  t.match(cacheSpans().find((span) => span.name === 'cache getOrSet')?.attributes, { 'cache.outcome': 'stale' })
  await until(() => release !== undefined, 5000, 'the callback')
  release('v2')
})

t.test('errors are recorded on the span, whether thrown or absorbed by the failure policy', async (t) => {
  const fastify = await app(t)
  const cache = fastify.cache
  await t.rejects(cache.getOrSet('boom', () => { throw new Error('backend down') }))
  const failed = cacheSpans()[0]
  t.equal(failed.status.code, SpanStatusCode.ERROR)
  t.equal(failed.status.message, 'backend down')
  t.match(failed.events, [{ name: 'exception' }])

  exporter.reset()
  // An unreadable entry is a miss for the caller, and an error on the span.
  await rawClient(t, server.url).set(cache.redisKey('corrupt'), Buffer.from([0xc7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1, 2, 3]))
  t.equal(await cache.get('corrupt'), null)
  const absorbed = cacheSpans()[0]
  t.equal(absorbed.status.code, SpanStatusCode.ERROR)
  t.match(absorbed.attributes, { 'cache.outcome': 'miss' })

  // A failure outside any cache span (a route's store write, say) marks no foreign span.
  exporter.reset()
  const outside = tracer.startSpan('outside')
  context.with(trace.setSpan(context.active(), outside), () => (cache as unknown as { core: { failures: { count: (err: unknown, op: string, key: string) => void } } }).core.failures.count(new Error('x'), 'set', 'k'))
  outside.end()
  t.equal(exporter.getFinishedSpans()[0].status.code, SpanStatusCode.UNSET)
})

t.test('keys on spans only when asked; telemetry: false records nothing', async (t) => {
  const withKeys = await app(t, { telemetry: { keys: true } })
  await withKeys.cache.get('user:42')
  t.equal(cacheSpans()[0].attributes['cache.key'], 'user:42')

  exporter.reset()
  const off = await app(t, { telemetry: false })
  await off.cache.get('k')
  await off.cache.getOrSet('k', () => 1)
  t.same(cacheSpans(), [])
})

t.test('counters and a latency histogram through the metrics API', async (t) => {
  const fastify = await app(t, {}, (instance) => {
    instance.get('/m', { config: { cache: { ttl: 60, namespace: 'm' } } }, async () => 'ok')
  })
  await fastify.cache.getOrSet('c', () => 1, { namespace: 'counted' })
  await fastify.cache.getOrSet('c', () => 1, { namespace: 'counted' })
  await fastify.inject('/m')
  await fastify.inject('/m')
  const { resourceMetrics } = await reader.collect()
  const all = resourceMetrics.scopeMetrics.filter((scope) => scope.scope.name === 'fastify-redis-cache').flatMap((scope) => scope.metrics)
  const points = (name: string): Array<DataPoint<number>> => (all.find((metric) => metric.descriptor.name === name)?.dataPoints ?? []) as Array<DataPoint<number>>
  const sum = (name: string, attributes: Record<string, string>): number => points(name)
    .filter((point) => Object.entries(attributes).every(([k, v]) => point.attributes[k] === v))
    .reduce((total, point) => total + point.value, 0)
  t.equal(sum('fastify_redis_cache.hits', { 'cache.operation': 'getOrSet', 'cache.namespace': 'counted' }), 1)
  t.equal(sum('fastify_redis_cache.misses', { 'cache.operation': 'getOrSet', 'cache.namespace': 'counted' }), 1)
  t.equal(sum('fastify_redis_cache.hits', { 'cache.operation': 'route', 'cache.namespace': 'm' }), 1)
  t.equal(sum('fastify_redis_cache.misses', { 'cache.operation': 'route', 'cache.namespace': 'm' }), 1)
  const durations = all.find((metric) => metric.descriptor.name === 'fastify_redis_cache.operation.duration')
  t.equal(durations?.descriptor.unit, 's')
  const getOrSetDurations = (durations?.dataPoints ?? []).filter((point) => point.attributes['cache.namespace'] === 'counted') as unknown as Array<DataPoint<Histogram>>
  t.equal(getOrSetDurations.reduce((total, point) => total + point.value.count, 0), 2, 'each getOrSet timed')
})

t.test('tracing and metrics each work without the other; non-Error failures are recorded too', async (t) => {
  const tracerProvider = trace.getTracerProvider()
  const meterProvider = metrics.getMeterProvider()
  t.teardown(() => {
    trace.setGlobalTracerProvider(tracerProvider)
    metrics.setGlobalMeterProvider(meterProvider)
  })
  trace.disable()
  const metricsOnly = new Telemetry({}, 'redis')
  t.ok(metricsOnly.on, 'on with a meter provider alone')
  t.equal(await metricsOnly.operation('get', 'alone', undefined, async (report) => { report.outcome = 'hit'; return 1 }), 1)
  await t.rejects(metricsOnly.operation('get', 'alone', undefined, async () => { throw new Error('x') }))
  t.same(cacheSpans(), [], 'no spans')
  trace.setGlobalTracerProvider(tracerProvider)

  metrics.disable()
  const tracingOnly = new Telemetry({}, 'redis')
  t.ok(tracingOnly.on)
  // eslint-disable-next-line prefer-promise-reject-errors
  await t.rejects(tracingOnly.operation('getOrSet', 'alone', undefined, () => Promise.reject('not an Error')))
  t.equal(cacheSpans()[0].status.message, 'not an Error')

  trace.disable()
  t.notOk(new Telemetry({}, 'redis').on, 'off without an SDK: nothing to do')
})
