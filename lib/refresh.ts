// Background refreshes (stale-while-revalidate), for getOrSet and route caching alike: an entry
// served stale is refreshed once at a time, however many requests see it stale meanwhile.

export class BackgroundRefresh {
  private readonly running = new Set<string>()

  /**
   * Starts `work` for `id` unless a refresh of `id` is under way; `failed` hears of its failure.
   * Whether it started.
   */
  start (id: string, work: () => Promise<unknown>, failed: (err: unknown) => void): boolean {
    if (this.running.has(id)) return false
    this.running.add(id)
    work()
      .catch(failed)
      .finally(() => this.running.delete(id))
    return true
  }
}
