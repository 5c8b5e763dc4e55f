// Maps CacheError subclasses thrown from routes to JSON replies; other errors keep their handling.
//
// The root error handler is left alone: setting it would replace the application's handler (or
// be replaced by it). Instead an `onRoute` hook gives every route registered after the plugin,
// that has no `errorHandler` of its own, a route-level handler. Fastify chains a route-level
// handler in front of the handler of the context the route lives in (`setErrorHandler` there, or
// Fastify's default), and an error a handler throws goes on to the next handler in that chain. So
// a non-cache error is simply rethrown: it reaches exactly the handler it would have reached
// without the plugin, and the onError hooks do not run twice.
import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { CacheError, RateLimitError } from './errors'

export interface CacheErrorReply {
  statusCode: number
  code: string
  error: string
  message: string
}

/** The reply body for a CacheError: its status, its code, the HTTP reason phrase and its message. */
export function cacheErrorReply (err: CacheError): CacheErrorReply {
  return {
    statusCode: err.statusCode,
    code: err.code,
    error: STATUS_CODES[err.statusCode] ?? 'Error',
    message: err.message
  }
}

/** The route-level handler: answers a CacheError, passes anything else on by rethrowing it. */
export function cacheErrorHandler (err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): CacheErrorReply {
  if (!(err instanceof CacheError)) throw err
  const body = cacheErrorReply(err)
  if (err instanceof RateLimitError) {
    // A client over its limit is routine: no stack, and only at debug.
    request.log.debug({ code: err.code, limit: err.limit, retryAfter: err.retryAfter }, err.message)
    reply.header('retry-after', String(err.retryAfter))
  } else if (body.statusCode >= 500) {
    request.log.error({ err }, err.message)
  } else {
    request.log.info({ err }, err.message)
  }
  reply.code(body.statusCode)
  return body
}

export function installErrorHandler (fastify: FastifyInstance): void {
  fastify.addHook('onRoute', (route: RouteOptions) => {
    // A route with its own handler keeps it untouched.
    route.errorHandler ??= cacheErrorHandler
  })
}
