// The Redis store, for a standalone (or Sentinel-managed) client and for a Cluster client alike.
// Reads are here; writes and invalidations, which must not lose a race, are in redis-writes.ts.
// On a Cluster, multi-key work is split into single-key commands that auto-pipelining batches
// per node.
import type { Cluster, Redis } from 'ioredis'
import type { CacheInfo } from '../../types'
import type { KeyLayout } from '../keys'
import { lua, type LuaScript } from './lua'
import { clearEntries, deleteEntries, invalidateTagged, preloadScripts, readStamps, type RedisTarget, sum, writeEntry } from './redis-writes'
import type { EntryStore, LockStore, RateWindow, RateWindowStore, ServerStore } from './store'

// A fixed window: the first hit starts it, every hit counts, the window's TTL says when it resets.
const HIT_WINDOW = lua(`
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return { count, ttl }`)

// Deletes a lock only for its owner, so a holder whose lock expired cannot free another's.
const LOCK_RELEASE = lua(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

export type RedisClient = Redis | Cluster

/** The reads of one event-loop turn, by key: each key is read once however many ask for it. */
type ReadBatch = Map<string, ReadWaiter>

interface ReadWaiter {
  promise: Promise<Buffer | null>
  resolve: (bytes: Buffer | null) => void
  reject: (err: unknown) => void
}

export class RedisStore implements EntryStore, RateWindowStore, LockStore, ServerStore, RedisTarget {
  readonly client: RedisClient
  readonly layout: KeyLayout
  readonly isCluster: boolean
  // Reads asked for in this turn of the event loop, sent together when it ends.
  private batch: ReadBatch | null = null
  /**
   * Whether the server runs our scripts (EVAL/EVALSHA); set to false when the capability probe
   * (capabilities.ts) finds them refused, so write paths can do without.
   */
  scripting = true
  // A reconnect asked for and not done yet: a burst of READONLY replies makes one.
  private reconnecting = false

  constructor (client: RedisClient, layout: KeyLayout) {
    this.client = client
    this.layout = layout
    this.isCluster = client.isCluster
    preloadScripts(client)
  }

  get connected (): boolean {
    return this.client.status === 'ready'
  }

  /**
   * Drops the connection and lets the client open a new one: after a failover behind one
   * address (DNS, a proxy), the old connection still reaches the demoted primary. Once per
   * burst: nothing more until the client is ready again. A Cluster follows failovers itself
   * (MOVED redirections refresh its slot map).
   */
  reconnect (): void {
    if (this.isCluster || this.reconnecting) return
    this.reconnecting = true
    this.client.once('ready', () => { this.reconnecting = false })
    ;(this.client as Redis).disconnect(true)
  }

  /**
   * Reads of one event-loop turn go out as one MGET, and concurrent reads of the same key share
   * one reply: one command, one socket write and one parse for a burst of hits, which is what
   * auto-pipelining does for them, without its cost per command (a pipeline object, callbacks
   * and a tick each, and one pipeline in flight at a time). On a Cluster, where one MGET cannot
   * span slots, each read goes alone and auto-pipelining batches them per node.
   */
  get (key: string, field?: string): Promise<Buffer | null> {
    if (field !== undefined) return this.client.hgetBuffer(key, field)
    if (this.isCluster) return this.client.getBuffer(key)
    let batch = this.batch
    if (batch === null) {
      batch = this.batch = new Map()
      setImmediate(() => this.sendBatch(batch as ReadBatch))
    }
    let waiter = batch.get(key)
    if (waiter === undefined) {
      waiter = deferred()
      batch.set(key, waiter)
    }
    return waiter.promise
  }

  /** Sends one batch of reads, once the turn that gathered it is over. */
  private sendBatch (batch: ReadBatch): void {
    this.batch = null
    const keys = [...batch.keys()]
    const settle = (values: Array<Buffer | null>): void => {
      let i = 0
      for (const waiter of batch.values()) waiter.resolve(values[i++])
    }
    const fail = (err: unknown): void => {
      for (const waiter of batch.values()) waiter.reject(err)
    }
    if (keys.length === 1) this.client.getBuffer(keys[0]).then((bytes) => settle([bytes]), fail)
    else this.client.mgetBuffer(keys).then(settle, fail)
  }

  set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<boolean> {
    return writeEntry(this, key, value, ttl, tags, field)
  }

  async delete (keys: readonly string[]): Promise<number> {
    if (keys.length === 0) return 0
    return deleteEntries(this, keys)
  }

  async exists (keys: readonly string[]): Promise<number> {
    // EXISTS needs a key: an empty list answers 0, as in the memory store.
    if (keys.length === 0) return 0
    if (!this.isCluster) return this.client.exists(...keys)
    return sum(await Promise.all(keys.map((key) => this.client.exists(key))))
  }

  async expire (key: string, seconds: number): Promise<boolean> {
    return (await this.client.expire(key, seconds)) === 1
  }

  ttl (key: string): Promise<number> {
    return this.client.ttl(key)
  }

  clear (namespace?: string): Promise<number> {
    return clearEntries(this, namespace)
  }

  invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    return invalidateTagged(this, tags)
  }

  readStamps (names: readonly string[]): Promise<Array<string | null>> {
    return readStamps(this, names)
  }

  async hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    const key = this.layout.rateLimit(id)
    const windowMs = windowSeconds * 1000
    if (this.scripting) {
      const [count, resetMs] = await this.script(HIT_WINDOW, key, windowMs) as [number, number]
      return { count, resetMs }
    }
    // HIT_WINDOW command by command, sent together: a window whose first PEXPIRE was lost gets
    // its expiry from the next hit (NX), so none outlives its window for long.
    const [count, , resetMs] = await Promise.all([this.client.incr(key), this.client.call('PEXPIRE', key, windowMs, 'NX'), this.client.pttl(key)])
    return { count, resetMs }
  }

  async acquireLock (key: string, token: string, ttlMs: number): Promise<boolean> {
    return (await this.client.set(key, token, 'PX', ttlMs, 'NX')) === 'OK'
  }

  async releaseLock (key: string, token: string): Promise<void> {
    if (this.scripting) {
      await this.script(LOCK_RELEASE, key, token)
      return
    }
    // LOCK_RELEASE in two steps: only if the lock expired between them could another's go.
    if (await this.client.get(key) === token) await this.client.del(key)
  }

  async ping (): Promise<void> {
    await this.client.ping()
  }

  async info (): Promise<CacheInfo> {
    const nodes: Redis[] = this.isCluster ? (this.client as Cluster).nodes('master') : [this.client as Redis]
    return infoOf((await Promise.all(nodes.map((node) => node.info()))).map(parseInfo))
  }

  /** The connection belongs to whoever opened it (see connection.ts); nothing to release here. */
  async close (): Promise<void> {}

  private script (script: LuaScript, key: string, ...args: Array<string | number | Buffer>): Promise<unknown> {
    return this.evalKeys(script, [key], args)
  }

  /** EVALSHA, loading the script with EVAL when the server does not know it yet. */
  async evalKeys (script: LuaScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
    try {
      return await this.client.evalsha(script.sha, keys.length, ...keys, ...args)
    } catch (err) {
      // ioredis rejects with Error objects only.
      if (!(err as Error).message.startsWith('NOSCRIPT')) throw err
      return this.client.eval(script.source, keys.length, ...keys, ...args)
    }
  }
}

