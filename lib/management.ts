// Management routes (stats, ping, clear, reset-stats, metrics): an encapsulated child plugin, so
// its hooks (authentication, no-store) apply to these routes only.
//
// Security: with a token every route needs `Authorization: Bearer <token>`, checked in
// `onRequest` (before anything else runs) by comparing SHA-256 digests in constant time, so
// neither the token's content nor its length leaks through timing. A user `preHandler` runs as a
// preHandler hook of every route (after the token check when both are given). Whether the routes
// may run unprotected at all (production) is decided in config.ts at registration.
import { createHash, timingSafeEqual } from 'node:crypto'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import type { FastifyError, FastifyPluginAsync, FastifyReply, FastifyRequest, FastifySchema, preHandlerHookHandler } from 'fastify'
import type { CacheManager } from './cache'
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard'
import { cacheErrorHandler } from './error-handler'
import { NAMESPACE_PATTERN } from './keys'
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics'
import { RedisStore } from './stores/redis'
import type { CacheStore } from './stores/store'

export interface ManagementOptions {
  cache: CacheManager
  token: string | undefined
  preHandler: preHandlerHookHandler | undefined
  dashboard: boolean
}

// ---------------------------------------------------------------------------
// schemas (TypeBox): every route documents its query and responses for OpenAPI

const TAGS = ['cache']

/** A route schema with the OpenAPI fields @fastify/swagger reads. */
interface RouteSchema extends FastifySchema {
  tags: string[]
  summary: string
  description?: string
}
const routeSchema = (schema: RouteSchema): FastifySchema => schema

export const ErrorReplySchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String()),
  error: Type.String(),
  message: Type.String()
}, { description: 'An error: status, machine-readable code, reason phrase and message' })

const NoQuery = Type.Object({}, { additionalProperties: false })

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()])

const CircuitSchema = Type.Union([Type.Literal('closed'), Type.Literal('open'), Type.Literal('half-open')], {
  description: 'Circuit breaker: closed while Redis is used, open while it is skipped'
})

export const StatisticsSchema = Type.Object({
  hits: Type.Integer(),
  misses: Type.Integer(),
  sets: Type.Integer(),
  deletes: Type.Integer(),
  evictions: Type.Integer(),
  errors: Type.Integer(),
  oversized: Type.Integer(),
  bytesRead: Type.Integer(),
  bytesWritten: Type.Integer(),
  hitRate: Type.Number({ description: 'hits / (hits + misses); 0 without lookups' }),
  compressedBytesIn: Type.Integer(),
  compressedBytesOut: Type.Integer(),
  compressionRatio: Type.Number({ description: 'compressed / original size of compressed values; 1 when none' }),
  namespaces: Type.Record(Type.String(), Type.Object({
    hits: Type.Integer(),
    misses: Type.Integer(),
    hitRate: Type.Number()
  }), { description: 'Route-cache hits and misses per namespace' }),
  store: Type.Union([Type.Literal('memory'), Type.Literal('redis')]),
  connected: Type.Boolean(),
  circuit: Type.Optional(CircuitSchema),
  local: Type.Optional(Nullable(Type.Object({
    entries: Type.Integer(),
    bytes: Type.Integer(),
    maxEntries: Type.Integer(),
    maxBytes: Type.Integer()
  }, { description: 'The in-process tier in front of Redis: what it holds and its bounds; null when off' }))),
  uptime: Type.Integer({ description: 'Seconds since the statistics were last reset' })
}, { additionalProperties: true })

