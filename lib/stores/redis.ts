// The Redis store, for a standalone (or Sentinel-managed) client and for a Cluster client alike.
// Reads are here; writes and invalidations, which must not lose a race, are in redis-writes.ts.
// On a Cluster, multi-key work is split into single-key commands that auto-pipelining batches
// per node.
import type { Cluster, Redis } from 'ioredis'
import type { CacheInfo } from '../../types'
import type { KeyLayout } from '../keys'
import { type HeldLock, lockToken } from '../lock'
import { type Deferred, deferred } from './deferred'
import { lua, type LuaScript } from './lua'
import { WriteBatch } from './redis-write-batch'
import { clearEntries, deleteEntries, invalidateTagged, preloadScripts, readStamps, type RedisTarget, sum, writeEntry } from './redis-writes'
import { type ClaimedRead, type EntryStore, type LockClaim, type LockStore, type RateWindow, type RateWindowStore, type ServerStore, unclaimed } from './store'

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

// The first read of a miss takes the cross-instance lock in the same round trip (on routes that
// mostly miss: route-cache/recent-share.ts). KEYS: the entries, then their locks, in the same
// order; ARGV: the token, the lock's ms, now (ms), then each entry's grace (ms). For each entry:
// its bytes (MGET: a key of another type reads as none), and unless they are an envelope fresh
// or within its grace (the header of envelope.ts: magic, storedAt ms as uint48 from byte 4,
// freshFor s as uint32 from byte 10), whether SET NX took its lock (1) or another holds it (0);
// -1 when not asked.
const READ_OR_CLAIM = lua(`
local n = #KEYS / 2
local values = redis.call('MGET', unpack(KEYS, 1, n))
local now = tonumber(ARGV[3])
local out = {}
for i = 1, n do
  local v = values[i]
  local claimed = -1
  local m = v and string.byte(v, 1)
  local fresh = false
  if m and (m == 199 or m == 200) and #v >= 13 then
    local a, b, c, d, e, f, g, h, j, k = string.byte(v, 4, 13)
    local expires = ((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f + (((g * 256 + h) * 256 + j) * 256 + k) * 1000
    fresh = now < expires + tonumber(ARGV[3 + i])
  end
  if not fresh then
    claimed = redis.call('SET', KEYS[n + i], ARGV[1], 'PX', ARGV[2], 'NX') and 1 or 0
  end
  out[2 * i - 1] = v
  out[2 * i] = claimed
end
return out`)

export type RedisClient = Redis | Cluster

/**
 * Reads sent in one MGET at most: a full batch goes at once rather than at the end of the turn,
 * so Redis works on it while this process handles the rest of the turn's requests. Not fewer:
 * each command's socket write and reply cost this process more than that overlap saves.
 */
export const BATCH_MAX = 32

/**
 * ioredis has these (EVALSHA and EVAL with bulk replies as Buffers) but does not type them.
 * `callBuffer` would not do: auto-pipelining drops its command name.
 */
interface BufferScripts {
  evalshaBuffer (...args: Array<string | number | Buffer>): Promise<unknown>
  evalBuffer (...args: Array<string | number | Buffer>): Promise<unknown>
}

/** The reads of one event-loop turn, by key: each key is read once however many ask for it. */
type ReadBatch = Map<string, ReadWaiter>
/** The reads that may claim a lock, of one event-loop turn, by key. */
type ClaimBatch = Map<string, { claim: LockClaim, waiter: Deferred<ClaimedRead> }>

type ReadWaiter = Deferred<Buffer | null>

