// `config.rateLimit: { max, timeWindow, keyGenerator }` on a route, in the shape of
// @fastify/rate-limit, counted by `fastify.cache.rateLimit` (a fixed window in Redis, shared by
// every instance). Every answer carries the x-ratelimit-* headers; a refused one is a 429 with
// retry-after, answered by the error handler like any RateLimitError.
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import type { FastifyCache, RouteRateLimitOptions } from '../../types'
import { RouteRateLimitOptionsSchema } from '../../types/route-options'
import { CacheConfigError, RateLimitError } from '../errors'
import { schemaProblem } from '../schema-check'
import { windowSeconds } from './time-window'

type KeyGenerator = (request: FastifyRequest) => string | number | Promise<string | number>

export function installRouteRateLimits (fastify: FastifyInstance, cache: Pick<FastifyCache, 'rateLimit'>): void {
  fastify.addHook('onRoute', (routeOptions) => {
    const options = routeOptions.config?.rateLimit
    if (options === undefined || options === false) return
    const where = `${String(routeOptions.method)} ${routeOptions.url}`
    const hook = compileRateLimit(options, where, cache)
    const existing = routeOptions.onRequest
    const hooks = existing === undefined ? [] : [existing].flat()
    // First, before authentication and the cache: a refused request costs nothing more.
    routeOptions.onRequest = [hook, ...hooks]
  })
}

function compileRateLimit (options: RouteRateLimitOptions, where: string, cache: Pick<FastifyCache, 'rateLimit'>): onRequestHookHandler {
  const what = `config.rateLimit of ${where}`
  if (typeof options !== 'object' || options === null) {
    throw new CacheConfigError(`fastify-redis-cache: invalid ${what}: it must be an object or false`)
  }
  const problem = schemaProblem(RouteRateLimitOptionsSchema, options, 'config.rateLimit.')
  if (problem !== undefined) throw new CacheConfigError(`fastify-redis-cache: invalid ${what}: ${problem}`)
  const limits = { max: options.max, window: windowSeconds(options.timeWindow, what), failClosed: options.failClosed }
  const keyOf = (options.keyGenerator as KeyGenerator | undefined) ?? ((request: FastifyRequest) => request.ip)
  const prefix = `rate-limit:${where}:`
  return async function rateLimitRoute (request, reply) {
    try {
      const result = await cache.rateLimit(prefix + String(await keyOf(request)), limits)
      setHeaders(reply, result.limit, result.remaining, result.reset)
    } catch (err) {
      if (err instanceof RateLimitError) {
        setHeaders(reply, err.limit, 0, err.retryAfter)
        reply.header('retry-after', String(err.retryAfter))
      }
      throw err
    }
  }
}

function setHeaders (reply: FastifyReply, limit: number, remaining: number, reset: number): void {
  reply.header('x-ratelimit-limit', String(limit))
  reply.header('x-ratelimit-remaining', String(remaining))
  reply.header('x-ratelimit-reset', String(reset))
}
