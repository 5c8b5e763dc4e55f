// The context a getOrSet callback is handed: it lets the value decide how it is stored (adaptive
// caching), and shows the value it replaces. Checked as the call's own options are.
import type { GetOrSetContext } from '../../types'
import { validateEntryTags } from '../keys'

export class LoadContext<T> implements GetOrSetContext<T> {
  readonly stale: T | undefined
  /** Seconds the result stays fresh (before jitter). */
  ttl: number
  tags: readonly string[]
  skipped = false
  private readonly resolveTtl: (ttl: number) => number

  constructor (stale: T | undefined, ttl: number, tags: readonly string[], resolveTtl: (ttl: number) => number) {
    this.stale = stale
    this.ttl = ttl
    this.tags = tags
    this.resolveTtl = resolveTtl
  }

  setTtl (seconds: number): void {
    this.ttl = this.resolveTtl(seconds)
  }

  setTags (tags: string[]): void {
    this.tags = validateEntryTags(tags)
  }

  skip (): void {
    this.skipped = true
  }
}
