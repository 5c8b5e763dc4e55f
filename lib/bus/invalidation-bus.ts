// The invalidation bus: every change made through an instance is published on
// `${prefix}:#invalidate`, and every other instance hears of it.
//
// The local tier is used only while the bus can vouch that invalidations arrive: from the moment
// the subscription is proven (a heartbeat of ours came back through it, bus/heartbeat.ts) until a
// heartbeat does not come back in time, or the subscription's connection comes back after a drop
// (messages may have been missed meanwhile), or it cannot subscribe at all (Pub/Sub denied). In
// between, the tier is bypassed: flushed, keeping nothing. A subscription that stopped delivering
// is reconnected, as a connection dropped silently never recovers by itself.
//
// With the connection to Redis closed (Redis down, as far as this instance can tell) no
// heartbeat is sent nor expected, so local hits keep serving, as nobody can change Redis then
// either; once it is back, the subscription's own reconnection bypasses the tier until proven. A
// connection that stays open but delivers nothing (a frozen network path) does not count as
// down: there, other instances may well be changing Redis.
//
// The subscription is a connection of its own. On a standalone or Sentinel client it is the
// client's duplicate, which reconnects by itself and says `ready` each time. A Cluster client's
// own subscriber moves to another node without a word when its node goes away, so no flush could
// follow; on a Cluster the bus subscribes through one node's connection instead (a Cluster's
// PUBLISH reaches every node), and through the next node's when that one ends.
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { DEFAULTS } from '../config'
import type { RedisClient } from '../stores/redis'
import { DEADLINE_INTERVALS, Heartbeats } from './heartbeat'
import { type InvalidationMessage, decodeMessage, encodeMessage } from './messages'

/** What the bus tells the local tier. */
export interface BusListener {
  dropKeys (keys: readonly string[]): void
  dropPrefix (prefix: string): void
  dropAll (): void
  /** Stops using the tier (flushing it) while invalidations may not arrive, or starts again. */
  bypass (on: boolean): void
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
  /** Keys written in this turn of the event loop, published together when it ends. */
  private pendingKeys: string[] | null = null
  // Cluster: the node to subscribe through next, and the attempts since the last subscription.
  private nextNode = 0
  private attempts = 0
  private readonly heartbeats: Heartbeats
  private readonly interval: number
  /** Why the tier is bypassed when a heartbeat is overdue. */
  private readonly late: string
  private readonly timer: NodeJS.Timeout
  private lastTick = Date.now()
  /** A heartbeat came back through the current subscription. */
  private proven = false
  /** Refused: the last SUBSCRIBE failed, so it is tried again at each heartbeat. */
  private subscription: 'pending' | 'active' | 'refused' = 'pending'
  /** A refusal was reported, and is not again until a SUBSCRIBE succeeds. */
  private refusalReported = false
  private bypassed = true
  /** A warning said the tier is bypassed: the return to service is logged too. */
  private warned = false

  constructor (client: RedisClient, prefix: string, listener: BusListener, log: FastifyBaseLogger, interval: number = DEFAULTS.localHeartbeat) {
    this.publisher = client
    this.channel = `${prefix}:#invalidate`
    this.listener = listener
    this.log = log
    this.interval = interval
    this.heartbeats = new Heartbeats(interval)
    this.late = `no heartbeat came back through the invalidation channel within ${DEADLINE_INTERVALS * interval} ms`
    // Bypassed until the subscription is proven: what is written meanwhile might miss an invalidation.
    listener.bypass(true)
    this.timer = setInterval(() => this.tick(), interval).unref()
    if (client.isCluster) this.subscribeOnNode(client as Cluster)
    else this.subscriber = this.listen((client as Redis).duplicate())
  }

  /**
   * Keys changed in one turn of the event loop go out in one message when it ends: a burst of
   * writes (every miss stores) costs one PUBLISH, not one each.
   */
  publishKeys (keys: readonly string[]): void {
    let pending = this.pendingKeys
    if (pending === null) {
      pending = this.pendingKeys = []
      setImmediate(() => {
        this.pendingKeys = null
        this.publish({ origin: this.origin, keys: pending as string[] })
      })
    }
    for (const key of keys) pending.push(key)
  }

  publishPrefix (prefix: string): void {
    this.publish({ origin: this.origin, prefix })
  }

  close (): void {
    this.closed = true
    clearInterval(this.timer)
    this.subscriber?.disconnect()
  }

