/** A promise and the functions that settle it, for replies that come back for a whole batch. */
export interface Deferred<T> {
  promise: Promise<T>
  resolve: (value: T) => void
  reject: (err: unknown) => void
}

export function deferred<T> (): Deferred<T> {
  const waiter = {} as Deferred<T>
  waiter.promise = new Promise<T>((resolve, reject) => {
    waiter.resolve = resolve
    waiter.reject = reject
  })
  return waiter
}
