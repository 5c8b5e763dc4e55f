// The stamps' bookkeeping on its own: what an instance remembers of invalidations, for how long,
// and within which bounds. The source of other instances' stamps is a Map standing in for the
// stamps Redis holds (test/invalidation.test.ts runs the same against real servers).
import t from 'tap'
import { encodeTags, KIND_VALUE, type Stamp, writeEnvelope } from '../lib/envelope'
import { INVALIDATED, InvalidationStamps, MAX_WORK_MS, UNKNOWN, VALID } from '../lib/invalidation/stamps'
import { KeyLayout } from '../lib/keys'
import { clock } from './helpers/store-suite'

const layout = new KeyLayout('p')

function entry (storedAt: number, tags: string[] = []): Buffer {
  const stamp: Stamp = { storedAt, freshFor: 60 }
  return writeEnvelope(0, KIND_VALUE, stamp, Buffer.from('1'), undefined, encodeTags(tags))
}

/** Stamps whose source is `stored` (Redis's stamps by key), or that fails when `failing`. */
function withSource (stored: Map<string, string>, reads: string[][] = [], failing = { now: false }): InvalidationStamps {
  return new InvalidationStamps(layout, {
    async readStamps (names) {
      reads.push([...names])
      if (failing.now) throw new Error('Connection is closed.')
      return names.map((name) => stored.get(name) ?? null)
    }
  })
}

const key = layout.entry('k', 'ns')

t.test('why work may not store its result', async (t) => {
  const time = clock(t)
  const stamps = new InvalidationStamps(layout, undefined)
  const began = Date.now()
  t.equal(stamps.overtaken(key, began, ['t']), null)
  time.advance(MAX_WORK_MS + 1)
  t.equal(stamps.overtaken(key, began, []), 'ran too long')
  const now = Date.now()
  stamps.keysDeleted([key], now)
  t.equal(stamps.overtaken(key, now - 1, []), 'deleted')
  stamps.tagsInvalidated(['t'], now)
  t.equal(stamps.overtaken(layout.entry('other', 'ns'), now - 1, ['t']), 'tag invalidated')
  stamps.cleared('ns', now)
  t.equal(stamps.overtaken(layout.entry('other', 'ns'), now - 1, []), 'cleared')
  t.equal(stamps.overtaken(layout.entry('other', 'ns'), now + 1, ['t']), null, 'work begun after all of them')
})

t.test('without a source, every invalidation is this process\'s own', async (t) => {
  const stamps = new InvalidationStamps(layout, undefined)
  t.equal(stamps.verdict(key, entry(Date.now(), ['never-seen'])), VALID, 'a tag never invalidated')
  t.equal(stamps.learn(entry(Date.now(), ['t'])), undefined, 'nothing to fetch')
  stamps.tagsInvalidated(['t'], Date.now())
  t.equal(stamps.verdict(key, entry(Date.now() - 1, ['t'])), INVALIDATED)
  await stamps.poll(false)
  t.pass('polling without a source only prunes')
})

t.test('tags: fetched once, polled while used, forgotten when not', async (t) => {
  const stored = new Map([[layout.tagStamp('a'), '100'], [layout.tagStamp('b'), 'not a number']])
  const reads: string[][] = []
  const stamps = withSource(stored, reads)
  const bytes = entry(1000, ['a', 'b', 'gone'])
  t.equal(stamps.verdict(key, bytes), UNKNOWN, 'unknown tags: the entry waits')
  t.equal(stamps.learn(entry(1000)), undefined, 'an untagged entry needs nothing')
  t.equal(stamps.learn(Buffer.from([0xc8])), undefined, 'nor do bytes that are no entry at all')
  await Promise.all([stamps.learn(bytes), stamps.learn(bytes)])
  t.equal(reads.length, 3, 'one read per tag, however many ask')
  t.equal(stamps.learn(bytes), undefined, 'known now')
  t.equal(stamps.verdict(key, entry(1000, ['a'])), VALID)
  t.equal(stamps.verdict(key, entry(1000, ['b'])), INVALIDATED, 'a stamp that is not a number refuses')
  t.equal(stamps.verdict(key, entry(1000, ['gone'])), INVALIDATED, 'a stamp Redis lost refuses')
  t.equal(stamps.overtaken(key, 1000, ['gone'], 1000), null, 'nor does it refuse a write: the write makes the stamp again')
  stamps.written(['gone', 'a', 'never-read'])
  t.equal(stamps.verdict(key, entry(1000, ['gone'])), UNKNOWN, 'until a write made it again: read again')
  stamps.tagsInvalidated(['fresh'], 2000)
  t.equal(stamps.overtaken(key, 1999, ['fresh'], 2000), 'tag invalidated', 'this instance\'s own, before Redis was read')
  stamps.keysDeleted([key], 2000)
  t.equal(stamps.verdict(key, entry(1999)), INVALIDATED, 'a key deleted here')
  t.equal(stamps.verdict(layout.entry('other', 'ns'), entry(1999)), VALID, 'not its neighbours')

  reads.length = 0
  await stamps.poll(false)
  t.ok(reads[0].includes(layout.tagStamp('a')), 'a used tag is polled')
  reads.length = 0
  await stamps.poll(false)
  t.notOk(reads[0].includes(layout.tagStamp('a')), 'unused since the last poll: forgotten')
  t.equal(stamps.verdict(key, entry(1000, ['a'])), UNKNOWN)
})

