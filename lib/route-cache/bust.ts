// The onSend stage of a mutation: busting what `config.cache.bust` names once the response is a
// success, before it is sent, so a client that reads after it never gets the old entry.
import type { onSendHookHandler } from 'fastify'
import { RedisConnectionError } from '../errors'
import { toKey } from '../keys'
import type { CompiledBust } from './compile'
import type { RouteCache } from './route-cache'

export function makeBust (cache: RouteCache, bust: CompiledBust): onSendHookHandler {
  return async function bustAfterSuccess (request, reply, payload) {
    // Reads never bust, even on a route that also takes writes.
    if (request.method === 'GET' || request.method === 'HEAD') return payload
    if (reply.statusCode < 200 || reply.statusCode >= 300) return payload
    const work: Array<Promise<number>> = []
    try {
      if (bust.keys !== undefined) {
        const keys = typeof bust.keys === 'function' ? bust.keys(request, reply) : bust.keys
        work.push(cache.fastifyCache.delete(keys.map(toKey), { namespace: bust.namespace }))
      }
      if (bust.tags !== undefined) {
        work.push(cache.fastifyCache.invalidateTags(typeof bust.tags === 'function' ? bust.tags(request, reply) : bust.tags))
      }
      if (bust.clearNamespace) work.push(cache.fastifyCache.clear(bust.namespace))
      // Awaited: a client that reads after this response must not get the old entry.
      await Promise.all(work)
    } catch (err) {
      // Store failures were counted where they happened; anything else is counted here.
      if (!(err instanceof RedisConnectionError)) cache.core.failures.count(err, 'bust', request.url)
      request.log.error({ plugin: 'fastify-redis-cache', err, url: request.url }, 'fastify-redis-cache: cache bust failed; the response is sent anyway')
    }
    return payload
  }
}
