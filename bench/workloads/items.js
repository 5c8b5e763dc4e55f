// What the workloads serve and how they pick it: the simulated database of items, the 2 KB item
// documents, and the Zipf draw of item ids shared by the Node client (the wrk script has its own
// copy in paths.lua).
import { makeDocument, SIZES } from '../payloads.js'

/** Distinct items of W1 and W2. */
export const ITEMS = 20_000
/** Milliseconds the simulated database takes to answer. */
export const DB_DELAY_MS = 2
/** Zipf exponent of the item draw. */
export const ZIPF_S = 1

// An item document is a product list like payloads.js makes, with its version second so that a
// checker finds it in the first bytes of the body: `{"id":12,"version":3,...}`.
const ITEM_COUNT = makeDocument(SIZES.main).items.length

/** The document of one item at one version, about 2 KB of JSON, built fresh as a driver would. */
export function itemDocument (id, version) {
  const items = new Array(ITEM_COUNT)
  for (let i = 0; i < ITEM_COUNT; i++) {
    items[i] = {
      sku: `SKU-${id}-${i}`,
      title: `Product ${i} of collection ${id}`,
      price: ((i * 7919) % 10000) / 100,
      inStock: i % 3 !== 0,
      tags: ['catalog', i % 2 === 0 ? 'even' : 'odd']
    }
  }
  return { id, version, name: `Collection ${id}`, updatedAt: '2024-06-01T12:00:00.000Z', items }
}

/**
 * The in-process "database": every item starts at version 1, a write bumps it. A read takes the
 * version when it starts and answers DB_DELAY_MS later, like a query whose result travels back.
 */
export function createDatabase () {
  const versions = new Map()
  let reads = 0
  let writes = 0
  const delay = () => new Promise((resolve) => setTimeout(resolve, DB_DELAY_MS))
  return {
    async read (id) {
      reads++
      const version = versions.get(id) ?? 1
      await delay()
      return itemDocument(id, version)
    },
    /** Bumps the item's version at once and returns it; the write's round trip comes after. */
    async write (id) {
      writes++
      const version = (versions.get(id) ?? 1) + 1
      versions.set(id, version)
      await delay()
      return version
    },
    counts: () => ({ reads, writes })
  }
}

/** Cumulative probabilities of ranks 1..n under Zipf(s): cdf[k - 1] = P(rank <= k). */
export function zipfTable (n = ITEMS, s = ZIPF_S) {
  const cdf = new Float64Array(n)
  let sum = 0
  for (let k = 1; k <= n; k++) {
    sum += 1 / k ** s
    cdf[k - 1] = sum
  }
  for (let k = 0; k < n; k++) cdf[k] /= sum
  return cdf
}

/** A rank 1..n drawn from the table by binary search. */
export function drawZipf (cdf, random = Math.random) {
  const r = random()
  let lo = 0
  let hi = cdf.length - 1
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (cdf[mid] < r) lo = mid + 1
    else hi = mid
  }
  return lo + 1
}

/** A seeded generator (mulberry32), so runs draw the same sequence. */
export function seededRandom (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
