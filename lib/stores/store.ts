// What the cache needs from a backend, as separate capabilities: a layer implements the ones it
// has (the memory store has no cross-instance locks; the local tier wraps entries only), and
// lib/stack.ts says which layer serves which. Stores deal in full keys and raw bytes; the cache
// manager owns validation, serialization, statistics and the failure policy.
import type { CacheInfo } from '../../types'
import type { HeldLock } from '../lock'

/**
 * A layer in this process, read synchronously on the hit paths (no promise, no microtask): the
 * local tier, or the memory store. The same entry comes back as the same Buffer while it lasts.
 */
export interface SyncReader {
  get (key: string): Buffer | undefined
}

/** Where an entry's bytes live, and what the cache does with them. */
export interface EntryStore {
  /**
   * The value at `key`, or with `field`, one field of the hash at `key` (the variants of a route
   * that varies on request headers live in one hash, so key-level operations reach them all).
   */
  get (key: string, field?: string): Promise<Buffer | null>
  /**
   * Stores `value` for `ttl` seconds (with `field`, in the hash at `key`, which then lives at
   * least `ttl` seconds) and files the key under each tag. False when the store refused it: an
   * invalidation of its key, namespace or tag overtook the work that made it (see invalidation/).
   * With `lock`, the write releases that lock too, in the same round trip where it can.
   */
  set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string, lock?: HeldLock): Promise<boolean>
  delete (keys: readonly string[]): Promise<number>
  exists (keys: readonly string[]): Promise<number>
  expire (key: string, seconds: number): Promise<boolean>
  /** Seconds left; -2 missing, -1 no expiry. */
  ttl (key: string): Promise<number>
  /** Removes one namespace, or everything under the prefix. */
  clear (namespace?: string): Promise<number>
  /** Removes every entry filed under any of the tags: how many were removed, and their keys. */
  invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }>
  /**
   * Reads `key` and, unless it holds a fresh entry, takes the cross-instance lock `claim` names
   * in the same round trip where the store can; otherwise (no claim, or a store that cannot) a
   * plain read.
   */
  readOrClaim (key: string, field: string | undefined, claim: LockClaim | undefined): Promise<ClaimedRead>
}

/**
 * The lock a read may take: its key, for how many milliseconds, and for how long past its
 * freshness an entry is still served while it is refreshed (no lock is taken for it then: the
 * refresh takes its own, one for all instances).
 */
export interface LockClaim {
  lockKey: string
  lockMs: number
  graceMs: number
}

/**
 * What a read that may claim found: the bytes, and the lock: taken (do the work, the write
 * releases it), null when another holds it (wait for its result), undefined when not asked for
 * (a fresh entry, or a store that reads and claims apart).
 */
export interface ClaimedRead {
  bytes: Buffer | null
  lock: HeldLock | null | undefined
}

/** A read that claimed nothing. */
export function unclaimed (bytes: Buffer | null): ClaimedRead {
  return { bytes, lock: undefined }
}

export interface RateWindow {
  /** Hits in the current window, this one included. */
  count: number
  /** Milliseconds until the window resets. */
  resetMs: number
}

/** Fixed rate-limit windows, counted atomically. */
export interface RateWindowStore {
  hitWindow (id: string, windowSeconds: number): Promise<RateWindow>
}

/** Locks shared by every instance: only a store that instances share has them. */
export interface LockStore {
  /** SET NX PX: true when this caller now holds the lock. */
  acquireLock (key: string, token: string, ttlMs: number): Promise<boolean>
  /** Releases the lock only if `token` still holds it. */
  releaseLock (key: string, token: string): Promise<void>
}

/** The server behind the store. */
export interface ServerStore {
  ping (): Promise<void>
  info (): Promise<CacheInfo>
  close (): Promise<void>
}

/** Server information where the store cannot tell (the memory store, Redis down). */
export function unknownInfo (store: CacheInfo['store']): CacheInfo {
  return {
    store,
    redisVersion: null,
    usedMemory: null,
    usedMemoryHuman: null,
    connectedClients: null,
    evictedKeys: null,
    expiredKeys: null,
    keyspaceHits: null,
    keyspaceMisses: null,
    uptimeSeconds: null
  }
}
