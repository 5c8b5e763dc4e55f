// The memory store is bounded: with far more written than maxBytes, the bytes it holds (its
// indexes included) stay within it, the least recently used entries go first, every eviction is
// counted, and the bookkeeping beside the entries (hash fields, tags, rate-limit windows) goes
// with them or is capped. Through the plugin (`redis: false`) too. The contract it shares with
// the Redis store is test/stores.test.ts.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { KeyLayout } from '../lib/keys'
import { Statistics } from '../lib/statistics'
import { MAX_WINDOWS, MemoryStore } from '../lib/stores/memory'
import { routeApp } from './helpers/route-app'
import { clock } from './helpers/store-suite'

const KiB = 1024
const MiB = 1024 * KiB
const layout = new KeyLayout('m')
const key = (name: string): string => layout.entry(name, 'a')
const body = (fill: string, size = 2 * KiB): Buffer => Buffer.alloc(size, fill)
const names = (prefix: string, count: number): string[] => Array.from({ length: count }, (_, i) => `${prefix}${String(i).padStart(5, '0')}`)

function storeOf (t: tap.Test, maxBytes = 1 * MiB, maxEntries = 100_000): { store: MemoryStore, stats: Statistics } {
  const stats = new Statistics()
  const store = new MemoryStore(layout, { maxEntries, maxBytes }, stats)
  t.teardown(() => store.close())
  return { store, stats }
}

async function present (store: MemoryStore, keys: readonly string[]): Promise<string[]> {
  const found: string[] = []
  // exists, not get: a read would count as a use.
  for (const k of keys) if (await store.exists([k]) === 1) found.push(k)
  return found
}

t.test('thousands of 2 KB entries in 1 MiB: within maxBytes after every write, each eviction counted', async (t) => {
  const { store, stats } = storeOf(t)
  const keys = names('k', 5000).map(key)
  let worst = 0
  for (const k of keys) {
    await store.set(k, body('x'), 60, [])
    worst = Math.max(worst, store.describe().bytes)
  }
  const { entries, bytes } = store.describe()
  t.ok(worst <= 1 * MiB, `never over maxBytes (at most ${worst} bytes for ${keys.length * 2 * KiB} written)`)
  t.ok(entries > 250, `as many as fit are held (${entries})`)
  t.equal(stats.evictions + entries, keys.length, 'every entry not held was evicted, and counted')
  t.same(await present(store, keys.slice(-entries)), keys.slice(-entries), 'the newest are the ones held')
  t.equal((await store.info()).usedMemory, bytes, 'info reports the bytes held')
})

t.test('least recently used first: entries read survive a wave that evicts untouched ones', async (t) => {
  const { store, stats } = storeOf(t)
  const cold = names('c', 250).map(key)
  const hot = cold.splice(0, 50)
  for (const k of [...hot, ...cold]) await store.set(k, body('o'), 60, [])
  t.equal(stats.evictions, 0, 'they all fit')
  for (const k of hot) t.ok((await store.get(k))?.equals(body('o')))

  const wave = names('w', 200).map(key)
  for (const k of wave) await store.set(k, body('w'), 60, [])
  t.ok(stats.evictions > 50, `the wave evicted (${stats.evictions})`)
  t.same(await present(store, hot), hot, 'every entry read recently survived, though written first')
  const coldLeft = await present(store, cold)
  t.same(coldLeft, cold.slice(cold.length - coldLeft.length), 'the untouched ones went oldest first')
  t.same(await present(store, wave), wave, 'and the wave is held')
  t.equal(stats.evictions, cold.length - coldLeft.length, 'each eviction counted')
  t.ok(store.describe().bytes <= 1 * MiB)
})

