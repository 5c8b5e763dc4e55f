// One contract for every store, run against each of them (as bentocache runs one driver suite
// against every driver): what the cache relies on from an EntryStore, a RateWindowStore and a
// ServerStore, whatever keeps the bytes. Every test gets a fresh store under a prefix of its own.
// The suite never asserts wall-clock timing: expiry is waited for by polling, with room to spare.
// What only one store does (the memory store's sweep, the Redis store's batching and locks)
// stays with that store's own tests.
import { randomBytes } from 'node:crypto'
import { KeyLayout } from '../../lib/keys'
import { type EntryStore, type RateWindow, type RateWindowStore, type ServerStore, unknownInfo } from '../../lib/stores/store'
import type { CacheInfo } from '../../types'

export type SuiteStore = EntryStore & RateWindowStore & ServerStore

export interface StoreFactory {
  /** What the store's info() reports as `store`. */
  kind: CacheInfo['store']
  /** A new store over `layout`, ready for commands; whatever it holds is released when `t` ends. */
  make: (t: tap.Test, layout: KeyLayout) => SuiteStore | Promise<SuiteStore>
  /**
   * A key leaves its tags' sets when it is removed (the memory store, which bounds its indexes).
   * Otherwise a removed key stays a member until its tag is invalidated or its set expires (Redis,
   * where a tag set is a key of its own); invalidateTags then reports it, without counting it.
   */
  dropsRemovedMembers?: boolean
}

/** Long enough for a 1 s ttl to run out on a loaded machine. */
export const EXPIRY_WAIT_MS = 10_000

