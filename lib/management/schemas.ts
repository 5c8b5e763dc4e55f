// Schemas (TypeBox) of the management routes: every route documents its query and responses for
// OpenAPI. The statistics and server-information schemas live with their types in
// types/statistics.ts; these are the replies built around them.
import { Type, type Static } from '@sinclair/typebox'
import type { FastifySchema } from 'fastify'
import { CacheInfoSchema, CircuitSchema, StatisticsSchema } from '../../types/statistics'
import { NAMESPACE_PATTERN } from '../keys'

export const TAGS = ['cache']

/** A route schema with the OpenAPI fields @fastify/swagger reads. */
interface RouteSchema extends FastifySchema {
  tags: string[]
  summary: string
  description?: string
}
export const routeSchema = (schema: RouteSchema): FastifySchema => schema

export const ErrorReplySchema = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String()),
  error: Type.String(),
  message: Type.String()
}, { description: 'An error: status, machine-readable code, reason phrase and message' })

/** The 401 every protected route may answer (the token check in auth.ts). */
export const unauthorized = { 401: ErrorReplySchema }

/** The 403 every protected route may answer (a remote or cross-site client, guard.ts). */
export const forbidden = { 403: ErrorReplySchema }

export const NoQuery = Type.Object({}, { additionalProperties: false })

export const RedisInfoSchema = Type.Object({
  ...CacheInfoSchema.properties,
  connected: Type.Boolean({ description: 'Whether the store answers commands now' }),
  status: Type.String({ description: 'Connection state: ioredis status (ready, connecting, reconnecting, end, ...); always ready for the memory store' })
}, { additionalProperties: true, description: CacheInfoSchema.description })

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
export type ResetReply = Static<typeof ResetReplySchema>
