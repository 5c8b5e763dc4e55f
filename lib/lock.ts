// The cross-instance lock: when several app instances miss the same entry at once, one of
// them (the holder of a short Redis lock, SET NX PX) runs the handler or callback; the others
// poll for the entry it stores and use it. They run the work themselves when the lock is
// released without an entry (the result was not storable, or the holder failed), when the lock
// expires (the holder died), or when their wait exceeds its limit. Within one process,
// concurrent misses are already collapsed before any of this.
//
// A failover can leave a lock behind with nobody to release it: the holder's result and release
// went to the old primary and were lost (replication is asynchronous), while the lock itself had
// reached the new one. Such a lock must not stall requests: a wait never lasts longer than
// `lock.wait` (each poll bounded by `commandTimeout`), and ends at once when this process's
// connection came back since the claim, since the lock may then be on a server its holder never
// reached again.
import { randomBytes } from 'node:crypto'
import type { EntryStore, LockClaim, LockStore } from './stores/store'

export interface LockSettings {
  /** Milliseconds a lock is held at most. */
  ttl: number
  /** Milliseconds a waiter polls before giving up and running the work itself. */
  wait: number
}

/** What ends a wait before `lock.wait`. */
export interface LockBounds {
  /** How many times the connection came back (CacheStack.reconnects). */
  connection: { readonly reconnects: number }
}

export interface Lease {
  /** Releases the lock (only if still ours, and unless a write released it); never throws. */
  release (): Promise<void>
  /** The lock held, for a write that releases it in the same round trip; none for a no-op lease. */
  readonly held?: HeldLock
}

/** A lock this process holds: a write given it releases it once the entry is stored. */
export interface HeldLock {
  readonly key: string
  readonly token: string
  /** Set by whoever let it go first: the write script or `release`. */
  released: boolean
}

/**
 * The outcome of a claim: a lease (do the work, then release it), or the bytes another
 * instance stored (use them), or neither (bytes null: do the work, there is nobody to wait for).
 */
export type Claim = { lease: Lease, bytes?: undefined } | { lease?: undefined, bytes: Buffer | null }

// Tokens of the locks this process takes: random to the process, then a counter, so that no
// two holders anywhere share one and taking a lock costs no random draw.
const TOKEN_PREFIX = randomBytes(9).toString('base64url')
let tokens = 0

/** A token no other lock holder has. */
export function lockToken (): string {
  return `${TOKEN_PREFIX}.${++tokens}`
}

const FIRST_POLL_MS = 5
const MAX_POLL_MS = 100
const NO_LEASE: Lease = { release: async () => {} }

export class DistributedLock {
  private readonly locks: LockStore | undefined
  /** Where the holder's result is looked for. */
  private readonly entries: EntryStore
  private readonly lockPrefix: string
  private readonly settings: LockSettings | false
  private readonly bounds: LockBounds | undefined

  /** Without a lock store (one process has nothing to coordinate with), every claim is granted. */
  constructor (locks: LockStore | undefined, entries: EntryStore, lockPrefix: string, settings: LockSettings | false, bounds?: LockBounds) {
    this.locks = locks
    this.entries = entries
    this.lockPrefix = lockPrefix
    this.settings = settings
    this.bounds = bounds
  }

  /**
   * Called after a miss: takes the lock, or waits for the instance that holds it. When Redis
   * cannot be asked, the caller just does the work.
   */
  async claim (fullKey: string, usable: (bytes: Buffer) => boolean, field?: string, waiting?: () => void): Promise<Claim> {
    const locks = this.locks
    if (locks === undefined || this.settings === false) return { lease: NO_LEASE }
    const lockKey = this.lockKey(fullKey, field)
    const token = lockToken()
    const reconnects = this.bounds?.connection.reconnects
    // The previous holder may have stored its result and let go between the caller's miss and
    // this lock: the entry is looked at once more, or the work would run twice. Both go in one
    // round trip, the read queued behind the lock on the same connection, so it sees what was
    // there once the lock was taken.
    const acquiring = locks.acquireLock(lockKey, token, this.settings.ttl)
    const rereading = this.entries.get(fullKey, field)
    let acquired: boolean
    try {
      acquired = await acquiring
    } catch {
      rereading.catch(() => {})
      return { lease: NO_LEASE }
    }
    if (!acquired) {
      rereading.catch(() => {})
      waiting?.()
      return { bytes: await this.waitFor(fullKey, usable, field, reconnects) }
    }
    const lease = this.leaseOf({ key: lockKey, token, released: false })
    try {
      const bytes = await rereading
      if (bytes !== null && usable(bytes)) {
        await lease.release()
        return { bytes }
      }
    } catch {
      // Redis failed: do the work.
    }
    return { lease }
  }

  /**
   * Where a read that may claim takes the lock of `fullKey` (see EntryStore.readOrClaim), and for
   * how long; undefined when there is no lock to take. `graceMs`: see LockClaim.
   */
  claimable (fullKey: string, field: string | undefined, graceMs: number): LockClaim | undefined {
    if (this.locks === undefined || this.settings === false) return undefined
    return { lockKey: this.lockKey(fullKey, field), lockMs: this.settings.ttl, graceMs }
  }

  /**
   * The claim a read made (see EntryStore.readOrClaim): a lease on the lock it took, or the
   * result of whoever holds it, once stored.
   */
  async claimed (lock: HeldLock | null, fullKey: string, usable: (bytes: Buffer) => boolean, field?: string): Promise<Claim> {
    if (lock !== null) return { lease: this.leaseOf(lock) }
    return { bytes: await this.waitFor(fullKey, usable, field, this.bounds?.connection.reconnects) }
  }

  /** Lets go of a lock a read took for work that is not done after all; never throws. */
  abandon (lock: HeldLock): Promise<void> {
    return this.leaseOf(lock).release()
  }

  private leaseOf (held: HeldLock): Lease {
    const locks = this.locks as LockStore
    return {
      held,
      release: async () => {
        if (held.released) return
        held.released = true
        await locks.releaseLock(held.key, held.token).catch(() => {})
      }
    }
  }

  /**
   * Polls for the entry the lock holder stores (one that `usable` accepts: an old entry kept
   * for stale serving is not the holder's result). Returns its bytes, or null when the caller
   * should do the work itself.
   */
  private async waitFor (fullKey: string, usable: (bytes: Buffer) => boolean, field: string | undefined, reconnects: number | undefined): Promise<Buffer | null> {
    const lockKey = this.lockKey(fullKey, field)
    const deadline = Date.now() + (this.settings as LockSettings).wait
    let pause = FIRST_POLL_MS
    try {
      while (Date.now() < deadline) {
        await sleep(Math.min(pause, Math.max(0, deadline - Date.now())))
        pause = Math.min(pause * 2, MAX_POLL_MS)
        // Reconnected (a failover, maybe): the holder cannot be known alive any more.
        if (this.bounds !== undefined && this.bounds.connection.reconnects !== reconnects) return null
        const [bytes, locked] = await Promise.all([this.entries.get(fullKey, field), this.entries.exists([lockKey])])
        if (bytes !== null && usable(bytes)) return bytes
        if (locked === 0) return null
      }
    } catch {
      // Redis failed while waiting: do the work.
    }
    return null
  }

  private lockKey (fullKey: string, field: string | undefined): string {
    return field === undefined ? this.lockPrefix + fullKey : `${this.lockPrefix}${fullKey}\n${field}`
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
