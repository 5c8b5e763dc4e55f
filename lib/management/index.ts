// Management routes (stats, ping, clear, reset-stats, metrics): an encapsulated child plugin, so
// its hooks (authentication, no-store) apply to these routes only. The dashboard page sits next
// to them, outside that scope.
//
// Security: with a token every route needs `Authorization: Bearer <token>`, checked in
// `onRequest` (before anything else runs) by comparing SHA-256 digests in constant time, so
// neither the token's content nor its length leaks through timing (auth.ts). A user `preHandler`
// runs as a preHandler hook of every route (after the token check when both are given). With
// neither, and unless `public: true`, the routes answer loopback clients only; and the routes
// that change state refuse cross-site requests whatever protects them (guard.ts). Whether the
// routes may run unprotected at all (production) is decided in config.ts at registration.
import { Type } from '@sinclair/typebox'
import type { FastifyError, FastifyPluginAsync, preHandlerHookHandler } from 'fastify'
import type { CacheManager } from '../cache/manager'
import { cacheErrorHandler } from '../error-handler'
import { addTokenCheck } from './auth'
import { DASHBOARD_CSP, DASHBOARD_HTML } from './dashboard'
import { addLoopbackCheck } from './guard'
import { registerClearRoutes, registerMetricsRoute, registerStatusRoutes } from './routes'
import { TAGS, routeSchema } from './schemas'

export interface ManagementOptions {
  cache: CacheManager
  token: string | undefined
  preHandler: preHandlerHookHandler | undefined
  /** Answer clients beyond the loopback interface without a token or preHandler. */
  public: boolean
  dashboard: boolean
}

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
  if (loopbackOnly(options)) {
    fastify.log.warn(`fastify-redis-cache: the management routes under ${fastify.prefix}/ have no token or preHandler and answer loopback clients only; set routes.token (or CACHE_ADMIN_TOKEN), routes.preHandler, or routes.public: true to open them`)
  }
  await fastify.register(protectedRoutes, { cache, token, preHandler, public: options.public, dashboard })
}

/** Unprotected and not made public: the routes answer clients on this machine only. */
function loopbackOnly ({ token, preHandler, public: open }: ManagementOptions): boolean {
  return token === undefined && preHandler === undefined && !open
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

  if (loopbackOnly(options)) addLoopbackCheck(fastify)
  if (token !== undefined) addTokenCheck(fastify, token)
  if (preHandler !== undefined) fastify.addHook('preHandler', preHandler)

  // Operational answers are never stored by browsers, proxies or CDNs.
  fastify.addHook('onSend', async (_request, reply) => {
    reply.header('cache-control', 'no-store')
  })

  registerStatusRoutes(fastify, cache)
  registerClearRoutes(fastify, cache)
  registerMetricsRoute(fastify, cache)
}
