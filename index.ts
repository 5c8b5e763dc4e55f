// fastify-redis-cache: a Redis-backed cache for Fastify.
// The plugin resolves its configuration, builds the layer stack (stack.ts), decorates
// `fastify.cache`, and wires the optional parts (route caching, error handler, management routes).
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { CacheCore } from './lib/cache/core'
import { FailurePolicy } from './lib/cache/failures'
import { CacheManager } from './lib/cache/manager'
import { resolveConfig } from './lib/config'
import { installErrorHandler } from './lib/error-handler'
import { InvalidationJournal } from './lib/invalidation/journal'
import { InvalidationStamps } from './lib/invalidation/stamps'
import { KeyLayout } from './lib/keys'
import { DistributedLock } from './lib/lock'
import { managementRoutes } from './lib/management'
import { installRouteCaching } from './lib/route-cache'
import { installRouteRateLimits } from './lib/route-rate-limit'
import { Codec } from './lib/serializer'
import { buildStack } from './lib/stack'
import { Statistics } from './lib/statistics'
import { Telemetry } from './lib/telemetry'
import type { CacheOptions } from './types'

const plugin: FastifyPluginAsync<CacheOptions> = async function fastifyRedisCache (fastify, options) {
  const config = resolveConfig(options)
  // DEBUG=true logs every cache decision, whatever the app's log level.
  const log = fastify.log.child({ plugin: 'fastify-redis-cache' }, config.debug ? { level: 'debug' } : {})
  const layout = new KeyLayout(config.prefix)
  const stats = new Statistics()
  const stack = await buildStack(fastify, log, config, layout, stats)
  const stamps = new InvalidationStamps(layout, stack.stampSource)
  const journal = new InvalidationJournal(stack.entries, stamps, layout, stats, log)
  fastify.addHook('onClose', () => {
    journal.close()
    return stack.close()
  })

  const telemetry = new Telemetry(config.telemetry, stack.kind)
  const core = new CacheCore({
    stack,
    layout,
    codec: new Codec(config.serializer, config.compression),
    defaultTtl: config.defaultTtl,
    maxTtl: config.maxTtl,
    maxEntrySize: config.maxEntrySize,
    lock: new DistributedLock(stack.locks, stack.entries, layout.lockPrefix, config.lock, { connection: stack }),
    failures: new FailurePolicy(config.throwOnError, stats, log, telemetry),
    stats,
    log,
    stamps,
    journal,
    telemetry
  })
  const cache = new CacheManager(core, config.getOrSet)
  fastify.decorate(config.decorator, cache)

  installRouteCaching(fastify, core, cache, config.routeDefaults)
  installRouteRateLimits(fastify, cache)
  if (config.errorHandler) installErrorHandler(fastify)
  if (config.routes !== false) {
    const { prefix, ...routes } = config.routes
    await fastify.register(managementRoutes, { prefix, cache, ...routes })
  }
}

export const fastifyRedisCache = fp(plugin, {
  fastify: '5.x',
  name: 'fastify-redis-cache'
})
export default fastifyRedisCache

export {
  CacheError,
  CacheConfigError,
  CacheKeyError,
  CacheSerializationError,
  CacheDeserializationError,
  CacheCompressionError,
  CacheDecompressionError,
  CacheForbiddenError,
  CacheTimeoutError,
  CacheUnauthorizedError,
  RateLimitError,
  RedisConnectionError
} from './lib/errors'
export { keyFromParts } from './lib/keys'
export { routeCache } from './lib/route-cache/typed'
export { jsonSerializer } from './lib/serializer'
export type * from './types'
