// The Redis store, for a standalone (or Sentinel-managed) client and for a Cluster client alike.
// Every script touches one key only, so each runs in one slot; multi-key work on a Cluster is
// split into single-key commands that auto-pipelining batches per node.
import { createHash } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import type { CacheInfo } from '../../types'
import type { KeyLayout } from '../keys'
import type { EntryStore, LockStore, RateWindow, RateWindowStore, ServerStore } from './store'

const SCAN_COUNT = 1000

interface LuaScript { source: string, sha: string }

function lua (source: string): LuaScript {
  return { source, sha: createHash('sha1').update(source).digest('hex') }
}

// Files an entry key under a tag; the tag set lives at least as long as its longest entry.
const TAG_ADD = lua(`
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1`)

// Stores one field of a hash; the hash lives at least as long as its freshest field needs. A
// plain value at the key (the route stored before it varied) is replaced, as SET replaces a hash.
const FIELD_SET = lua(`
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1`)

// Takes a tag's members and removes the set in one step, so an entry filed under the tag
// afterwards lands in a fresh set instead of being lost.
const TAG_POP = lua(`
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members`)

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

export class RedisStore implements EntryStore, RateWindowStore, LockStore, ServerStore {
  readonly client: RedisClient
  private readonly layout: KeyLayout
  private readonly isCluster: boolean
  // Reads asked for in this turn of the event loop, sent together when it ends.
  private batch: ReadBatch | null = null

  constructor (client: RedisClient, layout: KeyLayout) {
    this.client = client
    this.layout = layout
    this.isCluster = client.isCluster
  }

  get connected (): boolean {
    return this.client.status === 'ready'
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

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<void> {
    const write = field === undefined ? this.client.set(key, value, 'EX', ttl) : this.script(FIELD_SET, key, field, value, ttl)
    if (tags.length === 0) {
      await write
      return
    }
    await Promise.all([write, ...tags.map((tag) => this.script(TAG_ADD, this.layout.tag(tag), key, ttl))])
  }

  async delete (keys: readonly string[]): Promise<number> {
    if (keys.length === 0) return 0
    if (!this.isCluster) return this.client.unlink(...keys)
    return sum(await Promise.all(keys.map((key) => this.client.unlink(key))))
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

  async clear (namespace?: string): Promise<number> {
    const pattern = this.layout.pattern(namespace)
    const reserved = `${this.layout.prefix}:#`
    // A Cluster keeps each key on one master: every master is scanned.
    const nodes: Redis[] = this.isCluster ? (this.client as Cluster).nodes('master') : [this.client as Redis]
    const counts = await Promise.all(nodes.map(async (node) => {
      let removed = 0
      let cursor = '0'
      do {
        const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_COUNT)
        cursor = next
        // Clearing everything also drops tag sets and rate-limit windows, but only entries are
        // counted, as in the memory store.
        const entries = keys.filter((key) => !key.startsWith(reserved))
        removed += await this.delete(entries)
        if (entries.length < keys.length) await this.delete(keys.filter((key) => key.startsWith(reserved)))
      } while (cursor !== '0')
      return removed
    }))
    return sum(counts)
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const members = await Promise.all(tags.map((tag) => this.script(TAG_POP, this.layout.tag(tag)) as Promise<string[]>))
    const keys = [...new Set(members.flat())]
    return { removed: await this.delete(keys), keys }
  }

  async hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    const [count, resetMs] = await this.script(HIT_WINDOW, this.layout.rateLimit(id), windowSeconds * 1000) as [number, number]
    return { count, resetMs }
  }

  async acquireLock (key: string, token: string, ttlMs: number): Promise<boolean> {
    return (await this.client.set(key, token, 'PX', ttlMs, 'NX')) === 'OK'
  }

  async releaseLock (key: string, token: string): Promise<void> {
    await this.script(LOCK_RELEASE, key, token)
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

  /** EVALSHA, loading the script with EVAL when the server does not know it yet. */
  private async script (script: LuaScript, key: string, ...args: Array<string | number | Buffer>): Promise<unknown> {
    try {
      return await this.client.evalsha(script.sha, 1, key, ...args)
    } catch (err) {
      // ioredis rejects with Error objects only.
      if (!(err as Error).message.startsWith('NOSCRIPT')) throw err
      return this.client.eval(script.source, 1, key, ...args)
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

function sum (values: number[]): number {
  let total = 0
  for (const value of values) total += value
  return total
}
