// Deterministic JSON documents of a chosen size, shared by the servers and the runner so every
// variant sends the same bytes.

/**
 * A product-list-like document whose JSON is at least `targetBytes` long (it overshoots by less
 * than one item, about 130 bytes). Its items repeat in shape, so it compresses well, as real
 * JSON APIs do.
 */
export function makeDocument (targetBytes, id = 1) {
  const doc = {
    id,
    name: `Collection ${id}`,
    updatedAt: '2024-06-01T12:00:00.000Z',
    items: []
  }
  let size = JSON.stringify(doc).length
  for (let i = 0; size < targetBytes; i++) {
    const item = {
      sku: `SKU-${id}-${i}`,
      title: `Product ${i} of collection ${id}`,
      price: ((i * 7919) % 10000) / 100,
      inStock: i % 3 !== 0,
      tags: ['catalog', i % 2 === 0 ? 'even' : 'odd']
    }
    doc.items.push(item)
    size += JSON.stringify(item).length + 1
  }
  return doc
}

/** Sizes used by the benchmark. */
export const SIZES = {
  /** The main route and getOrSet payload. */
  main: 2048,
  /** The compressible payload of the gzip variants. */
  large: 20 * 1024,
  /** Each of the 100k distinct entries of the memory step. */
  small: 300
}
