// The entry writes of one event-loop turn go to Redis as one script call. Under load the misses
// of a turn finish together (their handlers' I/O comes back in the same turn), and a command
// costs this process about as much again as the work it asks of Redis (building the command, a
// socket write, parsing the reply): one call for the turn's writes pays that once.
//
// Queued writes are sent before any other command of the store that touches entries, stamps or
// locks (RedisStore calls `writes.flush()` first), so a read or an invalidation asked for after
// a write is never sent ahead of it.
import { MAX_WORK_MS } from '../invalidation/stamps'
import { isReplyError } from './guarded'
import type { HeldLock } from '../lock'
import { type Deferred, deferred } from './deferred'
import { lua } from './lua'
import type { RedisTarget } from './redis-writes'

/** Variants of one entry (a route that varies on request headers) kept at most. */
export const MAX_VARIANTS = 64
/**
 * Expired members a write drops from each of its tags' indexes at most: each write adds one, so
 * indexes shrink as entries expire, and no write holds Redis for long doing it.
 */
export const PRUNE = 100
/** Writes, and bytes of values, in one call at most: a full batch goes at once. */
const MAX_WRITES = 32
const MAX_BYTES = 1024 * 1024
/** KEYS and ARGV a write takes in WRITE before its tags' keys. */
const ENTRY_KEYS = 4
const ENTRY_ARGS = 6

// Stores each entry unless a tombstone of its key, a stamp of its namespace, of everything or
// of one of its tags is as recent as the work that made it (invalidation/stamps.ts), then lets
// go of the locks those works held, whether their entries were stored or not: the work is over.
// The locks go last because Redis checks maxmemory only until a script's first write: a lock's
// DEL first would let every later entry of the batch past it.
// KEYS: the stamp of everything, then for each entry: the entry, its tombstone, its namespace's
// stamp, the lock its work held (the entry again when none), then each tag's stamp and index.
// ARGV: now (ms), max variants, max work (ms), expired members pruned at most, then for each
// entry: value, ms to keep, work start (ms), field ('' none), the lock's token ('' none), tags.
// Returns 1 (stored), 0 (refused) or the error it met for each entry, in order: one entry's
// error (a foreign value of the wrong type at one of its keys) fails that entry alone.
export const WRITE = lua(`
local now = tonumber(ARGV[1])
local function extend (key, keep)
  if redis.call('PTTL', key) < keep then redis.call('PEXPIRE', key, keep) end
end
local function write (k, a, tags)
  local startedAt = tonumber(ARGV[a + 2])
  local function later (at)
    return at and tonumber(at) >= startedAt
  end
  if now - startedAt > tonumber(ARGV[3]) then return 0 end
  local stamps = redis.call('MGET', KEYS[k + 1], KEYS[k + 2], KEYS[1])
  for i = 1, 3 do if later(stamps[i]) then return 0 end end
  local last = k + 2 + 2 * tags
  for i = k + 4, last, 2 do if later(redis.call('GET', KEYS[i])) then return 0 end end
  local keep = tonumber(ARGV[a + 1])
  for i = k + 4, last, 2 do
    if not redis.call('SET', KEYS[i], startedAt - 1, 'PX', keep, 'NX') then extend(KEYS[i], keep) end
    redis.call('ZADD', KEYS[i + 1], now + keep, KEYS[k])
    local expired = redis.call('ZRANGEBYSCORE', KEYS[i + 1], '-inf', now, 'LIMIT', 0, ARGV[4])
    if #expired > 0 then redis.call('ZREM', KEYS[i + 1], unpack(expired)) end
    extend(KEYS[i + 1], keep)
  end
  local field = ARGV[a + 3]
  if field == '' then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', keep)
    return 1
  end
  if redis.call('TYPE', KEYS[k]).ok ~= 'hash' or
    (redis.call('HLEN', KEYS[k]) >= tonumber(ARGV[2]) and redis.call('HEXISTS', KEYS[k], field) == 0) then
    redis.call('DEL', KEYS[k])
  end
  redis.call('HSET', KEYS[k], field, ARGV[a])
  extend(KEYS[k], keep)
  return 1
end
local out = {}
local k = 2
for a = 5, #ARGV, ${ENTRY_ARGS} do
  local tags = tonumber(ARGV[a + ${ENTRY_ARGS - 1}])
  local ok, result = pcall(write, k, a, tags)
  if not ok and type(result) ~= 'table' then result = { err = tostring(result) } end
  out[#out + 1] = result
  k = k + ${ENTRY_KEYS} + 2 * tags
end
k = 2
for a = 5, #ARGV, ${ENTRY_ARGS} do
  if ARGV[a + 4] ~= '' and redis.call('GET', KEYS[k + 3]) == ARGV[a + 4] then redis.call('DEL', KEYS[k + 3]) end
  k = k + ${ENTRY_KEYS} + 2 * tonumber(ARGV[a + ${ENTRY_ARGS - 1}])
end
return out`)

