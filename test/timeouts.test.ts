// awaitWithin and Fallback on their own (no Redis): the orders of events the Redis-backed tests
// cannot force, such as a soft timeout that passes before the stale value is known.
import t from 'tap'
import { awaitWithin, Fallback } from '../lib/timeouts'

/** A promise the test settles by hand. */
function deferred<T> (): { promise: Promise<T>, resolve: (value: T) => void, reject: (err: Error) => void } {
  let resolve!: (value: T) => void
  let reject!: (err: Error) => void
  const promise = new Promise<T>((_resolve, _reject) => { resolve = _resolve; reject = _reject })
  return { promise, resolve, reject }
}

const never = (): Error => new Error('hard')

t.test('a soft timeout that passes before the stale value is known serves it once found', async (t) => {
  const work = deferred<string>()
  const fallback = new Fallback<string>()
  let served = 0
  const answer = awaitWithin(work.promise, fallback, 1, () => { served++ })
  // Past the soft timeout, nothing stale yet: the caller keeps waiting.
  await new Promise((resolve) => setTimeout(resolve, 20))
  fallback.found('stale', () => true)
  t.equal(await answer, 'stale')
  t.equal(served, 1)
  t.ok(fallback.slow, 'later callers need not wait')
  t.equal(await awaitWithin(work.promise, fallback, 1000, () => { served++ }), 'stale', 'served at once')
  t.equal(served, 2)
  // The work settling afterwards changes nothing for callers already answered.
  work.reject(new Error('late failure'))
  await t.rejects(awaitWithin(work.promise, new Fallback<string>(), 0, () => {}, { ms: 1000, error: never }), { message: 'late failure' })
})

t.test('the hard timeout: the stale value if usable, else the error; the work may still win first', async (t) => {
  const fallback = new Fallback<string>()
  fallback.begin()
  fallback.found('stale', () => false)
  await t.rejects(awaitWithin(deferred<string>().promise, fallback, 0, () => {}, { ms: 1, error: () => new Error('too slow') }), { message: 'too slow' }, 'an unusable stale value is not served')
  t.equal(fallback.current(), undefined)

  const usable = new Fallback<string>()
  usable.begin()
  usable.found('stale', () => true)
  t.equal(await awaitWithin(deferred<string>().promise, usable, 0, () => {}, { ms: 1, error: never }), 'stale')

  const quick = deferred<string>()
  const answer = awaitWithin(quick.promise, new Fallback<string>(), 1000, () => {}, { ms: 1000, error: never })
  quick.resolve('fresh')
  t.equal(await answer, 'fresh')

  // A work that resolves after its caller was answered is ignored by that caller.
  const late = deferred<string>()
  const stale = new Fallback<string>()
  stale.found('stale', () => true)
  t.equal(await awaitWithin(late.promise, stale, 1, () => {}), 'stale')
  late.resolve('fresh')
  await late.promise
})

t.test('the hard timeout counts from the work\'s beginning, and a result being stored is in time', async (t) => {
  const fallback = new Fallback<string>()
  let timedOut = false
  const answer = awaitWithin(deferred<string>().promise, fallback, 0, () => {}, { ms: 1, error: () => { timedOut = true; return new Error('too slow') } })
  // Before begin (the store's lookup, say), no time counts.
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(timedOut, false)
  fallback.answered = { value: 'computed' }
  fallback.begin()
  t.equal(await answer, 'computed', 'the result, while it is being stored')
  t.equal(await awaitWithin(deferred<string>().promise, fallback, 0, () => {}, { ms: 1, error: never }), 'computed', 'a caller joining later')
})