export const RedisInfoSchema = Type.Object({
  store: Type.Union([Type.Literal('memory'), Type.Literal('redis')]),
  connected: Type.Boolean({ description: 'Whether the store answers commands now' }),
  status: Type.String({ description: 'Connection state: ioredis status (ready, connecting, reconnecting, end, ...); always ready for the memory store' }),
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

export const StatsReplySchema = Type.Object({
  statistics: StatisticsSchema,
  redis: RedisInfoSchema
}, { description: 'Cache statistics and Redis server information' })

export const PingOkSchema = Type.Object({
  status: Type.Literal('ok'),
  latencyMs: Type.Number({ description: 'Round trip of a PING in milliseconds' }),
  circuit: Type.Optional(CircuitSchema)
}, { description: 'Redis answered' })

export const PingErrorSchema = Type.Object({
  status: Type.Literal('error'),
  circuit: Type.Optional(CircuitSchema)
}, { description: 'Redis did not answer (down or hanging)' })

export const ClearQuerySchema = Type.Object({
  namespace: Type.Optional(Type.String({
    pattern: NAMESPACE_PATTERN.source,
    maxLength: 128,
    description: 'Clear only this namespace (a plain name, never a pattern); everything under the prefix when left out'
  }))
}, { additionalProperties: false })

export const ClearReplySchema = Type.Object({
  cleared: Type.Integer({ description: 'Keys removed' })
}, { description: 'The entries were removed' })

export const ResetReplySchema = Type.Object({
  reset: Type.Literal(true)
}, { description: 'The statistics start again from zero' })

export type StatsReply = Static<typeof StatsReplySchema>
export type ClearQuery = Static<typeof ClearQuerySchema>

// ---------------------------------------------------------------------------
// helpers

/** A checker for `Authorization: Bearer <token>` that takes the same time whatever it is given. */
export function bearerChecker (token: string): (authorization: string | undefined) => boolean {
  const expected = createHash('sha256').update(token).digest()
  return (authorization) => {
    const header = authorization ?? ''
    const space = header.indexOf(' ')
    const scheme = space === -1 ? header : header.slice(0, space)
    const credentials = space === -1 ? '' : header.slice(space + 1).trim()
    // The digest is compared whatever the scheme, so a wrong scheme costs the same time.
    const given = createHash('sha256').update(credentials).digest()
    const same = timingSafeEqual(given, expected)
    return same && scheme.toLowerCase() === 'bearer' && credentials.length > 0
  }
}

/** The Redis client's state (ioredis `status`), looking through store wrappers; `ready` for memory. */
export function connectionStatus (store: CacheStore): string {
  if (store instanceof RedisStore) return store.client.status
  // Wrappers (circuit breaker, local tier) keep the store they wrap in `inner`.
  const inner = (store as { inner?: CacheStore }).inner
  return inner === undefined ? 'ready' : connectionStatus(inner)
}

// ---------------------------------------------------------------------------
// the plugin

export const managementRoutes: FastifyPluginAsync<ManagementOptions> = async function managementRoutes (fastify, options) {
  // The page carries no data, so it is outside the token check: its figures come from the
  // protected routes next to it.
  if (options.dashboard) {
    fastify.get('/dashboard', {
      config: { cache: false },
      schema: routeSchema({
        tags: TAGS,
        summary: 'A live HTML dashboard of the cache (its data comes from the protected routes)',
        response: { 200: { description: 'The dashboard page', content: { 'text/html': { schema: Type.String() } } } }
      })
    }, async (_request, reply) => {
      return reply
        .type('text/html; charset=utf-8')
        .header('cache-control', 'no-store')
        .header('content-security-policy', DASHBOARD_CSP)
        .header('x-content-type-options', 'nosniff')
        .send(DASHBOARD_HTML)
    })
  }
  // Not `options` itself: it also holds the `prefix` this plugin was registered with.
  const { cache, token, preHandler, dashboard } = options
  await fastify.register(protectedRoutes, { cache, token, preHandler, dashboard })
}

const protectedRoutes: FastifyPluginAsync<ManagementOptions> = async function protectedRoutes (fastify, options) {
  const { cache, token, preHandler } = options
  // These routes answer as their schemas document whatever the app's own error handler does:
  // a bad query is a 400 and a CacheError maps to its status; anything else goes on to the app's
  // handler (an error thrown by an error handler reaches the next one up).
  fastify.setErrorHandler(function managementErrorHandler (err: FastifyError, request, reply) {
    if (err.validation !== undefined) {
      request.log.info({ err }, err.message)
      reply.code(400)
      return { statusCode: 400, code: err.code, error: 'Bad Request', message: err.message }
    }
    return cacheErrorHandler(err, request, reply)
  })

  if (token !== undefined) {
    const valid = bearerChecker(token)
    fastify.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
      if (valid(request.headers.authorization)) return
      const given = request.headers.authorization !== undefined
      request.log.info({ url: request.url }, 'fastify-redis-cache: management route refused: missing or invalid bearer token')
      return reply
        .code(401)
        .header('www-authenticate', given ? 'Bearer realm="fastify-redis-cache", error="invalid_token"' : 'Bearer realm="fastify-redis-cache"')
        .send({ statusCode: 401, code: 'CACHE_UNAUTHORIZED', error: 'Unauthorized', message: 'A valid Authorization: Bearer token is required' })
    })
  }
  if (preHandler !== undefined) fastify.addHook('preHandler', preHandler)

  // Operational answers are never stored by browsers, proxies or CDNs.
  fastify.addHook('onSend', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
  })

  const unauthorized = { 401: ErrorReplySchema }
  // Management answers are never route-cached, whatever the app's defaults are.
  const config = { cache: false as const }

  fastify.get('/stats', {
    config,
    schema: routeSchema({
      tags: TAGS,
      summary: 'Cache statistics and Redis server information',
      querystring: NoQuery,
      response: { 200: StatsReplySchema, ...unauthorized }
    })
  }, async () => {
    const info = await cache.readInfo(false)
    return {
      statistics: cache.getStatistics(),
      redis: { ...info, connected: cache.store.connected, status: connectionStatus(cache.store) }
    }
  })

  fastify.get('/ping', {
    config,
    schema: routeSchema({
      tags: TAGS,
      summary: 'Whether Redis answers, and how fast',
      querystring: NoQuery,
      response: { 200: PingOkSchema, 503: PingErrorSchema, ...unauthorized }
    })
  }, async (_request, reply) => {
    const start = process.hrtime.bigint()
    const ok = await cache.ping()
    const latencyMs = Number(process.hrtime.bigint() - start) / 1e6
    const { circuit } = cache.getStatistics()
    if (!ok) return reply.code(503).send({ status: 'error', circuit })
    return { status: 'ok', latencyMs: Math.round(latencyMs * 1000) / 1000, circuit }
  })

  fastify.delete<{ Querystring: ClearQuery }>('/clear', {
    config,
    // Fastify's validator drops unknown query parameters instead of refusing them, which would
    // turn a typo (`?namspace=a`, `?pattern=a*`) into clearing everything: refuse them first.
    preValidation: async (request) => {
      const unknown = Object.keys(request.query).filter((name) => name !== 'namespace')
      if (unknown.length > 0) {
        throw Object.assign(new Error(`querystring must NOT have additional properties (${unknown.join(', ')})`), {
          statusCode: 400,
          code: 'FST_ERR_VALIDATION',
          validation: unknown.map((name) => ({ keyword: 'additionalProperties', instancePath: '', schemaPath: '#/additionalProperties', params: { additionalProperty: name }, message: 'must NOT have additional properties' })),
          validationContext: 'querystring'
        })
      }
    },
    schema: routeSchema({
      tags: TAGS,
      summary: 'Remove every entry under the prefix, or one namespace',
      querystring: ClearQuerySchema,
      response: { 200: ClearReplySchema, 400: ErrorReplySchema, ...unauthorized, 503: ErrorReplySchema }
    })
  }, async (request) => {
    // A failed clear is a 503, not `{ cleared: 0 }`, which an operator would read as done.
    return { cleared: await cache.clearEntries(request.query.namespace, true) }
  })

  const reset = async (): Promise<Static<typeof ResetReplySchema>> => {
    cache.resetStatistics()
    return { reset: true }
  }
  const resetSchema = routeSchema({
    tags: TAGS,
    summary: 'Reset the statistics',
    querystring: NoQuery,
    response: { 200: ResetReplySchema, ...unauthorized }
  })
  fastify.get('/reset-stats', { config, schema: resetSchema }, reset)
  fastify.post('/reset-stats', { config, schema: resetSchema }, reset)

  fastify.get('/metrics', {
    config,
    schema: routeSchema({
      tags: TAGS,
      summary: 'Prometheus metrics (text exposition format 0.0.4)',
      querystring: NoQuery,
      response: {
        200: {
          description: 'Prometheus text exposition format 0.0.4',
          content: { 'text/plain': { schema: Type.String() } }
        },
        ...unauthorized
      }
    })
  }, async (_request, reply) => {
    const info = await cache.readInfo(false)
    const text = renderMetrics({ statistics: cache.getStatistics(), info, connected: cache.store.connected })
    return reply.type(METRICS_CONTENT_TYPE).send(text)
  })
}
