// Opens the Redis connection through @fastify/redis, which decorates `fastify.redis[namespace]`;
// `onClose` closes the client we created (a client the user passed in only with
// `closeClient: true`): QUIT when connected, a plain disconnect when not, since QUIT cannot be
// sent over a connection that is down.
//
// One multiplexed connection with auto-pipelining serves every request. Registration waits for
// it a bounded time only: when Redis is down at start the app still boots, the cache degrades,
// and ioredis keeps reconnecting in the background. Commands never queue while disconnected
// (`enableOfflineQueue: false`), so an outage costs a fast failure, not a pile of waiting requests.
import { fastifyRedis } from '@fastify/redis'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import type { ResolvedRedis } from './config'
import { RedisConnectionError } from './errors'
import type { RedisClient } from './stores/redis'

const RECONNECT_BACKOFF_MS = 100
const RECONNECT_MAX_DELAY_MS = 2000
const ERROR_LOG_INTERVAL_MS = 10_000

/** Backoff for reconnects: grows with each attempt, capped, and never gives up. */
export function reconnectDelay (attempt: number): number {
  return Math.min(attempt * RECONNECT_BACKOFF_MS, RECONNECT_MAX_DELAY_MS)
}

/** ioredis's `reconnectOnError`, told when a connection is ready (see reconnectOnReadonly). */
export type ReadonlyReconnect = ((err: Error) => false | 1 | 2) & { ready: () => void }

/**
 * A READONLY reply means the server behind this address was demoted by a failover: reconnect,
 * which reaches the new primary when DNS or a proxy moved with it (a Sentinel client asks the
 * sentinels again). ioredis can also resend the command after the reconnect (2), but only
 * through its offline queue: with the queue off, as by default here, a resend is refused at
 * once with a less telling error, so the command fails with the READONLY reply itself (1) and
 * the failure policy counts it. Once per connection: the replies to a burst of writes arrive
 * before the connection is gone, and each reconnect asked for would add a listener to the
 * closing socket. Other replies are answers: no reconnect.
 */
export function reconnectOnReadonly (offlineQueue: boolean): ReadonlyReconnect {
  let asked = false
  const decide = (err: Error): false | 1 | 2 => {
    if (asked || !err.message.startsWith('READONLY')) return false
    asked = true
    return offlineQueue ? 2 : 1
  }
  return Object.assign(decide, { ready: () => { asked = false } })
}

function clientDefaults (commandTimeout: number): RedisOptions {
  return {
    enableAutoPipelining: true,
    // The store batches its reads itself (see RedisStore.get): going through auto-pipelining
    // again would only add its cost, and queue each batch behind the pipeline in flight. Entry
    // writes (the write script, or SET) go out at once too: queued behind a pipeline in flight
    // (a heartbeat, a lock), a write would reach Redis after reads asked for later.
    autoPipeliningIgnoredCommands: ['get', 'mget', 'set', 'evalsha', 'eval'],
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout,
    retryStrategy: reconnectDelay,
    connectionName: 'fastify-redis-cache'
  }
}

export function createClient (resolved: Exclude<ResolvedRedis, { kind: 'memory' | 'client' }>, commandTimeout: number): RedisClient {
  if (resolved.kind === 'cluster') {
    const { redisOptions, ...clusterOptions } = resolved.options
    return new Cluster(resolved.nodes, {
      enableAutoPipelining: true,
      enableOfflineQueue: false,
      clusterRetryStrategy: reconnectDelay,
      ...clusterOptions,
      redisOptions: { ...clientDefaults(commandTimeout), ...redisOptions }
    })
  }
  // With Sentinel, follow a failover as soon as the sentinels announce it, not when the old
  // master finally refuses writes.
  const sentinel = resolved.options.sentinels === undefined ? {} : { failoverDetector: true }
  const options: RedisOptions = { ...clientDefaults(commandTimeout), ...sentinel, ...resolved.options }
  const readonly = reconnectOnReadonly(options.enableOfflineQueue === true)
  options.reconnectOnError ??= readonly
  const client = resolved.url === undefined ? new Redis(options) : new Redis(resolved.url, options)
  client.on('ready', readonly.ready)
  return client
}

/**
 * Connects (or adopts) the client and hands it to @fastify/redis. Resolves once the client is
 * ready, or, when Redis cannot be reached, after the first failed attempt or `startTimeout`.
 * Rejects on errors that retrying cannot fix (wrong password, unknown host).
 */