t.test('tags of evicted and deleted entries go with them', async (t) => {
  const { store, stats } = storeOf(t)
  // A flood of entries, each under a tag of its own and a shared one.
  const keys = names('t', 3000).map(key)
  let worst = 0
  for (const [i, k] of keys.entries()) {
    await store.set(k, body('t'), 60, [`own-${i}`, 'all'])
    worst = Math.max(worst, store.describe().bytes)
  }
  t.ok(worst <= 1 * MiB, `the indexes are counted within maxBytes (at most ${worst})`)
  t.ok(stats.evictions > 2000)
  t.same(await store.invalidateTags(['own-0']), { removed: 0, keys: [] }, 'an evicted entry left its tags')
  const { entries } = store.describe()
  t.same(await store.invalidateTags([`own-${keys.length - 1}`]), { removed: 1, keys: [keys.at(-1)] }, 'a held one is still filed')
  t.equal((await store.invalidateTags(['all'])).removed, entries - 1, 'the shared tag holds only the entries still held')
  t.equal(store.indexBytes, 0, 'nothing left in the indexes')

  await store.set(key('d'), body('d'), 60, ['same', 'same'])
  await store.set(key('d'), body('d'), 60, ['same'])
  await store.delete([key('d')])
  t.same(await store.invalidateTags(['same']), { removed: 0, keys: [] }, 'a deleted entry left its tags')
  t.equal(store.indexBytes, 0)
})

t.test('a key whose tags alone outgrow the store goes, tags and all', async (t) => {
  const { store, stats } = storeOf(t)
  const many = Array.from({ length: 5000 }, (_, i) => `tag-${i}`)
  await store.set(key('other'), body('o'), 60, [])
  await store.set(key('k'), body('k'), 60, many)
  t.ok(store.describe().bytes <= 1 * MiB)
  t.equal(await store.exists([key('k'), key('other')]), 0, 'evicted, with what was evicted to make room')
  t.equal(stats.evictions, 2)
  t.equal(store.indexBytes, 0)

  // Tags that fit, then a larger value: it cannot stay beside them, and goes at once.
  await store.set(key('k'), body('k'), 60, many.slice(0, 2000))
  t.equal(await store.exists([key('k')]), 1)
  await store.set(key('k'), body('k', 400 * KiB), 60, [])
  t.equal(await store.exists([key('k')]), 0)
  t.equal(stats.evictions, 3, 'counted once')
  t.equal(store.indexBytes, 0)
  t.ok(store.describe().bytes <= 1 * MiB)
})

t.test('a value too large for the store is not kept, and counts as evicted', async (t) => {
  const { store, stats } = storeOf(t)
  const huge = body('h', 1 * MiB)
  await store.set(key('v'), body('v'), 60, ['v'])
  await store.set(key('v'), huge, 60, ['v'])
  t.equal(await store.get(key('v')), null, 'the old value is gone too')
  t.equal(stats.evictions, 1)
  t.same(await store.invalidateTags(['v']), { removed: 0, keys: [] }, 'and the key left its tags')

  await store.set(key('h'), body('a'), 60, ['h'], 'a')
  await store.set(key('h'), huge, 60, ['h'], 'b')
  t.equal(await store.exists([key('h')]), 1, 'a hash keeps its other fields')
  t.equal(await store.get(key('h'), 'b'), null)
  t.ok((await store.get(key('h'), 'a'))?.equals(body('a')))
  await store.set(key('only'), huge, 60, ['h'], 'b')
  t.equal(await store.exists([key('only')]), 0, 'a hash with no other field is gone')
  t.equal(stats.evictions, 3)
  t.same(await store.invalidateTags(['h']), { removed: 1, keys: [key('h')] })
  t.equal(store.indexBytes, 0)
})

t.test('a hash\'s fields are entries: evicted one by one, the hash lives while one does', async (t) => {
  const { store, stats } = storeOf(t)
  const fields = names('f', 2000)
  for (const field of fields) await store.set(key('h'), body('f'), 60, ['h'], field)
  t.ok(store.describe().bytes <= 1 * MiB)
  const { entries } = store.describe()
  t.equal(stats.evictions + entries, fields.length, 'each field evicted counted')
  t.equal(await store.get(key('h'), fields[0]), null, 'the oldest field went')
  t.ok((await store.get(key('h'), fields.at(-1) as string))?.equals(body('f')), 'the newest is held')
  t.equal(await store.exists([key('h')]), 1)

  // A wave of other entries takes the rest of the hash, and the key with its tags.
  for (const k of names('w', 1000).map(key)) await store.set(k, body('w'), 60, [])
  t.equal(await store.exists([key('h')]), 0)
  t.same(await store.invalidateTags(['h']), { removed: 0, keys: [] })
  t.equal(store.indexBytes, 0)
})

