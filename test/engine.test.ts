// The parts data caching and route caching share, on their own: in-process request collapsing,
// the background-refresh scheduler, the freshness rule and the invalidation bus's messages.
import t from 'tap'
import { decodeMessage, encodeMessage } from '../lib/bus/messages'
import { Flights } from '../lib/flights'
import { freshness, isFresh, NO_STALE, secondsLeft } from '../lib/freshness'
import { BackgroundRefresh } from '../lib/refresh'

t.test('flights: one run per id, joinable until it settles', async (t) => {
  const flights = new Flights<string>()
  let finish!: (value: string) => void
  const run = flights.run('a', new Promise((resolve) => { finish = resolve }))
  t.equal(flights.join('a'), run, 'a caller joins the run under way')
  t.equal(flights.join('b'), undefined, 'other ids are not affected')
  finish('done')
  t.equal(await run, 'done')
  t.equal(flights.join('a'), undefined, 'gone once settled')

  const failing = flights.run('f', Promise.reject(new Error('boom')))
  await t.rejects(failing, /boom/)
  t.equal(flights.join('f'), undefined, 'a failed run is gone too')
})

t.test('flights opened by hand stay joinable until their result is stored', async (t) => {
  const flights = new Flights<string | null>()
  const flight = flights.open('k')
  t.equal(flights.join('k'), flight.promise)
  let stored!: () => void
  flight.settle('bytes', new Promise<void>((resolve) => { stored = resolve }))
  t.equal(await flights.join('k'), 'bytes', 'the result is handed over at once')
  stored()
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(flights.join('k'), undefined, 'and the flight ends once stored')

  const quick = flights.open('q')
  quick.settle(null)
  t.equal(flights.join('q'), undefined, 'without a write it ends at once')

  const old = flights.open('r')
  const newer = flights.open('r')
  old.settle('old')
  t.equal(flights.join('r'), newer.promise, 'settling an older flight leaves a newer one alone')
  newer.settle('new')
})

t.test('background refresh: one at a time per id, failures reported', async (t) => {
  const refresh = new BackgroundRefresh()
  let runs = 0
  let finish!: () => void
  const work = (): Promise<void> => { runs++; return new Promise((resolve) => { finish = resolve }) }
  refresh.start('k', work, () => t.fail('no failure'))
  refresh.start('k', work, () => t.fail('no failure'))
  t.equal(runs, 1, 'a second start while one runs does nothing')
  finish()
  await new Promise((resolve) => setImmediate(resolve))
  refresh.start('k', work, () => t.fail('no failure'))
  t.equal(runs, 2, 'the next one starts once it is done')
  finish()
  const failures: unknown[] = []
  await new Promise<void>((resolve) => {
    refresh.start('bad', async () => { throw new Error('down') }, (err) => { failures.push(err); resolve() })
  })
  t.match(failures, [/down/])
})

t.test('freshness: fresh, then stale within its windows, then expired', async (t) => {
  const stamp = { storedAt: 1_000_000, freshFor: 10 }
  const windows = { staleWhileRevalidate: 5, staleIfError: 20 }
  const at = (seconds: number): number => stamp.storedAt + seconds * 1000
  t.equal(freshness(stamp, windows, at(9.999)), 'fresh')
  t.equal(freshness(stamp, windows, at(10)), 'stale-while-revalidate')
  t.equal(freshness(stamp, windows, at(15)), 'stale-if-error')
  t.equal(freshness(stamp, windows, at(30)), 'expired')
  t.equal(freshness(stamp, NO_STALE, at(10)), 'expired', 'without windows, stale is expired')
  t.equal(freshness(stamp, { staleWhileRevalidate: 20, staleIfError: 5 }, at(25)), 'stale-while-revalidate', 'the longer window wins')
  t.equal(isFresh(stamp, at(9)), true)
  t.equal(isFresh(stamp, at(10)), false)
  t.equal(secondsLeft(stamp, at(2.5)), 7)
  t.equal(secondsLeft(stamp, at(12)), -2)
})

t.test('bus messages: named fields; anything unreadable names nothing (a flush)', async (t) => {
  t.same(decodeMessage(encodeMessage({ origin: 'a', keys: ['k1', 'k2'] })), { origin: 'a', keys: ['k1', 'k2'], prefix: undefined })
  t.same(decodeMessage(encodeMessage({ origin: 'a', prefix: 'p:ns:' })), { origin: 'a', keys: undefined, prefix: 'p:ns:' })
  const flush = { origin: '', keys: undefined, prefix: undefined }
  t.same(decodeMessage('not json'), flush)
  t.same(decodeMessage('42'), flush)
  t.same(decodeMessage('null'), flush)
  t.same(decodeMessage(JSON.stringify({ origin: 'a', keys: ['k', 1] })), { origin: 'a', keys: undefined, prefix: undefined }, 'keys that are not all strings are not trusted')
})