  /** Subscribes on `connection` whenever it is ready; the tier is bypassed until that is proven. */
  private listen (connection: Redis): Redis {
    connection.on('error', () => {}) // reported by the main client already
    connection.on('ready', () => {
      this.attempts = 0
      this.proven = false
      // Messages missed while unsubscribed: what the local tier holds may be stale.
      if (this.subscribedOnce) this.update('the invalidation channel reconnected')
      this.subscribedOnce = true
      // Commands are not queued while disconnected, so subscribe on each (re)connect.
      this.subscribe(connection)
    })
    // Heartbeats sent before are not heard on this connection any more; those sent from now on
    // are expected, so a subscription that stays away while Redis answers is noticed.
    connection.on('close', () => this.heartbeats.forget())
    connection.on('message', (channel: string, message: string) => this.receive(channel, message))
    return connection
  }

  private subscribe (connection: Redis): void {
    this.subscription = 'pending'
    connection.subscribe(this.channel).then(() => {
      this.subscription = 'active'
      this.refusalReported = false
      // Proven as soon as a heartbeat comes back: the first one goes now.
      this.beat()
    }, (err: unknown) => {
      this.subscription = 'refused'
      if (this.refusalReported) return
      this.refusalReported = this.warned = true
      this.log.warn({ err }, 'fastify-redis-cache: cannot subscribe to the invalidation channel; the local tier is bypassed until it can')
    })
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

  /** Each heartbeat interval: checks the subscription, retries a refused one, sends a heartbeat. */
  private tick (): void {
    const now = Date.now()
    // A tick far behind time means this process stalled: heartbeats that came back meanwhile
    // may still be unread, so they are not judged this once.
    const stalled = now - this.lastTick > 2 * this.interval
    this.lastTick = now
    const connection = this.subscriber
    // Redis down: no heartbeat could come back, and nobody can change Redis meanwhile.
    if (this.publisher.status !== 'ready') this.heartbeats.forget()
    else if (!stalled) this.update(this.late)
    if (this.subscription === 'refused' && connection?.status === 'ready') this.subscribe(connection)
    this.beat()
  }

  /** Publishes a heartbeat, expected back from now on, unless Redis is down. */
  private beat (): void {
    if (this.publisher.status !== 'ready') return
    const beat = this.heartbeats.take()
    this.heartbeats.sent(beat)
    // A heartbeat that cannot be published does not come back: that is how it is reported.
    this.publisher.publish(this.channel, encodeMessage({ origin: this.origin, heartbeat: beat })).catch(() => {})
  }

  /** Bypasses the tier or uses it again, as the subscription's health says; `why` for the log. */
  private update (why: string): void {
    const bypass = !this.proven || this.heartbeats.overdue()
    if (bypass === this.bypassed) return
    this.bypassed = bypass
    this.listener.bypass(bypass)
    if (bypass) {
      this.warned = true
      this.log.warn(`fastify-redis-cache: ${why}; local tier flushed and bypassed until invalidations are seen to arrive`)
      // A connection dropped silently stays open here: a new one may deliver again, once proven.
      if (this.proven) {
        this.proven = false
        this.subscriber?.disconnect(true)
      }
    } else if (this.warned) {
      this.warned = false
      this.log.info('fastify-redis-cache: invalidations arrive again; local tier back in use')
    }
  }

  private publish (message: InvalidationMessage): void {
    this.publisher.publish(this.channel, encodeMessage(message)).catch((err: unknown) => {
      this.log.warn({ err }, 'fastify-redis-cache: cannot publish an invalidation; other instances keep their local copies until these expire')
    })
  }

  private receive (channel: string, text: string): void {
    /* c8 ignore next: the subscriber listens on this one channel only */
    if (channel !== this.channel) return
    const message = decodeMessage(text)
    if (message.heartbeat !== undefined) {
      // Other instances' heartbeats are theirs to check.
      if (message.origin === this.origin) this.heard(message.heartbeat)
      return
    }
    if (message.origin === this.origin) return
    if (message.keys !== undefined) this.listener.dropKeys(message.keys)
    else if (message.prefix !== undefined) this.listener.dropPrefix(message.prefix)
    else this.listener.dropAll()
  }

  private heard (beat: number): void {
    this.heartbeats.heard(beat)
    this.proven = true
    this.update(this.late)
  }
}