t.test('a poll learns other instances\' invalidations, and keeps what it knew when Redis fails', async (t) => {
  const stored = new Map<string, string>()
  const failing = { now: false }
  const stamps = withSource(stored, [], failing)
  const bytes = entry(1000)
  t.equal(stamps.verdict(key, bytes), VALID)
  stored.set(layout.clearStamp('ns'), '2000')
  await stamps.poll(false)
  t.equal(stamps.verdict(key, bytes), INVALIDATED, 'the namespace was cleared elsewhere')
  stored.set(layout.clearStamp(), '3000')
  failing.now = true
  await stamps.poll(false)
  t.equal(stamps.verdict(layout.entry('k', 'other'), entry(2500)), VALID, 'Redis down: nothing new learned')
  failing.now = false
  await Promise.all([stamps.poll(false), stamps.poll(false)])
  t.equal(stamps.verdict(layout.entry('k', 'other'), entry(2500)), INVALIDATED, 'everything was cleared elsewhere')
  await stamps.learn(entry(1, ['x']))
  failing.now = true
  await stamps.learn(entry(1, ['y']))
  t.equal(stamps.verdict(key, entry(5000, ['y'])), UNKNOWN, 'a tag that could not be fetched stays unknown')
})

t.test('this instance\'s own records: kept while pending, then for MAX_WORK_MS, within bounds', async (t) => {
  const time = clock(t)
  const stamps = new InvalidationStamps(layout, undefined)
  const now = Date.now()
  stamps.keysDeleted([key], now)
  stamps.tagsInvalidated(['t'], now)
  time.advance(MAX_WORK_MS + 1)
  await stamps.poll(true)
  t.equal(stamps.overtaken(key, now - 1, ['t'], now), 'deleted', 'invalidations pending: nothing forgotten')
  await stamps.poll(false)
  t.equal(stamps.overtaken(key, now - 1, ['t'], now), null, 'forgotten once old and applied')

  const many = Array.from({ length: 20_001 }, (_, i) => layout.entry(`k${i}`, 'ns'))
  stamps.keysDeleted(many, Date.now())
  t.equal(stamps.overtaken(many[0], Date.now() - 1, []), null, 'past the bound the oldest key goes')
  t.equal(stamps.overtaken(many[20_000], Date.now() - 1, []), 'deleted')
  // Deleted again, a key is the newest record: past the bound the oldest ones go, call by call.
  stamps.keysDeleted([many[1]], Date.now())
  for (let i = 0; i < 3; i++) stamps.keysDeleted([layout.entry(`later${i}`, 'ns')], Date.now())
  t.equal(stamps.overtaken(many[1], Date.now() - 1, []), 'deleted', 'a key deleted again is kept')
  t.equal(stamps.overtaken(many[2], Date.now() - 1, []), null, 'the oldest records go first')
  t.equal(stamps.overtaken(many[4], Date.now() - 1, []), null)
  t.equal(stamps.overtaken(many[5], Date.now() - 1, []), 'deleted')

  for (let i = 0; i < 1001; i++) stamps.verdict(layout.entry('k', `n${i}`), entry(Date.now()))
  stamps.cleared('n0', Date.now())
  await stamps.poll(false)
  t.equal(stamps.verdict(layout.entry('k', 'n0'), entry(Date.now() - 1)), INVALIDATED, 'a cleared namespace is kept past the bound')
})

t.test('listeners hear of every invalidation made here', async (t) => {
  const stamps = new InvalidationStamps(layout, undefined)
  const heard: Array<readonly string[] | undefined> = []
  stamps.onInvalidate((keys) => heard.push(keys))
  stamps.keysDeleted([key], 1)
  stamps.cleared(undefined, 1)
  stamps.tagsInvalidated(['t'], 1)
  t.same(heard, [[key], undefined, undefined])
})
