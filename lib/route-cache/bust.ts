// The onSend stage of a mutation: busting what `config.cache.bust` names once the response is a
// success, before it is sent, so a client that reads after it never gets the old entry.
import type { FastifyRequest, onSendHookHandler } from 'fastify'
import { RedisConnectionError } from '../errors'
import { toKey } from '../keys'
import type { CompiledBust } from './compile'
import type { RouteCache } from './route-cache'

export function makeBust (cache: RouteCache, bust: CompiledBust): onSendHookHandler {
  // Callback style: a read, or a failed write, goes on without a promise.
  return function bustAfterSuccess (request, reply, payload, done) {
    // Reads never bust, even on a route that also takes writes.
    if (request.method === 'GET' || request.method === 'HEAD' || reply.statusCode < 200 || reply.statusCode >= 300) {
      done(null, payload)
      return
    }
    invalidateBeforeSending(cache, request, payload, done, 'cache bust', () => {
      const work: Array<Promise<number>> = []
      if (bust.keys !== undefined) {
        const keys = typeof bust.keys === 'function' ? bust.keys(request, reply) : bust.keys
        work.push(cache.fastifyCache.delete(keys.map(toKey), { namespace: bust.namespace }))
      }
      if (bust.tags !== undefined) {
        work.push(cache.fastifyCache.invalidateTags(typeof bust.tags === 'function' ? bust.tags(request, reply) : bust.tags))
      }
      if (bust.clearNamespace) work.push(cache.fastifyCache.clear(bust.namespace))
      return Promise.all(work)
    })
  }
}

/**
 * Runs an invalidation a successful mutation calls for, then hands the payload on: awaited, so a
 * client that reads after this response never gets the old entry. A failure is counted (store
 * failures already were, where they happened) and logged, and the response is sent anyway.
 */
export function invalidateBeforeSending (cache: RouteCache, request: FastifyRequest, payload: unknown, done: (err: null, payload: unknown) => void, what: string, invalidate: () => Promise<unknown>): void {
  const failed = (err: unknown): void => {
    if (!(err instanceof RedisConnectionError)) cache.core.failures.count(err, 'bust', request.url, request)
    request.log.error({ plugin: 'fastify-redis-cache', err, url: request.url }, `fastify-redis-cache: ${what} failed; the response is sent anyway`)
    done(null, payload)
  }
  let work: Promise<unknown>
  try {
    work = invalidate()
  } catch (err) {
    failed(err)
    return
  }
  work.then(() => done(null, payload), failed)
}
