// The invalidation bus: every change made through an instance is published on
// `${prefix}:#invalidate`, and every other instance hears of it. When the subscription drops,
// messages may have been missed, so the listener is told to drop everything when it comes back.
//
// The subscription is a connection of its own. On a standalone or Sentinel client it is the
// client's duplicate, which reconnects by itself and says `ready` each time. A Cluster client's
// own subscriber moves to another node without a word when its node goes away, so no flush could
// follow; on a Cluster the bus subscribes through one node's connection instead (a Cluster's
// PUBLISH reaches every node), and through the next node's when that one ends.
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import type { RedisClient } from '../stores/redis'
import { decodeMessage, encodeMessage } from './messages'

/** What the bus tells the local tier. */
export interface BusListener {
  dropKeys (keys: readonly string[]): void
  dropPrefix (prefix: string): void
  dropAll (): void
}

/** Cluster: the first wait before subscribing through another node, and the longest. */
const RESUBSCRIBE_DELAY_MS = 50
const RESUBSCRIBE_MAX_DELAY_MS = 2000

export class InvalidationBus {
  private readonly publisher: RedisClient
  private subscriber: Redis | undefined
  private readonly channel: string
  private readonly origin = randomBytes(8).toString('hex')
  private readonly listener: BusListener
  private readonly log: FastifyBaseLogger
  private subscribedOnce = false
  private closed = false
  // Cluster: the node to subscribe through next, and the attempts since the last subscription.
  private nextNode = 0
  private attempts = 0

  constructor (client: RedisClient, prefix: string, listener: BusListener, log: FastifyBaseLogger) {
    this.publisher = client
    this.channel = `${prefix}:#invalidate`
    this.listener = listener
    this.log = log
    if (client.isCluster) this.subscribeOnNode(client as Cluster)
    else this.subscriber = this.listen((client as Redis).duplicate())
  }

  publishKeys (keys: readonly string[]): void {
    this.publish(encodeMessage({ origin: this.origin, keys: [...keys] }))
  }

  publishPrefix (prefix: string): void {
    this.publish(encodeMessage({ origin: this.origin, prefix }))
  }

  close (): void {
    this.closed = true
    this.subscriber?.disconnect()
  }

  /** Subscribes on `connection` whenever it is ready; every time after the first, flushes. */
  private listen (connection: Redis): Redis {
    connection.on('error', () => {}) // reported by the main client already
    connection.on('ready', () => {
      // Messages missed while unsubscribed: what the local tier holds may be stale.
      if (this.subscribedOnce) {
        this.listener.dropAll()
        this.log.info('fastify-redis-cache: invalidation channel reconnected; local tier flushed')
      }
      this.subscribedOnce = true
      this.attempts = 0
      // Commands are not queued while disconnected, so subscribe on each (re)connect.
      connection.subscribe(this.channel).catch((err: unknown) => {
        this.log.warn({ err }, 'fastify-redis-cache: cannot subscribe to the invalidation channel')
      })
    })
    connection.on('message', (channel: string, message: string) => this.receive(channel, message))
    return connection
  }

  /**
   * Subscribes through one node of the Cluster, never reconnecting to it: when the connection
   * ends, the next node is tried, sooner after a subscription than after failed attempts.
   */
  private subscribeOnNode (cluster: Cluster): void {
    const nodes = cluster.nodes('all')
    if (nodes.length > 0) {
      const node = nodes[this.nextNode++ % nodes.length]
      const connection = node.duplicate({ lazyConnect: false, readOnly: false, retryStrategy: () => null })
      this.subscriber = this.listen(connection)
      connection.once('end', () => this.resubscribe(cluster))
    } else {
      // Not connected yet, or every node lost: the Cluster client finds them again.
      this.resubscribe(cluster)
    }
  }

  private resubscribe (cluster: Cluster): void {
    if (this.closed) return
    const delay = Math.min(RESUBSCRIBE_MAX_DELAY_MS, RESUBSCRIBE_DELAY_MS * 2 ** this.attempts++)
    setTimeout(() => { if (!this.closed) this.subscribeOnNode(cluster) }, delay).unref()
  }

  private publish (text: string): void {
    this.publisher.publish(this.channel, text).catch((err: unknown) => {
      this.log.warn({ err }, 'fastify-redis-cache: cannot publish an invalidation; other instances keep their local copies until these expire')
    })
  }

  private receive (channel: string, text: string): void {
    /* c8 ignore next: the subscriber listens on this one channel only */
    if (channel !== this.channel) return
    const message = decodeMessage(text)
    if (message.origin === this.origin) return
    if (message.keys !== undefined) this.listener.dropKeys(message.keys)
    else if (message.prefix !== undefined) this.listener.dropPrefix(message.prefix)
    else this.listener.dropAll()
  }
}
