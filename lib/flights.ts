// In-process request collapsing, for getOrSet and route caching alike: concurrent misses of one
// entry share one run of the work. A flight stays joinable until its result is stored, not just
// until the work returns: a request that arrives in between would otherwise miss the store and
// run the work again, and an invalidation that follows the write must not find the old result
// still in flight.

export interface Flight<T> {
  readonly promise: Promise<T>
  /**
   * Hands the result to whoever joined. The flight stays joinable until `stored` settles (the
   * write of the result), or ends at once without it.
   */
  settle (value: T, stored?: Promise<unknown>): void
}

export class Flights<T> {
  private readonly running = new Map<string, Promise<T>>()

  /** The result of the flight of `id` under way, if there is one. */
  join (id: string): Promise<T> | undefined {
    return this.running.get(id)
  }

  /** Makes `work` the flight of `id` until it settles; `work` stores its result before that. */
  run (id: string, work: Promise<T>): Promise<T> {
    this.running.set(id, work)
    const forget = (): void => this.forget(id, work)
    work.then(forget, forget)
    return work
  }

  /** A flight whose result the caller hands over by hand (see `Flight.settle`). */
  open (id: string): Flight<T> {
    let resolve!: (value: T) => void
    const promise = new Promise<T>((_resolve) => { resolve = _resolve })
    this.running.set(id, promise)
    return {
      promise,
      settle: (value, stored) => {
        resolve(value)
        if (stored === undefined) this.forget(id, promise)
        else stored.finally(() => this.forget(id, promise))
      }
    }
  }

  /**
   * Ends the flights of `ids` (of all, without) for callers to come: an invalidation that
   * returned must not hand them a result whose work began before it. Who joined already gets it.
   */
  detach (ids?: readonly string[]): void {
    if (ids === undefined) this.running.clear()
    else for (const id of ids) this.running.delete(id)
  }

  private forget (id: string, promise: Promise<T>): void {
    if (this.running.get(id) === promise) this.running.delete(id)
  }
}
