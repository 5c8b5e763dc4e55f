// How entries are written to Redis and invalidated there, so that no invalidation is lost to a
// race or to eviction (see invalidation/stamps.ts for the rule an entry is read back by):
//
// - A write carries when its work began (the envelope's `storedAt`). On one server with
//   scripting, one script stores it only if no tombstone of its key, stamp of its namespace, of
//   everything or of one of its tags is as recent: work an invalidation overtook is never
//   stored. On a Cluster (keys in other slots) or without scripting the same commands go one by
//   one, and the stamps on the entry's tags refuse it when it is read.
// - A tag has a stamp (when it was last invalidated) and an index (its entry keys, scored by
//   expiry, pruned of up to PRUNE expired ones on each write): both live as long as its longest
//   entry.
//   Invalidating sets the stamp, then empties the index a batch at a time, so no command blocks
//   Redis for long whatever the tag's size. An evicted index only leaves entries behind that
//   the stamp refuses; an evicted stamp makes its entries misses.
// - A deleted key leaves a tombstone for MAX_WORK_MS; clears leave a stamp.
import type { Cluster, Redis } from 'ioredis'
import { isEnvelope, storedAtOf } from '../envelope'
import { MAX_WORK_MS } from '../invalidation/stamps'
import type { HeldLock } from '../lock'
import type { KeyLayout } from '../keys'
import { lua, type LuaScript } from './lua'
import { MAX_VARIANTS, PRUNE, WRITE, type WriteBatch } from './redis-write-batch'

/** Keys sent in one command. */
const BATCH = 500
/** How long a clear's stamp outlives it: entries written before it may live that long. */
const CLEAR_STAMP_MS = 30 * 24 * 3600 * 1000

// KEYS: the entries, then their tombstones in the same order. ARGV: now (ms), how long a
// tombstone lasts (ms). One command, so a bust costs one write whatever it removes.
const DELETE = lua(`
local n = #KEYS / 2
for i = n + 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return redis.call('UNLINK', unpack(KEYS, 1, n))`)

/**
 * Loads the write script (and `others`) ahead of the first write (at connect, and after each reconnect, since
 * a restarted server has forgotten it): the EVAL fallback would send a write after reads that
 * were asked for later.
 */
export function preloadScripts (client: Redis | Cluster, ...others: LuaScript[]): void {
  if (client.isCluster) return
  const load = (): void => {
    for (const script of [WRITE, DELETE, ...others]) (client as Redis).script('LOAD', script.source).catch(() => {})
  }
  client.on('ready', load)
  if (client.status === 'ready') load()
}

/** What the writes need of the Redis store. */
export interface RedisTarget {
  readonly client: Redis | Cluster
  readonly layout: KeyLayout
  readonly isCluster: boolean
  /** Whether this Redis runs our scripts (an ACL or a renamed EVAL may forbid them). */
  readonly scripting: boolean
  /** The entry writes of this turn, sent together (on one server, with scripting). */
  readonly writes: WriteBatch
  evalKeys (script: LuaScript, keys: string[], args: Array<string | number | Buffer>): Promise<unknown>
}

/**
 * Stores an entry unless an invalidation overtook the work that made it, and lets go of the lock
 * that work held (the caller releases it when this could not).
 */
export async function writeEntry (target: RedisTarget, key: string, value: Buffer, ttl: number, tags: readonly string[], field: string | undefined, lock: HeldLock | undefined): Promise<boolean> {
  // Bytes that are not an envelope (the store is a byte store) count as work begun now.
  const startedAt = isEnvelope(value) ? storedAtOf(value) : Date.now()
  const keep = ttl * 1000
  // One server with scripting: one WRITE call for the writes of this turn (redis-write-batch.ts).
  if (!target.isCluster && target.scripting) return target.writes.add({ key, value, keep, startedAt, tags, field, lock })
  // Writes queued before scripting was found refused go first.
  target.writes.flush()
  // All sent in this tick, so a read asked for after this call finds the entry. Until its tags'
  // stamps land (on other nodes of a Cluster), the entry counts as invalidated: a miss.
  const filed = tags.map((tag) => fileUnderTag(target, key, tag, startedAt, keep))
  if (field === undefined) {
    await Promise.all([...filed, target.client.set(key, value, 'PX', keep)])
    return true
  }
  await Promise.all([...filed, setField(target.client, key, field, value, keep)])
  return true
}

/** WRITE's field step, command by command: a plain value, or too many variants, is replaced. */
async function setField (client: Redis | Cluster, key: string, field: string, value: Buffer, keep: number): Promise<void> {
  const write = (): Promise<unknown> => Promise.all([
    client.hset(key, field, value),
    client.call('PEXPIRE', key, keep, 'NX'),
    client.call('PEXPIRE', key, keep, 'GT')
  ])
  try {
    await write()
  } catch (err) {
    if (!(err as Error).message.startsWith('WRONGTYPE')) throw err
    await client.unlink(key)
    await write()
  }
  if (await client.hlen(key) > MAX_VARIANTS) {
    await client.unlink(key)
    await write()
  }
}

