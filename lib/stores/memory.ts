// The in-process store used when no Redis is configured: the same semantics as the Redis store
// (TTL, namespaces, clear, tags, rate-limit windows) for one process only. It has no locks: with
// one process, the in-process request collapsing is all the coordination there is to do.
import type { CacheInfo } from '../../types'
import type { KeyLayout } from '../keys'
import { type EntryStore, type RateWindow, type RateWindowStore, type ServerStore, unknownInfo } from './store'

interface Item {
  value: Buffer
  expiresAt: number // ms since the epoch; every entry the cache writes has a TTL
  /** Set for a hash (the variants of a route that varies on request headers). */
  fields?: Map<string, Buffer>
}

const SWEEP_INTERVAL_MS = 30_000

export class MemoryStore implements EntryStore, RateWindowStore, ServerStore {
  private readonly items = new Map<string, Item>()
  private readonly tags = new Map<string, Set<string>>()
  private readonly windows = new Map<string, Item & { count: number }>()
  private readonly layout: KeyLayout
  private readonly sweeper: NodeJS.Timeout

  constructor (layout: KeyLayout) {
    this.layout = layout
    // Expired entries are dropped on access; the sweep keeps unread ones from piling up.
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS).unref()
  }

  async get (key: string, field?: string): Promise<Buffer | null> {
    const item = this.live(key)
    if (item === undefined) return null
    return field === undefined ? (item.fields === undefined ? item.value : null) : item.fields?.get(field) ?? null
  }

  async set (key: string, value: Buffer, ttl: number, tags: readonly string[], field?: string): Promise<void> {
    const expiresAt = Date.now() + ttl * 1000
    if (field === undefined) {
      this.items.set(key, { value, expiresAt })
    } else {
      const existing = this.live(key)
      const item = existing?.fields === undefined ? { value: Buffer.alloc(0), expiresAt, fields: new Map<string, Buffer>() } : existing
      item.fields?.set(field, value)
      item.expiresAt = Math.max(item.expiresAt, expiresAt)
      this.items.set(key, item)
    }
    for (const tag of tags) {
      const tagKey = this.layout.tag(tag)
      let members = this.tags.get(tagKey)
      if (members === undefined) {
        members = new Set()
        this.tags.set(tagKey, members)
      }
      members.add(key)
    }
  }

  async delete (keys: readonly string[]): Promise<number> {
    let removed = 0
    for (const key of keys) {
      if (this.live(key) !== undefined) removed++
      this.items.delete(key)
    }
    return removed
  }

  async exists (keys: readonly string[]): Promise<number> {
    let present = 0
    for (const key of keys) if (this.live(key) !== undefined) present++
    return present
  }

  async expire (key: string, seconds: number): Promise<boolean> {
    const item = this.live(key)
    if (item === undefined) return false
    item.expiresAt = Date.now() + seconds * 1000
    return true
  }

  async ttl (key: string): Promise<number> {
    const item = this.live(key)
    if (item === undefined) return -2
    return Math.max(0, Math.round((item.expiresAt - Date.now()) / 1000))
  }

  async clear (namespace?: string): Promise<number> {
    const start = namespace === undefined ? `${this.layout.prefix}:` : this.layout.entry('', namespace)
    let removed = 0
    for (const key of this.items.keys()) {
      if (key.startsWith(start)) {
        this.items.delete(key)
        removed++
      }
    }
    if (namespace === undefined) {
      this.tags.clear()
      this.windows.clear()
    }
    return removed
  }

  async invalidateTags (tags: readonly string[]): Promise<{ removed: number, keys: string[] }> {
    const keys = new Set<string>()
    for (const tag of tags) {
      const tagKey = this.layout.tag(tag)
      for (const key of this.tags.get(tagKey) ?? []) keys.add(key)
      this.tags.delete(tagKey)
    }
    const list = [...keys]
    return { removed: await this.delete(list), keys: list }
  }

  async hitWindow (id: string, windowSeconds: number): Promise<RateWindow> {
    const key = this.layout.rateLimit(id)
    const now = Date.now()
    let window = this.windows.get(key)
    if (window === undefined || window.expiresAt <= now) {
      window = { value: Buffer.alloc(0), count: 0, expiresAt: now + windowSeconds * 1000 }
      this.windows.set(key, window)
    }
    window.count++
    return { count: window.count, resetMs: window.expiresAt - now }
  }

  async ping (): Promise<void> {}

  async info (): Promise<CacheInfo> {
    let usedMemory = 0
    for (const [key, item] of this.items) usedMemory += key.length + item.value.length
    return { ...unknownInfo('memory'), usedMemory }
  }

  async close (): Promise<void> {
    clearInterval(this.sweeper)
    this.items.clear()
    this.tags.clear()
    this.windows.clear()
  }

  /** The item when present and not expired; an expired one is dropped on the way. */
  private live (key: string): Item | undefined {
    const item = this.items.get(key)
    if (item === undefined) return undefined
    if (item.expiresAt <= Date.now()) {
      this.items.delete(key)
      return undefined
    }
    return item
  }

  sweep (): void {
    const now = Date.now()
    for (const [key, item] of this.items) if (item.expiresAt <= now) this.items.delete(key)
    for (const [key, window] of this.windows) if (window.expiresAt <= now) this.windows.delete(key)
    for (const [tagKey, members] of this.tags) {
      for (const key of members) if (!this.items.has(key)) members.delete(key)
      if (members.size === 0) this.tags.delete(tagKey)
    }
  }
}
