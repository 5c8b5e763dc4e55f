// OpenTelemetry traces and metrics, through @opentelemetry/api only: without an SDK registered it
// is a no-op. Whether an SDK is there is checked once, when the plugin starts; without one,
// every operation pays one boolean test and nothing else (no span, no attribute object).
//
// A span per cache operation (`cache get`, `cache getOrSet`, ...) and per route-cache decision
// (`cache route`), a child of the active span (the request's), with the outcome, the layer and
// the namespace. Never the key unless `telemetry.keys` says so: keys can hold personal data.
import { performance } from 'node:perf_hooks'
import {
  type Attributes,
  type Counter,
  createNoopMeter,
  type Histogram,
  metrics,
  ProxyTracerProvider,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer
} from '@opentelemetry/api'
import type { TelemetryOptions } from '../types/options'

/** The tracer's and the meter's name. */
export const TELEMETRY_NAME = 'fastify-redis-cache'

export type Outcome = 'hit' | 'miss' | 'stale' | 'bypass'
export type Layer = 'local' | 'redis' | 'memory'

/** What an operation found out, filled in as it goes. */
export interface Report {
  outcome: Outcome | undefined
  layer: Layer | undefined
}

/** Written to when telemetry is off: one shared object, so the hot path allocates nothing. */
export const NO_REPORT: Report = { outcome: undefined, layer: undefined }

const NOOP_METER = createNoopMeter().constructor

/** Whether a tracer provider was registered (the API hands out no-op tracers until one is). */
function tracerRegistered (): boolean {
  const provider = trace.getTracerProvider()
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegateTracer(TELEMETRY_NAME) !== undefined
}

function meterRegistered (): boolean {
  return !(metrics.getMeterProvider().getMeter(TELEMETRY_NAME) instanceof NOOP_METER)
}

interface Instruments {
  operations: Counter
  hits: Counter
  misses: Counter
  errors: Counter
  duration: Histogram
}

export class Telemetry {
  /** Tracing or metrics: anything to do at all. */
  readonly on: boolean
  /** The layer of a hit answered synchronously in this process. */
  readonly nearbyLayer: Layer
  private readonly layer: Layer
  private readonly keys: boolean
  private readonly tracer: Tracer | undefined
  private readonly instruments: Instruments | undefined
  /** The spans this cache started: a failure is recorded on the active span only if it is one. */
  private readonly spans = new WeakSet<Span>()

  constructor (options: false | TelemetryOptions, store: 'memory' | 'redis') {
    this.keys = options !== false && options.keys === true
    this.layer = store
    this.nearbyLayer = store === 'memory' ? 'memory' : 'local'
    this.tracer = options !== false && tracerRegistered() ? trace.getTracer(TELEMETRY_NAME) : undefined
    this.instruments = options !== false && meterRegistered() ? instruments() : undefined
    this.on = this.tracer !== undefined || this.instruments !== undefined
  }

  /**
   * Runs `work` as the operation `op`: in a span made active for it (so whatever it calls nests
   * under it), counted and timed. Call only when `on`.
   */
  operation<R> (op: string, namespace: string | undefined, key: string | undefined, work: (report: Report) => Promise<R>): Promise<R> {
    const report: Report = { outcome: undefined, layer: undefined }
    const startedAt = performance.now()
    const done = (span: Span | undefined, err?: unknown): void => {
      if (span !== undefined) {
        if (report.outcome !== undefined) span.setAttribute('cache.outcome', report.outcome)
        span.setAttribute('cache.layer', report.layer ?? this.layer)
        if (err !== undefined) this.recordOn(span, err)
        span.end()
      }
      this.measure(op, namespace, report.outcome, report.layer ?? this.layer, (performance.now() - startedAt) / 1000, err !== undefined)
    }
    const run = (span?: Span): Promise<R> => work(report).then((result) => {
      done(span)
      return result
    }, (err: unknown) => {
      done(span, err)
      throw err
    })
    if (this.tracer === undefined) return run()
    return this.tracer.startActiveSpan(`cache ${op}`, { kind: SpanKind.INTERNAL, attributes: this.attributes(op, namespace, key) }, (span) => {
      this.spans.add(span)
      return run(span)
    })
  }

  /**
   * A route-cache decision, from the lookup (`startTime`, ms since the epoch) to now. `status`:
   * the Cache-Status parameters; `nearby`: answered from a layer in this process. Call only when
   * `on`.
   */
  decision (namespace: string | undefined, key: string | undefined, outcome: Outcome, status: string, startTime: number, nearby: boolean): void {
    const layer = nearby ? this.nearbyLayer : this.layer
    if (this.tracer !== undefined) {
      const attributes = this.attributes('route', namespace, key)
      attributes['cache.outcome'] = outcome
      attributes['cache.status'] = status
      attributes['cache.layer'] = layer
      this.tracer.startSpan('cache route', { kind: SpanKind.INTERNAL, startTime, attributes }).end()
    }
    this.measure('route', namespace, outcome, layer, (Date.now() - startTime) / 1000, false)
  }

  /** A failure the failure policy counted (and maybe hid): on the cache span under way, if any. */
  failed (err: unknown, op: string): void {
    this.instruments?.errors.add(1, { 'cache.operation': op })
    const span = trace.getActiveSpan()
    if (span !== undefined && this.spans.has(span)) this.recordOn(span, err)
  }

  private recordOn (span: Span, err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err))
    span.recordException(error)
    span.setStatus({ code: SpanStatusCode.ERROR, message: error.message })
  }

  private attributes (op: string, namespace: string | undefined, key: string | undefined): Attributes {
    const attributes: Attributes = { 'cache.operation': op }
    if (namespace !== undefined) attributes['cache.namespace'] = namespace
    if (this.keys && key !== undefined) attributes['cache.key'] = key
    return attributes
  }

  private measure (op: string, namespace: string | undefined, outcome: Outcome | undefined, layer: Layer, seconds: number, failed: boolean): void {
    const instruments = this.instruments
    if (instruments === undefined) return
    const attributes: Attributes = { 'cache.operation': op, 'cache.layer': layer }
    if (namespace !== undefined) attributes['cache.namespace'] = namespace
    if (outcome === 'hit' || outcome === 'stale') instruments.hits.add(1, attributes)
    else if (outcome === 'miss') instruments.misses.add(1, attributes)
    if (outcome !== undefined) attributes['cache.outcome'] = outcome
    if (failed) attributes['error.type'] = 'error'
    instruments.operations.add(1, attributes)
    instruments.duration.record(seconds, attributes)
  }
}

function instruments (): Instruments {
  const meter = metrics.getMeter(TELEMETRY_NAME)
  return {
    operations: meter.createCounter('fastify_redis_cache.operations', { description: 'Cache operations and route-cache decisions' }),
    hits: meter.createCounter('fastify_redis_cache.hits', { description: 'Lookups answered from the cache (fresh or stale)' }),
    misses: meter.createCounter('fastify_redis_cache.misses', { description: 'Lookups that found no usable entry' }),
    errors: meter.createCounter('fastify_redis_cache.errors', { description: 'Failed store operations and unreadable entries' }),
    duration: meter.createHistogram('fastify_redis_cache.operation.duration', { description: 'Duration of cache operations', unit: 's' })
  }
}
