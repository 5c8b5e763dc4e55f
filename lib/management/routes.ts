// The protected management routes (stats, ping, clear, reset-stats, metrics). index.ts registers
// them, in this order, inside the scope that checks the token and sets their error handler.
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { CacheManager } from '../cache/manager'
import { unknownQueryParameters } from '../errors'
import type { CacheStack } from '../stack'
import { refuseCrossSite } from './guard'
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics'
import {
  ClearQuerySchema,
  ClearReplySchema,
  ErrorReplySchema,
  forbidden,
  NoQuery,
  PingErrorSchema,
  PingOkSchema,
  ResetReplySchema,
  StatsReplySchema,
  TAGS,
  routeSchema,
  unauthorized,
  type ClearQuery,
  type ResetReply
} from './schemas'

// Management answers are never route-cached, whatever the app's defaults are.
const config = { cache: false as const }

/** The Redis client's state (ioredis `status`); `ready` for the memory store. */
export function connectionStatus (stack: CacheStack): string {
  return stack.client?.status ?? 'ready'
}

/** `GET /stats` and `GET /ping`: what the cache holds and whether Redis answers. */
export function registerStatusRoutes (fastify: FastifyInstance, cache: CacheManager): void {
  fastify.get('/stats', {
    config,
    schema: routeSchema({
      tags: TAGS,
      summary: 'Cache statistics and Redis server information',
      querystring: NoQuery,
      response: { 200: StatsReplySchema, ...unauthorized, ...forbidden }
    })
  }, async () => {
    const info = await cache.readInfo(false)
    return {
      statistics: cache.getStatistics(),
      redis: { ...info, connected: cache.core.stack.connected, status: connectionStatus(cache.core.stack) }
    }
  })

  fastify.get('/ping', {
    config,
    schema: routeSchema({
      tags: TAGS,
      summary: 'Whether Redis answers, and how fast',
      querystring: NoQuery,
      response: { 200: PingOkSchema, 503: PingErrorSchema, ...unauthorized, ...forbidden }
    })
  }, async (_request, reply) => {
    const start = process.hrtime.bigint()
    const ok = await cache.ping()
    const latencyMs = Number(process.hrtime.bigint() - start) / 1e6
    const { circuit } = cache.getStatistics()
    if (!ok) return reply.code(503).send({ status: 'error', circuit })
    return { status: 'ok', latencyMs: Math.round(latencyMs * 1000) / 1000, circuit }
  })
}

/**
 * `DELETE /clear` and `GET`/`POST /reset-stats`: the routes that change something. Another
 * site's page must not be able to fire them through a visitor's browser, whatever protects
 * the routes otherwise.
 */
export function registerClearRoutes (fastify: FastifyInstance, cache: CacheManager): void {
  fastify.delete<{ Querystring: ClearQuery }>('/clear', {
    config,
    onRequest: refuseCrossSite,
    // Fastify's validator drops unknown query parameters instead of refusing them, which would
    // turn a typo (`?namspace=a`, `?pattern=a*`) into clearing everything: refuse them first.
    preValidation: async (request) => {
      const unknown = Object.keys(request.query).filter((name) => name !== 'namespace')
      if (unknown.length > 0) {
        throw unknownQueryParameters(unknown)
      }
    },
    schema: routeSchema({
      tags: TAGS,
      summary: 'Remove every entry under the prefix, or one namespace',
      querystring: ClearQuerySchema,
      response: { 200: ClearReplySchema, 400: ErrorReplySchema, ...unauthorized, ...forbidden, 503: ErrorReplySchema }
    })
  }, async (request) => {
    // A failed clear is a 503, not `{ cleared: 0 }`, which an operator would read as done.
    return { cleared: await cache.clearEntries(request.query.namespace, true) }
  })

  const reset = async (): Promise<ResetReply> => {
    cache.resetStatistics()
    return { reset: true }
  }
  const resetSchema = routeSchema({
    tags: TAGS,
    summary: 'Reset the statistics',
    querystring: NoQuery,
    response: { 200: ResetReplySchema, ...unauthorized, ...forbidden }
  })
  fastify.get('/reset-stats', { config, onRequest: refuseCrossSite, schema: resetSchema }, reset)
  fastify.post('/reset-stats', { config, onRequest: refuseCrossSite, schema: resetSchema }, reset)
}

/** `GET /metrics`: the statistics and Redis counters in Prometheus text format. */
export function registerMetricsRoute (fastify: FastifyInstance, cache: CacheManager): void {
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
        ...unauthorized,
        ...forbidden
      }
    })
  }, async (_request, reply) => {
    const info = await cache.readInfo(false)
    const text = renderMetrics({ statistics: cache.getStatistics(), info, connected: cache.core.stack.connected })
    return reply.type(METRICS_CONTENT_TYPE).send(text)
  })
}
