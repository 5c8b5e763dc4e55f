// The layers of the cache, built in one place and named:
//
//   memory store                          (no Redis: one process, bounded, no locks)
//   l1 local tier -> breaker -> l2 Redis  (with `local`; the bus keeps instances' l1 coherent)
//             breaker -> l2 Redis         (without)
//
// Every other part finds a layer here by name: entries go through `entries` (the top of the
// entry stack), locks and rate-limit windows through the breaker to Redis, and reports read
// `breaker`, `client` and `local` directly. Nothing walks from one layer to the next.
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { InvalidationBus } from './bus/invalidation-bus'
import type { StampSource } from './invalidation/stamps'
import { watchCapabilities } from './capabilities'
import { DEFAULTS, type ResolvedConfig } from './config'
import { openConnection } from './connection'
import type { KeyLayout } from './keys'
import { SegmentCache } from './local/segment-cache'
import type { Statistics } from './statistics'
import type { CacheStatistics } from '../types'
import { type CircuitState, GuardedStore } from './stores/guarded'
import { MemoryStore } from './stores/memory'
import { type RedisClient, RedisStore } from './stores/redis'
import type { EntryStore, LockStore, RateWindowStore, ServerStore, SyncReader } from './stores/store'
import { TieredStore } from './stores/tiered'

export interface CacheStack {
  readonly kind: 'memory' | 'redis'
  /** l2: the store at the bottom, unguarded. */
  readonly store: MemoryStore | RedisStore
  /** Where entries are read and written: the local tier over Redis, or the one store. */
  readonly entries: EntryStore
  readonly windows: RateWindowStore
  /** Locks shared by the instances; none for the memory store, which only one process sees. */
  readonly locks: LockStore | undefined
  readonly server: ServerStore
  /** Where invalidation stamps are read: Redis, through the breaker; none for the memory store. */
  readonly stampSource: StampSource | undefined
  /** l1: the local tier's memory, when on. */
  readonly local: SegmentCache | undefined
  /** What hit paths read synchronously first: l1, or the memory store. */
  readonly nearby: SyncReader | undefined
  /** The circuit breaker in front of Redis. */
  readonly breaker: GuardedStore | undefined
  /** The Redis client, for what reports on the connection. */
  readonly client: RedisClient | undefined
  /** Whether commands can be expected to succeed now. */
  readonly connected: boolean
  readonly circuit: CircuitState
  /** What the Redis refuses (see capabilities.ts): filled in once the connection is probed. */
  readonly missingCapabilities: string[]
  /**
   * How many times the connection came back (ready again) since the stack was built: a change
   * means commands before it may have gone to another server (a failover). 0 for memory.
   */
  readonly reconnects: number
  /** The local tier's report for the statistics; null when off. */
  localReport (): CacheStatistics['local']
  close (): Promise<void>
}

export async function buildStack (fastify: FastifyInstance, log: FastifyBaseLogger, config: ResolvedConfig, layout: KeyLayout, stats: Statistics): Promise<CacheStack> {
  if (config.redis.kind === 'memory') {
    log.info(`fastify-redis-cache: using the in-process memory store (${config.redis.reason}); entries are not shared between processes`)
    if (config.local !== false) log.info('fastify-redis-cache: the local tier is for Redis; the memory store is local already')
    return memoryStack(new MemoryStore(layout, config.memory, stats))
  }
  const connectTimeout = config.redis.kind === 'standalone' ? config.redis.options.connectTimeout : undefined
  const client = await openConnection(fastify, log, config.redis, config.commandTimeout, connectTimeout ?? DEFAULTS.connectTimeout)
  const store = new RedisStore(client, layout)
  const breaker = guard(store, config, log)
  let reconnects = 0
  client.on('ready', () => {
    reconnects++
    breaker.connectionRestored()
  })
  const missingCapabilities: string[] = []
  // In the background: registration waits for nothing more than the connection.
  watchCapabilities({
    client,
    store,
    missing: missingCapabilities,
    channel: config.local === false ? undefined : `${config.prefix}:#invalidate`,
    log
  })
  let tiered: TieredStore | undefined
  let bus: InvalidationBus | undefined
  if (config.local !== false) {
    tiered = new TieredStore(breaker, new SegmentCache(config.local, stats), config.prefix)
    bus = tiered.bus = new InvalidationBus(client, config.prefix, tiered, log, config.local.heartbeat)
  }
  return {
    kind: 'redis',
    store,
    entries: tiered ?? breaker,
    windows: breaker,
    locks: breaker,
    server: breaker,
    stampSource: breaker,
    local: tiered?.local,
    nearby: tiered?.nearby,
    breaker,
    client,
    get connected () { return breaker.connected },
    get circuit () { return breaker.state },
    missingCapabilities,
    get reconnects () { return reconnects },
    localReport: () => tiered === undefined ? null : { ...tiered.local.describe(), bypassed: tiered.local.bypassed },
    async close () {
      bus?.close()
      tiered?.dropAll()
      await breaker.close()
    }
  }
}

function memoryStack (store: MemoryStore): CacheStack {
  return {
    kind: 'memory',
    store,
    entries: store,
    windows: store,
    locks: undefined,
    server: store,
    stampSource: undefined,
    local: undefined,
    nearby: store.nearby,
    breaker: undefined,
    client: undefined,
    connected: true,
    circuit: 'closed',
    missingCapabilities: [],
    reconnects: 0,
    localReport: () => null,
    close: () => store.close()
  }
}

function guard (store: RedisStore, config: ResolvedConfig, log: FastifyBaseLogger): GuardedStore {
  const breaker = config.circuitBreaker
  return new GuardedStore(store, {
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
}