export async function openConnection (
  fastify: FastifyInstance,
  log: FastifyBaseLogger,
  resolved: Exclude<ResolvedRedis, { kind: 'memory' }>,
  commandTimeout: number,
  startTimeout: number
): Promise<RedisClient> {
  const client = resolved.kind === 'client' ? resolved.client : createClient(resolved, commandTimeout)
  const own = resolved.kind !== 'client' || resolved.closeClient
  if (own) {
    fastify.addHook('onClose', async () => {
      if (client.status === 'ready') await client.quit().catch(() => client.disconnect())
      else client.disconnect()
    })
  }

  const connection = watchConnection(client, log)
  await waitForStart(client, own, startTimeout, log, connection)

  // @fastify/redis decorates `fastify.redis[namespace]`. With a ready client it calls back at once;
  // otherwise it adds 'ready', 'error' and 'end' listeners that would quit the client on a reply
  // error: those are removed, ioredis keeps reconnecting instead. It is called directly rather
  // than through `register` because avvio would hold the whole app's start until Redis answers.
  const events = ['ready', 'error', 'end'] as const
  const before = events.map((event) => client.listeners(event))
  let registrationError: Error | undefined
  fastifyRedis(fastify, { client, closeClient: false, namespace: resolved.namespace }, (err?: Error) => {
    registrationError = err
  })
  events.forEach((event, i) => {
    for (const listener of client.listeners(event)) {
      if (!before[i].includes(listener)) client.off(event, listener as (...args: unknown[]) => void)
    }
  })
  if (registrationError !== undefined) {
    if (own) client.disconnect()
    throw new RedisConnectionError(`fastify-redis-cache: cannot use Redis: ${registrationError.message}`, { cause: registrationError })
  }
  return client
}

/** The connection's state as the logs tell it: `degraded` from a drop until the next `ready`. */
interface ConnectionWatch {
  degraded: boolean
}

/** Logs connection errors (throttled) and the return of a dropped connection. */
function watchConnection (client: RedisClient, log: FastifyBaseLogger): ConnectionWatch {
  const watch = { degraded: false }
  // Without a listener ioredis reports every failed reconnect as an unhandled error event.
  let lastErrorLog = 0
  client.on('error', (err: Error) => {
    if (readyCheckRefused(client, err)) {
      // ioredis checks that a new connection is ready with INFO, and drops the connection when
      // INFO is refused other than by an ACL (renamed away): the client would never be ready.
      // Without the check it connects; the capability probe (capabilities.ts) reports INFO.
      ;(client as Redis).options.enableReadyCheck = false
      log.info('fastify-redis-cache: Redis refuses INFO; connecting without ioredis\'s ready check')
      return
    }
    const now = Date.now()
    if (now - lastErrorLog >= ERROR_LOG_INTERVAL_MS) {
      lastErrorLog = now
      log.warn({ err }, `Redis connection error: ${err.message}`)
    }
  })
  client.on('ready', () => {
    if (watch.degraded) log.info('Redis connection restored')
    watch.degraded = false
  })
  client.on('close', () => { watch.degraded = true })
  return watch
}

/** Whether `err` is ioredis's ready check failing because INFO is refused (renamed away). */
function readyCheckRefused (client: RedisClient, err: Error & { command?: { name?: string } }): boolean {
  return !client.isCluster && err.name === 'ReplyError' && err.command?.name === 'info'
}

/**
 * Waits a bounded time for the connection ourselves. @fastify/redis would wait too, but when it
 * gives up (a reply error such as WRONGPASS, an unknown host) it calls quit() without handling
 * its rejection, which with the offline queue off is immediate: an unhandled rejection that ends
 * the process. And if it gave up during a later reconnect, the client would be gone for good.
 */
function waitForStart (client: RedisClient, own: boolean, startTimeout: number, log: FastifyBaseLogger, watch: ConnectionWatch): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (client.status === 'ready') {
      resolve()
      return
    }
    const done = (err?: Error): void => {
      clearTimeout(timer)
      client.off('ready', onReady)
      client.off('error', onStartError)
      if (err === undefined) resolve()
      else reject(err)
    }
    const onReady = (): void => done()
    const unreachable = (reason: string): void => {
      watch.degraded = true
      log.warn(`Redis unreachable at start (${reason}): the cache degrades and reconnects in the background`)
      done()
    }
    const onStartError = (err: Error): void => {
      // The client connects again at once, without the ready check (see watchConnection).
      if (readyCheckRefused(client, err)) return
      // A refused password or an unknown host is a configuration error: retrying cannot fix it.
      if (err.name === 'ReplyError' || (err as NodeJS.ErrnoException).code === 'ENOTFOUND') {
        if (own) client.disconnect()
        done(new RedisConnectionError(`fastify-redis-cache: cannot use Redis: ${err.message}`, { cause: err }))
        return
      }
      unreachable(err.message)
    }
    const timer = setTimeout(unreachable, startTimeout, `no answer within ${startTimeout} ms`)
    client.on('ready', onReady)
    client.on('error', onStartError)
  })
}