/** One entry to write: `keep` in ms, `startedAt` when the work that made it began. */
export interface EntryWrite {
  key: string
  value: Buffer
  keep: number
  startedAt: number
  tags: readonly string[]
  field: string | undefined
  lock: HeldLock | undefined
}

interface Pending {
  write: EntryWrite
  releasing: boolean
  waiter: Deferred<boolean>
}

export class WriteBatch {
  private readonly target: RedisTarget
  private pending: Pending[] = []
  private bytes = 0
  private scheduled = false

  constructor (target: RedisTarget) {
    this.target = target
  }

  /** Queues a write for the end of this turn; resolves to whether Redis stored it. */
  add (write: EntryWrite): Promise<boolean> {
    const waiter = deferred<boolean>()
    this.pending.push({ write, releasing: write.lock !== undefined && !write.lock.released, waiter })
    this.bytes += write.value.length
    if (this.pending.length >= MAX_WRITES || this.bytes >= MAX_BYTES) this.flush()
    else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => {
        this.scheduled = false
        this.flush()
      })
    }
    return waiter.promise
  }

  /** Sends the queued writes now, if any. */
  flush (): void {
    const batch = this.pending
    if (batch.length === 0) return
    this.pending = []
    this.bytes = 0
    this.send(batch)
  }

  /** One WRITE call for `batch`; settles each write with its own result. */
  private send (batch: Pending[]): void {
    const { layout } = this.target
    const keys = [layout.clearStamp()]
    const args: Array<string | number | Buffer> = [Date.now(), MAX_VARIANTS, MAX_WORK_MS, PRUNE]
    for (const { write, releasing } of batch) {
      const { key, lock, tags } = write
      keys.push(key, layout.tombstone(key), layout.clearStamp(layout.namespaceOf(key)), releasing ? (lock as HeldLock).key : key)
      for (const tag of tags) keys.push(layout.tagStamp(tag), layout.tag(tag))
      args.push(write.value, write.keep, write.startedAt, write.field ?? '', releasing ? (lock as HeldLock).token : '', tags.length)
    }
    this.target.evalKeys(WRITE, keys, args).then((reply) => {
      const results = reply as Array<number | Error>
      batch.forEach(({ write, releasing, waiter }, i) => {
        const result = results[i]
        if (result instanceof Error) {
          waiter.reject(result)
          return
        }
        if (releasing) (write.lock as HeldLock).released = true
        waiter.resolve(result === 1)
      })
    }, (err: unknown) => {
      // Redis refused the whole call before running it (an ACL that denies one entry's keys):
      // each write is sent again alone, so that it fails that entry alone.
      if (batch.length > 1 && isReplyError(err)) for (const pending of batch) this.send([pending])
      else for (const { waiter } of batch) waiter.reject(err)
    })
  }
}
