// Background refreshes (stale-while-revalidate), for getOrSet and route caching alike: an entry
// served stale is refreshed once at a time, however many requests see it stale meanwhile.

export class BackgroundRefresh {
  /** The refreshes under way; each settles (never rejects) when its work is done. */
  private readonly running = new Map<string, Promise<void>>()

  /**
   * Starts `work` for `id` unless a refresh of `id` is under way; `failed` hears of its failure.
   * Whether it started.
   */
  start (id: string, work: () => Promise<unknown>, failed: (err: unknown) => void): boolean {
    if (this.running.has(id)) return false
    const done = work()
      .then(() => {}, failed)
      .finally(() => this.running.delete(id))
    this.running.set(id, done)
    return true
  }

  /** The refresh of `id` under way, settling when it is done. */
  get (id: string): Promise<void> | undefined {
    return this.running.get(id)
  }
}