/**
 * The cache's view of the INFO replies of every master (one for a standalone server): counters
 * summed, the rest from the first. Fields a Redis-compatible server leaves out are null.
 */
export function infoOf (sections: Array<Map<string, string>>): CacheInfo {
  const total = (field: string): number | null => {
    const values = sections.map((s) => s.get(field)).filter((v) => v !== undefined)
    return values.length === 0 ? null : sum(values.map(Number))
  }
  const first = sections[0]
  return {
    store: 'redis',
    redisVersion: first.get('redis_version') ?? null,
    usedMemory: total('used_memory'),
    usedMemoryHuman: sections.length === 1 ? first.get('used_memory_human') ?? null : null,
    connectedClients: total('connected_clients'),
    evictedKeys: total('evicted_keys'),
    expiredKeys: total('expired_keys'),
    keyspaceHits: total('keyspace_hits'),
    keyspaceMisses: total('keyspace_misses'),
    uptimeSeconds: first.has('uptime_in_seconds') ? Number(first.get('uptime_in_seconds')) : null
  }
}

export function parseInfo (text: string): Map<string, string> {
  const fields = new Map<string, string>()
  for (const line of text.split('\r\n')) {
    const colon = line.indexOf(':')
    if (colon > 0 && line[0] !== '#') fields.set(line.slice(0, colon), line.slice(colon + 1))
  }
  return fields
}

function deferred (): ReadWaiter {
  const waiter = {} as ReadWaiter
  waiter.promise = new Promise<Buffer | null>((resolve, reject) => {
    waiter.resolve = resolve
    waiter.reject = reject
  })
  return waiter
}
