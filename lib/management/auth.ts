// The bearer-token check of the management routes. The token is compared as SHA-256 digests in
// constant time, so neither its content nor its length leaks through timing.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { cacheErrorReply } from '../error-handler'
import { CacheUnauthorizedError } from '../errors'

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

/**
 * Refuses every request of this scope without the token with a 401, in `onRequest` so that
 * nothing else (validation, a user preHandler, the handler) runs first.
 */
export function addTokenCheck (fastify: FastifyInstance, token: string): void {
  const valid = bearerChecker(token)
  fastify.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    if (valid(request.headers.authorization)) return
    const given = request.headers.authorization !== undefined
    request.log.info({ url: request.url }, 'fastify-redis-cache: management route refused: missing or invalid bearer token')
    return reply
      .code(401)
      .header('www-authenticate', given ? 'Bearer realm="fastify-redis-cache", error="invalid_token"' : 'Bearer realm="fastify-redis-cache"')
      .send(cacheErrorReply(new CacheUnauthorizedError('A valid Authorization: Bearer token is required')))
  })
}