export class RedisStore implements EntryStore, RateWindowStore, LockStore, ServerStore, RedisTarget {
  readonly client: RedisClient
  readonly layout: KeyLayout
  readonly isCluster: boolean
  // Reads asked for in this turn of the event loop, sent together when it ends.
  private batch: ReadBatch | null = null
  private claims: ClaimBatch | null = null
  private lockMs = 0
  // Entry writes of this turn, sent before any other command that touches entries or locks.
  readonly writes: WriteBatch = new WriteBatch(this)
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
    preloadScripts(client, READ_OR_CLAIM)
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
    if (field !== undefined) {
      this.writes.flush()
      return this.client.hgetBuffer(key, field)
    }
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
      if (batch.size >= BATCH_MAX) this.sendBatch(batch)
    }
    return waiter.promise
  }

  /** Sends one batch of reads, once the turn that gathered it is over or it is full. */
  private sendBatch (batch: ReadBatch): void {
    // Sent already (full before the turn was over).
    if (this.batch !== batch) return
    this.batch = null
    this.writes.flush()
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

  /**
   * A read that takes `lockKey` too when the entry is not fresh, in the same round trip: the
   * reads of one turn go out as one script. On a Cluster or without scripting, a plain read.
   */
  readOrClaim (key: string, field: string | undefined, claim: LockClaim | undefined): Promise<ClaimedRead> {
    if (claim === undefined || field !== undefined || this.isCluster || !this.scripting) return this.get(key, field).then(unclaimed)
    let claims = this.claims
    if (claims === null) {
      claims = this.claims = new Map()
      this.lockMs = claim.lockMs
      setImmediate(() => this.sendClaims(claims as ClaimBatch))
    }
    const asked = claims.get(key)
    // Asked twice in one turn: the lock goes to the first; the second finds it held.
    if (asked !== undefined) return asked.waiter.promise.then((read) => ({ bytes: read.bytes, lock: read.lock === undefined ? undefined : null }))
    const waiter = deferred<ClaimedRead>()
    claims.set(key, { claim, waiter })
    return waiter.promise
  }

  private sendClaims (claims: ClaimBatch): void {
    this.claims = null
    this.writes.flush()
    const token = lockToken()
    const keys = [...claims.keys()]
    const args: Array<string | number> = [token, this.lockMs, Date.now()]
    for (const { claim } of claims.values()) {
      keys.push(claim.lockKey)
      args.push(claim.graceMs)
    }
    this.evalKeys(READ_OR_CLAIM, keys, args, true).then((reply) => {
      const values = reply as Array<Buffer | null | number>
      let i = 0
      for (const [, { claim, waiter }] of claims) {
        const claimed = values[i + 1] as number
        const lock = claimed === -1 ? undefined : claimed === 1 ? { key: claim.lockKey, token, released: false } : null
        waiter.resolve({ bytes: values[i] as Buffer | null, lock })
        i += 2
      }
    }, (err: unknown) => {
      for (const { waiter } of claims.values()) waiter.reject(err)
    })
  }

  set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string, lock?: HeldLock): Promise<boolean> {
    return writeEntry(this, key, value, ttl, tags, field, lock)
  }

  async delete (keys: readonly string[]): Promise<number> {
    if (keys.length === 0) return 0
    this.writes.flush()
    return deleteEntries(this, keys)
  }

  async exists (keys: readonly string[]): Promise<number> {
    // EXISTS needs a key: an empty list answers 0, as in the memory store.
    if (keys.length === 0) return 0
    this.writes.flush()
    if (!this.isCluster) return this.client.exists(...keys)
    return sum(await Promise.all(keys.map((key) => this.client.exists(key))))
  }

  async expire (key: string, seconds: number): Promise<boolean> {
    this.writes.flush()
    return (await this.client.expire(key, seconds)) === 1
  }

  ttl (key: string): Promise<number> {
    this.writes.flush()
    return this.client.ttl(key)
  }

  clear (namespace?: string): Promise<number> {
    this.writes.flush()
    return clearEntries(this, namespace)
  }

  invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    this.writes.flush()
    return invalidateTagged(this, tags)
  }

  readStamps (names: readonly string[]): Promise<Array<string | null>> {
    this.writes.flush()
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
    this.writes.flush()
    return (await this.client.set(key, token, 'PX', ttlMs, 'NX')) === 'OK'
  }

  async releaseLock (key: string, token: string): Promise<void> {
    this.writes.flush()
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

  /**
   * Sends the writes still queued, ahead of whatever closes the connection next; the connection
   * belongs to whoever opened it (see connection.ts).
   */
  async close (): Promise<void> {
    this.writes.flush()
  }

  private script (script: LuaScript, key: string, ...args: Array<string | number | Buffer>): Promise<unknown> {
    return this.evalKeys(script, [key], args)
  }

  /**
   * EVALSHA, loading the script with EVAL when the server does not know it yet; with `buffers`,
   * bulk replies come back as Buffers.
   */
  async evalKeys (script: LuaScript, keys: string[], args: Array<string | number | Buffer>, buffers = false): Promise<unknown> {
    const client = this.client
    const buffered = client as unknown as BufferScripts
    try {
      return await (buffers ? buffered.evalshaBuffer(script.sha, keys.length, ...keys, ...args) : client.evalsha(script.sha, keys.length, ...keys, ...args))
    } catch (err) {
      // ioredis rejects with Error objects only.
      if (!(err as Error).message.startsWith('NOSCRIPT')) throw err
      return buffers ? buffered.evalBuffer(script.source, keys.length, ...keys, ...args) : client.eval(script.source, keys.length, ...keys, ...args)
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