t.test('hashes and expiry, with a controlled clock', async (t) => {
  const time = clock(t)
  const { store } = storeOf(t)
  await store.set(key('h'), body('a'), 10, ['h'], 'a')
  await store.set(key('h'), body('b'), 20, [], 'b')
  time.advance(15_000)
  t.ok((await store.get(key('h'), 'a'))?.equals(body('a')), 'a field lives as long as the hash')
  t.equal(await store.ttl(key('h')), 5)
  time.advance(5000)
  t.equal(await store.expire(key('h'), 100), false, 'an expired hash cannot be revived')
  t.equal(await store.ttl(key('h')), -2)
  t.same(await store.invalidateTags(['h']), { removed: 0, keys: [] }, 'it left its tags')

  await store.set(key('h'), body('c'), 60, [], 'c')
  await store.set(key('h'), body('d'), 30, [], 'd')
  t.equal(await store.ttl(key('h')), 60, 'a new hash, not extended by the expired one')
  t.equal(await store.expire(key('h'), 5), true, 'expire acts on every field')
  time.advance(5000)
  t.equal(await store.get(key('h'), 'd'), null)
  t.equal(await store.exists([key('h')]), 0)
  t.equal(store.indexBytes, 0)
})

t.test('rate-limit windows are capped: beyond the cap, the oldest goes', async (t) => {
  const { store } = storeOf(t)
  for (let i = 0; i < MAX_WINDOWS + 10; i++) await store.hitWindow(`id${i}`, 60)
  t.equal((await store.hitWindow('id10', 60)).count, 2, 'the oldest kept still counts')
  t.equal((await store.hitWindow('id9', 60)).count, 1, 'the ten oldest were dropped')
  t.equal((await store.hitWindow(`id${MAX_WINDOWS + 9}`, 60)).count, 2, 'the newest kept')
})

t.test('through the plugin: redis: false, memory: { maxBytes }', async (t) => {
  const maxBytes = 1 * MiB
  const declare = (app: FastifyInstance): void => {
    app.get('/items/:id', { config: { cache: { ttl: 60 } } }, async (request) => ({ id: (request.params as { id: string }).id, text: 'x'.repeat(2 * KiB) }))
  }
  const { app, cache } = await routeApp(t, { redis: false, memory: { maxBytes }, compression: false }, declare)
  t.equal(cache.core.stack.kind, 'memory')
  const store = cache.core.stack.store as MemoryStore
  t.match(store.describe(), { maxBytes, maxEntries: 100_000 }, 'the bounds given, maxEntries by default')

  let lastEvictions = 0
  for (let wave = 0; wave < 3; wave++) {
    for (let i = 0; i < 600; i++) {
      const res = await app.inject(`/items/${wave}-${i}`)
      t.equal(res.statusCode, 200)
    }
    const hot = await app.inject('/items/hot')
    t.same(hot.json(), { id: 'hot', text: 'x'.repeat(2 * KiB) }, 'a route keeps answering')
    const { evictions } = cache.getStatistics()
    t.ok(evictions > lastEvictions, `evictions grow (${evictions})`)
    lastEvictions = evictions
    t.ok(store.describe().bytes <= maxBytes)
  }
  t.equal((await app.inject('/items/hot')).headers['x-cache'], 'HIT', 'a recently used entry is served from the store')
  t.equal(await cache.set('k', { v: 1 }), true)
  t.same(await cache.get('k'), { v: 1 })
})

t.test('the process does not grow with what is written, only with what is held', async (t) => {
  // Noisy by nature: released segments and garbage wait for the GC (V8 lets tens of MiB of dead
  // buffers pile up before it collects), so the bound is very generous. Before the store was
  // bounded, 60,000 2 KB entries grew the process by about 1.4 GiB; here writing fifty times
  // maxBytes must grow it by less than eight times maxBytes.
  const maxBytes = 32 * MiB
  const { store, stats } = storeOf(t, maxBytes)
  const value = body('m', 16 * KiB)
  const before = process.memoryUsage().rss
  const writes = Math.ceil(50 * maxBytes / value.length)
  for (let i = 0; i < writes; i++) await store.set(key(`r${i}`), value, 60, [])
  const grown = process.memoryUsage().rss - before
  t.ok(grown < 8 * maxBytes, `grew by ${(grown / MiB).toFixed(1)} MiB after writing ${(writes * value.length / MiB).toFixed(0)} MiB`)
  t.ok(store.describe().bytes <= maxBytes)
  t.ok(stats.evictions > writes / 2)
})