/** WRITE's tag step, command by command: stamp (created just before the work began) and index. */
async function fileUnderTag (target: RedisTarget, key: string, tag: string, startedAt: number, keep: number): Promise<void> {
  const { client, layout } = target
  const stamp = layout.tagStamp(tag)
  const index = layout.tag(tag)
  const now = Date.now()
  await Promise.all([
    client.set(stamp, startedAt - 1, 'PX', keep, 'NX'),
    client.call('PEXPIRE', stamp, keep, 'GT'),
    client.zadd(index, now + keep, key),
    client.zrangebyscore(index, '-inf', now, 'LIMIT', 0, PRUNE).then((expired) => expired.length > 0 ? client.zrem(index, ...expired) : 0),
    client.call('PEXPIRE', index, keep, 'NX'),
    client.call('PEXPIRE', index, keep, 'GT')
  ])
}

/** Deletes entries, leaving tombstones where writes check them. */
export async function deleteEntries (target: RedisTarget, keys: readonly string[]): Promise<number> {
  const { layout } = target
  // Without scripting, writes are not checked against tombstones (see writeEntry): none is left.
  if (target.isCluster || !target.scripting) return unlinkAll(target, keys)
  const now = Date.now()
  const counts = await Promise.all(batches(keys).map((batch) => {
    const tombstones = batch.map((key) => layout.tombstone(key))
    return target.evalKeys(DELETE, [...batch, ...tombstones], [now, MAX_WORK_MS]) as Promise<number>
  }))
  return sum(counts)
}

/** Stamps a clear, then removes what it covers (SCAN batches: no long command). */
export async function clearEntries (target: RedisTarget, namespace: string | undefined): Promise<number> {
  const { client, layout } = target
  await client.set(layout.clearStamp(namespace), Date.now(), 'PX', CLEAR_STAMP_MS)
  const pattern = layout.pattern(namespace)
  const reserved = `${layout.prefix}:#`
  const isStamp = (key: string): boolean => key.startsWith(layout.clearStampPrefix) || key === layout.clearStamp()
  // A Cluster keeps each key on one master: every master is scanned.
  const nodes: Redis[] = target.isCluster ? (client as Cluster).nodes('master') : [client as Redis]
  const counts = await Promise.all(nodes.map(async (node) => {
    let removed = 0
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', BATCH)
      cursor = next
      // Clearing everything also drops tags' bookkeeping and rate-limit windows, but only
      // entries are counted, as in the memory store; the clear stamps stay.
      const entries = keys.filter((key) => !key.startsWith(reserved))
      removed += await unlinkAll(target, entries)
      await unlinkAll(target, keys.filter((key) => key.startsWith(reserved) && !isStamp(key)))
    } while (cursor !== '0')
    return removed
  }))
  return sum(counts)
}

/** Stamps the tags, then empties their indexes a batch at a time. */
export async function invalidateTagged (target: RedisTarget, tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
  const { client, layout } = target
  const now = Date.now()
  await Promise.all(tags.flatMap((tag) => [
    client.set(layout.tagStamp(tag), now, 'KEEPTTL'),
    // A stamp that was not there guards only against work still running.
    client.call('PEXPIRE', layout.tagStamp(tag), MAX_WORK_MS, 'NX')
  ]))
  const keys = new Set<string>()
  let removed = 0
  for (const tag of tags) {
    let popped: string[]
    do {
      popped = await client.zpopmin(layout.tag(tag), BATCH)
      const members: string[] = []
      for (let i = 0; i < popped.length; i += 2) if (!keys.has(popped[i])) members.push(popped[i])
      for (const member of members) keys.add(member)
      removed += await unlinkAll(target, members)
    } while (popped.length === BATCH * 2)
  }
  return { removed, keys: [...keys] }
}

/** The stamps under these keys, in order (MGET batches; one GET each on a Cluster). */
export async function readStamps (target: RedisTarget, names: readonly string[]): Promise<Array<string | null>> {
  const { client } = target
  if (target.isCluster) return Promise.all(names.map((name) => client.get(name)))
  return (await Promise.all(batches(names).map((batch) => client.mget(batch)))).flat()
}

async function unlinkAll (target: RedisTarget, keys: readonly string[]): Promise<number> {
  if (keys.length === 0) return 0
  if (target.isCluster) return sum(await Promise.all(keys.map((key) => target.client.unlink(key))))
  return sum(await Promise.all(batches(keys).map((batch) => target.client.unlink(...batch))))
}

function batches<T> (items: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < items.length; i += BATCH) out.push(items.slice(i, i + BATCH))
  return out
}

export function sum (values: number[]): number {
  let total = 0
  for (const value of values) total += value
  return total
}