/** Polls `check` until it returns true; fails after `timeoutMs`. */
export async function until (check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

let counter = 0
/**
 * A prefix no other test in this process uses. It has the '-' and '.' a prefix may contain, so
 * the SCAN patterns built from it must escape them.
 */
export function uniquePrefix (): string {
  counter++
  return `st-${process.pid}.${counter}`
}

const bytes = (text: string): Buffer => Buffer.from(text)
const sorted = (keys: readonly string[]): string[] => [...keys].sort()
/** The value a promise settles with, or the error it rejects with. */
const settled = (promise: Promise<unknown>): Promise<unknown> => promise.catch((err: unknown) => err)

interface Subject {
  store: SuiteStore
  layout: KeyLayout
  /** The full key of `key` in `namespace` (default `a`). */
  key: (key: string, namespace?: string) => string
}

export function storeSuite (t: tap.Test, name: string, factory: StoreFactory): void {
  const subject = async (t: tap.Test): Promise<Subject> => {
    const layout = new KeyLayout(uniquePrefix())
    const store = await factory.make(t, layout)
    return { store, layout, key: (key, namespace = 'a') => layout.entry(key, namespace) }
  }

  t.test(`${name}: the store contract`, async (t) => {
    t.test('get and set round-trip arbitrary bytes', async (t) => {
      const { store, key } = await subject(t)
      const values: Record<string, Buffer> = {
        every: Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
        'not-utf8': Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0x00, 0xed, 0xa0, 0x80]),
        empty: Buffer.alloc(0),
        large: randomBytes(1024 * 1024)
      }
      for (const [k, value] of Object.entries(values)) await store.set(key(k), value, 60, [])
      for (const [k, value] of Object.entries(values)) {
        const got = await store.get(key(k))
        t.ok(Buffer.isBuffer(got) && got.equals(value), `${k}: the same bytes back`)
      }

      // Reads in one turn (the Redis store sends them together), a miss among them.
      const names = [...Object.keys(values), 'missing', 'every']
      const reads = await Promise.all(names.map((k) => store.get(key(k))))
      t.ok(reads.every((got, i) => names[i] === 'missing' ? got === null : got?.equals(values[names[i]])), 'concurrent reads each get their own key\'s bytes')

      const odd = key('ключ * ?[a-z] \\ ü \n end')
      await store.set(odd, values.every, 60, [])
      t.ok((await store.get(odd))?.equals(values.every), 'a key with spaces, glob characters and non-ASCII text is used literally')

      await store.set(key('hash'), values.every, 60, [], 'vary: ü')
      t.ok((await store.get(key('hash'), 'vary: ü'))?.equals(values.every), 'the same bytes in a hash field')

      await store.set(key('every'), bytes('new'), 60, [])
      t.same(await store.get(key('every')), bytes('new'), 'a second set replaces the value')
      t.equal(await store.get(key('missing')), null, 'a missing key is null')
      t.equal(await store.get(key('missing'), 'field'), null, 'and so is a field of a missing hash')
    })

    t.test('entries expire with their ttl', async (t) => {
      const { store, key } = await subject(t)
      const written = performance.now()
      await store.set(key('short'), bytes('1'), 1, ['t'])
      await store.set(key('hash'), bytes('2'), 1, [], 'field')
      await store.set(key('long'), bytes('3'), 60, [])
      // Present until the ttl has run out: on a machine slow enough to take a second over this,
      // a miss is right too.
      const [short, field] = [await store.get(key('short')), await store.get(key('hash'), 'field')]
      const late = performance.now() - written >= 1000
      t.ok(short?.equals(bytes('1')) ?? late, 'there until its ttl has run out')
      t.ok(field?.equals(bytes('2')) ?? late, 'a hash field too')

      await until(async () => await store.get(key('short')) === null, EXPIRY_WAIT_MS, 'the 1 s entry to expire')
      t.equal(await store.ttl(key('short')), -2, 'gone at its expiry')
      t.equal(await store.exists([key('short')]), 0)
      t.equal(await store.delete([key('short')]), 0, 'an expired entry is not counted as removed')
      t.equal(await store.expire(key('short'), 10), false, 'nor can it be revived')
      t.equal(await store.get(key('short')), null)
      t.equal((await store.invalidateTags(['t'])).removed, 0, 'nor counted when its tag is invalidated')

      await until(async () => await store.get(key('hash'), 'field') === null, EXPIRY_WAIT_MS, 'the 1 s hash to expire')
      t.equal(await store.exists([key('hash')]), 0, 'a hash expires as a whole')

      t.same(await store.get(key('long')), bytes('3'), 'an entry with a longer ttl is still there')
      t.ok(await store.ttl(key('long')) > 1)
      await store.set(key('short'), bytes('again'), 60, [])
      t.same(await store.get(key('short')), bytes('again'), 'an expired key can be set again')
    })

    t.test('hash fields (the variants of a route with vary) and plain values do not mix', async (t) => {
      const { store, key } = await subject(t)
      await store.set(key('plain'), bytes('p'), 60, [])
      await store.set(key('hash'), bytes('a'), 60, [], 'a')
      await store.set(key('hash'), bytes('b'), 30, [], 'b')
      t.equal(String(await store.get(key('hash'), 'a')), 'a')
      t.equal(String(await store.get(key('hash'), 'b')), 'b')
      t.equal(await store.get(key('hash'), 'c'), null, 'a missing field is a miss')
      const left = await store.ttl(key('hash'))
      t.ok(left > 30 && left <= 60, 'the hash lives as long as its longest field')
      await store.set(key('grow'), bytes('x'), 30, [], 'x')
      await store.set(key('grow'), bytes('y'), 60, [], 'y')
      t.ok(await store.ttl(key('grow')) > 30, 'a longer-lived field extends the hash')

      await store.set(key('hash'), bytes('A'), 60, [], 'a')
      t.equal(String(await store.get(key('hash'), 'a')), 'A', 'a field is replaced')
      t.equal(String(await store.get(key('hash'), 'b')), 'b', 'and the others are left alone')

      await store.set(key('hash2'), bytes('f'), 60, [], 'f')
      await store.set(key('hash2'), bytes('plain now'), 60, [])
      t.same(await store.get(key('hash2')), bytes('plain now'), 'a plain value written over a hash replaces it')

      t.equal(await store.exists([key('hash')]), 1, 'a hash is one key')
      t.equal(await store.delete([key('hash')]), 1, 'one key for all its fields')
      t.equal(await store.get(key('hash'), 'b'), null)
    })

    t.test('a read of the other kind is a miss or an unreadable entry; a write replaces it', async (t) => {
      const { store, key } = await subject(t)
      // Redis answers WRONGTYPE, which the cache treats as it treats a corrupt entry (a miss,
      // dropped and counted); the memory store answers a miss. Either way nothing is served.
      const missOrUnreadable = (result: unknown): boolean => result === null || (result instanceof Error && result.message.startsWith('WRONGTYPE'))
      await store.set(key('plain'), bytes('p'), 60, [])
      await store.set(key('hash'), bytes('a'), 60, [], 'a')
      await store.set(key('replaced'), bytes('f'), 60, [], 'f')
      await store.set(key('replaced'), bytes('plain now'), 60, [])
      t.ok(missOrUnreadable(await settled(store.get(key('hash')))), 'a hash read as a plain value')
      // Read together with another key (the standalone Redis store sends one MGET for the turn).
      const [asPlain, plain] = await Promise.all([settled(store.get(key('hash'))), settled(store.get(key('plain')))])
      t.ok(missOrUnreadable(asPlain), 'a hash read as a plain value among other reads')
      t.same(plain, bytes('p'), 'and the other reads are answered')
      t.ok(missOrUnreadable(await settled(store.get(key('plain'), 'a'))), 'a plain value read as a hash')
      t.ok(missOrUnreadable(await settled(store.get(key('replaced'), 'f'))), 'so is a field of a hash a plain value replaced')
      t.equal(await settled(store.set(key('plain'), bytes('f'), 60, [], 'f')), true, 'a field written over a plain value is stored')
      t.same(await settled(store.get(key('plain'), 'f')), bytes('f'), 'and read back')
    })

    t.test('expire and ttl', async (t) => {
      const { store, key } = await subject(t)
      await store.set(key('k'), bytes('1'), 30, [])
      const left = await store.ttl(key('k'))
      t.ok(left > 20 && left <= 30, 'the seconds left, at most the ttl')
      t.equal(await store.expire(key('k'), 100), true)
      const extended = await store.ttl(key('k'))
      t.ok(extended > 30 && extended <= 100, 'expire sets a new ttl')
      t.equal(await store.expire(key('missing'), 100), false, 'a missing key cannot be given one')
      t.equal(await store.ttl(key('missing')), -2, '-2 for a missing key')

      await store.set(key('hash'), bytes('h'), 30, [], 'f')
      t.equal(await store.expire(key('hash'), 100), true, 'a hash too')
      t.ok(await store.ttl(key('hash')) > 30)

      t.equal(await store.expire(key('k'), 1), true, 'expire can shorten a ttl')
      await until(async () => await store.get(key('k')) === null, EXPIRY_WAIT_MS, 'the shortened entry to expire')
      t.equal(await store.ttl(key('k')), -2)
    })

    t.test('delete and exists count keys, empty lists included', async (t) => {
      const { store, key } = await subject(t)
      for (const k of [key('1'), key('2'), key('1', 'b')]) await store.set(k, bytes(k), 60, [])
      await store.set(key('h'), bytes('h'), 60, [], 'f')
      t.equal(await store.exists([]), 0, 'exists of no keys')
      t.equal(await store.delete([]), 0, 'delete of no keys')
      t.equal(await store.exists([key('1'), key('2'), key('1', 'nope')]), 2)
      t.equal(await store.exists([key('1'), key('1')]), 2, 'a key named twice is counted twice')
      t.equal(await store.exists([key('h')]), 1, 'a hash is one key')
      t.equal(await store.delete([key('2'), key('2'), key('1', 'nope')]), 1, 'a key named twice is removed once')
      t.equal(await store.delete([key('1'), key('1', 'b'), key('h')]), 3, 'across namespaces, a hash included')
      t.equal(await store.exists([key('1'), key('2'), key('1', 'b'), key('h')]), 0)
      t.equal(await store.delete([key('1')]), 0, 'nothing left to remove')
    })

    t.test('clear: one namespace, or everything under the prefix, and nothing else', async (t) => {
      const { store, layout, key } = await subject(t)
      for (const k of [key('1'), key('2'), key('1', 'ab'), key('1', 'b'), key('1', 'a-b')]) await store.set(k, bytes(k), 60, [])
      await store.set(key('h'), bytes('h'), 60, [], 'f')
      await store.set(key('2', 'b'), bytes('tagged'), 60, ['keep'])
      // Keys a careless pattern would reach: a longer prefix, a prefix inside a longer one.
      const outside = [`${layout.prefix}x:a:1`, `x${layout.prefix}:a:1`, `${layout.prefix}-a:1`]
      // Filed under a tag, whose set is under the prefix.
      for (const k of outside) await store.set(k, bytes(k), 60, ['keep'])
      t.equal((await store.hitWindow('w', 60)).count, 1)

      t.equal(await store.clear('a'), 3, 'namespace a only, its hash included')
      t.equal(await store.exists([key('1'), key('2'), key('h')]), 0)
      t.equal(await store.exists([key('1', 'ab'), key('1', 'b'), key('1', 'a-b'), key('2', 'b')]), 4, 'ab, a-b and b untouched')
      t.equal(await store.exists(outside), outside.length, 'keys outside the prefix untouched')
      t.equal((await store.hitWindow('w', 60)).count, 2, 'rate-limit windows survive clearing a namespace')
      t.equal(await store.clear('a'), 0, 'nothing left in a')
      t.equal(await store.clear('none'), 0, 'an empty namespace')

      t.equal(await store.clear(), 4, 'everything under the prefix; only entries are counted')
      t.equal(await store.exists([key('1', 'ab'), key('1', 'b'), key('1', 'a-b'), key('2', 'b')]), 0)
      t.equal(await store.exists(outside), outside.length, 'other prefixes untouched')
      t.same(await store.invalidateTags(['keep']), { removed: 0, keys: [] }, 'clear() drops the tag sets, members outside the prefix included')
      t.equal((await store.hitWindow('w', 60)).count, 1, 'clear() resets windows')
      t.equal(await store.clear(), 0, 'nothing left under the prefix')
      t.same(await store.get(outside[0]), bytes(outside[0]), 'and the neighbours still readable')
    })

    t.test('clear removes every entry however many there are', async (t) => {
      const { store, key } = await subject(t)
      const many = Array.from({ length: 2500 }, (_, i) => key(`k${i}`, 'bulk'))
      for (let i = 0; i < many.length; i += 500) {
        await Promise.all(many.slice(i, i + 500).map((k) => store.set(k, bytes(k), 60, [])))
      }
      t.equal(await store.exists(many), many.length)
      t.equal(await store.clear('bulk'), many.length, 'more entries than one SCAN step returns')
      t.equal(await store.exists(many), 0)
    })

    t.test('tags', async (t) => {
      const { store, key } = await subject(t)
      await store.set(key('1'), bytes('1'), 60, ['t1', 't2'])
      await store.set(key('2', 'b'), bytes('2'), 60, ['t1'])
      await store.set(key('3'), bytes('3'), 60, [])
      await store.set(key('h'), bytes('h'), 60, ['t2'], 'f')
      const popped = await store.invalidateTags(['t1', 't2'])
      t.equal(popped.removed, 3, 'each entry counted once, across namespaces, a hash included')
      t.same(sorted(popped.keys), sorted([key('1'), key('2', 'b'), key('h')]), 'and each key reported once')
      t.equal(await store.exists([key('1'), key('2', 'b'), key('h')]), 0, 'they are gone')
      t.same(await store.invalidateTags(['t1']), { removed: 0, keys: [] }, 'a tag popped once is empty')
      t.equal(await store.exists([key('3')]), 1, 'untagged entries stay')
      t.same(await store.invalidateTags([]), { removed: 0, keys: [] }, 'no tags')
      t.same(await store.invalidateTags(['never-used']), { removed: 0, keys: [] }, 'an unknown tag')

      await store.set(key('4'), bytes('4'), 60, ['t1'])
      t.same(await store.invalidateTags(['t1']), { removed: 1, keys: [key('4')] }, 'an entry tagged after a pop lands in a fresh set')

      await store.set(key('5'), bytes('5'), 60, ['t3'])
      await store.delete([key('5')])
      const reported = (k: string): string[] => factory.dropsRemovedMembers === true ? [] : [k]
      t.same(await store.invalidateTags(['t3']), { removed: 0, keys: reported(key('5')) }, 'a member deleted since is not counted')

      await store.set(key('6'), bytes('6'), 60, ['t4'])
      await store.clear('a')
      t.same(await store.invalidateTags(['t4']), { removed: 0, keys: reported(key('6')) }, 'members of a cleared namespace are not counted')

      await store.set(key('8'), bytes('8'), 60, ['t6'])
      await store.set(key('8'), bytes('8 again'), 60, ['t7'])
      t.same(await store.invalidateTags(['t6']), { removed: 1, keys: [key('8')] }, 'tags are the key\'s: a second write adds to those of the first')
      await store.set(key('h2'), bytes('h'), 60, ['t8'], 'f')
      await store.set(key('h2'), bytes('plain now'), 60, [])
      t.same(await store.invalidateTags(['t8']), { removed: 1, keys: [key('h2')] }, 'and stay when a plain value replaces a hash')

      await store.set(key('7'), bytes('7'), 60, ['t5'])
      await store.clear()
      t.same(await store.invalidateTags(['t5']), { removed: 0, keys: [] }, 'clear() drops the tag sets')
    })

    t.test('rate-limit windows', async (t) => {
      const { store } = await subject(t)
      const first = await store.hitWindow('ip', 60)
      t.equal(first.count, 1, 'the first hit opens a window')
      t.ok(first.resetMs > 0 && first.resetMs <= 60_000, 'which resets within its length')
      const second = await store.hitWindow('ip', 60)
      t.equal(second.count, 2, 'every hit counts')
      t.ok(second.resetMs > 0 && second.resetMs <= first.resetMs, 'in the same window: the reset does not move')
      t.equal((await store.hitWindow('other', 10)).count, 1, 'windows are per id')

      const burst = await Promise.all(Array.from({ length: 20 }, () => store.hitWindow('burst', 10)))
      t.same(burst.map((w) => w.count).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1), 'concurrent hits each get a count of their own')

      t.equal((await store.hitWindow('short', 1)).count, 1)
      let fresh: RateWindow = { count: 0, resetMs: 0 }
      await until(async () => {
        fresh = await store.hitWindow('short', 1)
        return fresh.count === 1
      }, EXPIRY_WAIT_MS, 'a new window once the old one ended')
      t.ok(fresh.resetMs > 0 && fresh.resetMs <= 1000, 'a new window once the old one ended, as long as the first')
      t.equal((await store.hitWindow('ip', 60)).count, 3, 'a window that has not ended keeps counting')
    })

    t.test('ping, info, close', async (t) => {
      const { store, key } = await subject(t)
      await t.resolves(store.ping(), 'ping')
      await store.set(key('k'), bytes('12345'), 60, [])
      const info = await store.info()
      t.same(sorted(Object.keys(info)), sorted(Object.keys(unknownInfo(factory.kind))), 'every field of CacheInfo')
      t.match(info, { store: factory.kind, usedMemory: Number })
      t.ok((info.usedMemory ?? 0) > 0, 'memory in use')
      await t.resolves(store.close(), 'close')
      await t.resolves(store.close(), 'closing twice is harmless')
    })
  })
}

/** Replaces Date.now for one test; `advance` moves the clock. */
export function clock (t: tap.Test): { advance: (ms: number) => void } {
  const realNow = Date.now
  let now = realNow()
  Date.now = () => now
  t.teardown(() => { Date.now = realNow })
  return { advance: (ms) => { now += ms } }
}
