// fastify-redis-cache: a Redis-backed cache for Fastify.
// The plugin resolves its configuration, opens the store, decorates `fastify.cache`, and wires
// the optional parts (route caching, error handler, management routes).
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { CacheManager } from './lib/cache'
import { GuardedStore } from './lib/circuit-breaker'
import { DEFAULTS, resolveConfig } from './lib/config'
import { openConnection } from './lib/connection'
import { installErrorHandler } from './lib/error-handler'
import { KeyLayout } from './lib/keys'
import { LocalTier, TieredStore } from './lib/local-tier'
import { managementRoutes } from './lib/management'
import { installRouteCaching } from './lib/route-cache'
import { Codec } from './lib/serializer'
import { Statistics } from './lib/statistics'
import { MemoryStore } from './lib/stores/memory'
import { RedisStore } from './lib/stores/redis'
import type { CacheStore } from './lib/stores/store'
import type { CacheOptions } from './types'

const plugin: FastifyPluginAsync<CacheOptions> = async function fastifyRedisCache (fastify, options) {
  const config = resolveConfig(options)
  // DEBUG=true logs every cache decision, whatever the app's log level.
  const log = fastify.log.child({ plugin: 'fastify-redis-cache' }, config.debug ? { level: 'debug' } : {})
  const layout = new KeyLayout(config.prefix)
  const stats = new Statistics()

  let store: CacheStore
  if (config.redis.kind === 'memory') {
    log.info(`fastify-redis-cache: using the in-process memory store (${config.redis.reason}); entries are not shared between processes`)
    if (config.local !== false) log.info('fastify-redis-cache: the local tier is for Redis; the memory store is local already')
    const memory = new MemoryStore(layout)
    fastify.addHook('onClose', () => memory.close())
    store = memory
  } else {
    const connectTimeout = config.redis.kind === 'standalone' ? config.redis.options.connectTimeout : undefined
    const client = await openConnection(fastify, log, config.redis, config.commandTimeout, connectTimeout ?? DEFAULTS.connectTimeout)
    const breaker = config.circuitBreaker
    const guarded = new GuardedStore(new RedisStore(client, layout), {
      failureThreshold: breaker === false ? Infinity : breaker.failureThreshold,
      resetTimeout: breaker === false ? 0 : breaker.resetTimeout,
      healthCheckInterval: config.healthCheckInterval,
      // A standalone client the plugin creates times commands out itself (ioredis commandTimeout).
      // A Cluster client applies that timeout to each attempt only, and retries a command on
      // another node, after a failover or a CLUSTERDOWN for seconds: its calls are bounded here.
      commandTimeout: config.redis.kind === 'standalone' ? 0 : config.commandTimeout
    }, {
      onStateChange (state, previous) {
        if (state === 'open') log.warn(`fastify-redis-cache: Redis circuit ${previous} -> open: skipping Redis, responses come from handlers`)
        else if (state === 'closed') log.info(`fastify-redis-cache: Redis circuit ${previous} -> closed: using Redis again`)
      }
    })
    client.on('ready', () => guarded.connectionRestored())
    store = config.local === false ? guarded : new TieredStore(guarded, client, config.prefix, new LocalTier(config.local, stats), log)
    fastify.addHook('onClose', () => store.close())
  }

  const cache = new CacheManager({
    store,
    layout,
    defaultTtl: config.defaultTtl,
    maxTtl: config.maxTtl,
    codec: new Codec(config.serializer, config.compression),
    throwOnError: config.throwOnError,
    maxEntrySize: config.maxEntrySize,
    lock: config.lock,
    stats,
    log
  })
  fastify.decorate('cache', cache)

  installRouteCaching(fastify, cache)
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
  RateLimitError,
  RedisConnectionError
} from './lib/errors'
export { jsonSerializer } from './lib/serializer'
export type * from './types'
