// The stored format: the envelope, compression on/off/threshold, custom serializers, values that
// cannot be serialized, oversized entries, and entries that cannot be read back (corrupt,
// foreign, truncated) written straight into Redis.
import { randomBytes } from 'node:crypto'
import { deserialize as v8Deserialize, serialize as v8Serialize } from 'node:v8'
import { gunzipSync, gzipSync } from 'node:zlib'
import t from 'tap'
import { build, innerStore, LEVEL, rawClient, sleep, until, uniquePrefix, type Scope } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'
import {
  CacheDecompressionError,
  CacheDeserializationError,
  CacheError,
  CacheSerializationError
} from '../lib/errors'
import { ENCODING_GZIP, ENCODING_PLAIN, HEADER_BYTES, KIND_RESPONSE, KIND_VALUE, MAGIC, openEnvelope } from '../lib/envelope'
import { freshness, isFresh, isFreshBytes } from '../lib/freshness'
import { Codec, jsonSerializer } from '../lib/serializer'
import type { CacheOptions, Serializer } from '../types'

let server: RedisServer
t.before(async () => { server = await startRedis() })
t.teardown(async () => { await server?.stop() })

const on = { enabled: true, threshold: 100, level: 6 }

function envelope (encoding: number, kind: number, payload: Buffer, storedAt = Date.now(), freshFor = 60): Buffer {
  const header = Buffer.alloc(HEADER_BYTES)
  header[0] = MAGIC
  header[1] = encoding
  header[2] = kind
  header.writeUIntBE(storedAt, 3, 6)
  header.writeUInt32BE(freshFor, 9)
  return Buffer.concat([header, payload])
}

t.test('Codec', async (t) => {
  t.test('the envelope header', async (t) => {
    const codec = new Codec(undefined, on)
    const { bytes, uncompressedSize } = codec.encode(Buffer.from('"hi"'), KIND_VALUE, 42, undefined, undefined, 1_700_000_000_123)
    t.equal(uncompressedSize, 0, 'small payloads are not compressed')
    t.equal(bytes[0], 0xc7)
    t.equal(bytes[1], ENCODING_PLAIN)
    t.equal(bytes[2], KIND_VALUE)
    t.equal(bytes.readUIntBE(3, 6), 1_700_000_000_123)
    t.equal(bytes.readUInt32BE(9), 42)
    t.equal(bytes.subarray(HEADER_BYTES).toString(), '"hi"', 'the payload follows the 13-byte header, not base64')
    const opened = openEnvelope(bytes, KIND_VALUE)
    t.same(opened, { encoding: ENCODING_PLAIN, kind: KIND_VALUE, storedAt: 1_700_000_000_123, freshFor: 42, payload: Buffer.from('"hi"') })
    t.same(codec.decodeValue(bytes).value, 'hi')
    t.equal(codec.encode(Buffer.from('x'), KIND_RESPONSE, 2 ** 40, false).bytes.readUInt32BE(9), 0xffffffff, 'freshFor is capped to 32 bits')
    const now = Date.now()
    const stamped = codec.encode(Buffer.from('x'), KIND_VALUE, 1, undefined).bytes.readUIntBE(3, 6)
    t.ok(stamped >= now && stamped <= Date.now(), 'storedAt defaults to now')
  })

  t.test('a head stored uncompressed in front of the payload', async (t) => {
    const codec = new Codec(undefined, { ...on, threshold: 0 })
    const head = Buffer.from('HEAD')
    const payload = Buffer.from('p'.repeat(500))
    const { bytes, uncompressedSize } = codec.encode(payload, KIND_RESPONSE, 10, undefined, head)
    t.equal(bytes[1], ENCODING_GZIP)
    t.equal(uncompressedSize, 500)
    t.same(bytes.subarray(HEADER_BYTES, HEADER_BYTES + 4), head, 'the head follows the header as is')
    t.same(gunzipSync(bytes.subarray(HEADER_BYTES + 4)), payload, 'the gzipped payload follows the head')
    const plain = codec.encode(Buffer.from('x'), KIND_RESPONSE, 10, false, head).bytes
    t.same(plain.subarray(HEADER_BYTES), Buffer.from('HEADx'))
  })

  t.test('freshness', async (t) => {
    const now = Date.now()
    t.equal(isFresh({ storedAt: now, freshFor: 10 }), true)
    t.equal(isFresh({ storedAt: now - 10_001, freshFor: 10 }), false, 'past its ttl')
    const grace = { staleWhileRevalidate: 5, staleIfError: 0 }
    t.equal(freshness({ storedAt: now - 10_001, freshFor: 10 }, grace), 'stale-while-revalidate', 'within the grace seconds')
    t.equal(freshness({ storedAt: now - 15_001, freshFor: 10 }, grace), 'expired')
    const codec = new Codec(undefined, on)
    t.equal(isFreshBytes(codec.encode(Buffer.from('1'), KIND_VALUE, 10, false).bytes), true)
    t.equal(isFreshBytes(codec.encode(Buffer.from('1'), KIND_VALUE, 10, false, undefined, now - 11_000).bytes), false)
    t.equal(isFreshBytes(Buffer.from('foreign bytes here')), false, 'foreign bytes are not fresh')
    t.equal(isFreshBytes(Buffer.from([MAGIC, 0, 0])), false, 'truncated bytes are not fresh')
  })

  t.test('compression threshold, compress: false, disabled, incompressible', async (t) => {
    const codec = new Codec(undefined, on)
    const at = Buffer.from('a'.repeat(100))
    const under = Buffer.from('a'.repeat(99))
    const gz = codec.encode(at, KIND_VALUE, 1, undefined)
    t.equal(gz.bytes[1], ENCODING_GZIP, 'at the threshold: gzip')
    t.equal(gz.uncompressedSize, 100)
    t.ok(gz.bytes.length < HEADER_BYTES + 100)
    t.same(Codec.plain(openEnvelope(gz.bytes, KIND_VALUE)), at, 'gunzips back')
    t.equal(codec.encode(under, KIND_VALUE, 1, undefined).bytes[1], ENCODING_PLAIN, 'under the threshold: plain')
    t.equal(codec.encode(at, KIND_VALUE, 1, true).bytes[1], ENCODING_GZIP, 'compress: true is the default rule')
    t.equal(codec.encode(at, KIND_VALUE, 1, false).bytes[1], ENCODING_PLAIN, 'compress: false')
    const off = new Codec(undefined, { ...on, enabled: false })
    t.equal(off.encode(at, KIND_VALUE, 1, true).bytes[1], ENCODING_PLAIN, 'compression disabled')
    const noise = randomBytes(4096)
    const kept = codec.encode(noise, KIND_VALUE, 1, undefined)
    t.equal(kept.bytes[1], ENCODING_PLAIN, 'incompressible data is kept plain')
    t.equal(kept.uncompressedSize, 0)
    t.same(kept.bytes.subarray(HEADER_BYTES), noise)
    const zero = new Codec(undefined, { ...on, threshold: 0 })
    t.equal(zero.encode(Buffer.from('a'.repeat(30)), KIND_VALUE, 1, undefined).bytes[1], ENCODING_GZIP, 'threshold 0 compresses whatever gzip shrinks')
  })

  t.test('a zlib failure is a CacheCompressionError', async (t) => {
    // zlib fails on an in-memory Buffer only in extremis; an out-of-range level makes it fail now.
    const broken = new Codec(undefined, { enabled: true, threshold: 0, level: 42 })
    t.throws(() => broken.encode(Buffer.from('x'.repeat(100)), KIND_VALUE, 1, undefined), { name: 'CacheCompressionError', code: 'CACHE_COMPRESSION', message: /Cannot compress value/ })
    t.equal(broken.encode(Buffer.from('x'), KIND_VALUE, 1, false).bytes[1], ENCODING_PLAIN, 'not reached without compression')
  })

  t.test('gzip levels', async (t) => {
    const payload = Buffer.from(JSON.stringify(Array.from({ length: 2000 }, (_, i) => ({ i, name: `item ${i % 37}` }))))
    const fast = new Codec(undefined, { ...on, level: 1 }).encode(payload, KIND_VALUE, 1, undefined).bytes
    const small = new Codec(undefined, { ...on, level: 9 }).encode(payload, KIND_VALUE, 1, undefined).bytes
    t.ok(small.length < fast.length, `level 9 (${small.length}) is smaller than level 1 (${fast.length})`)
  })

  t.test('reading back fails with typed errors', async (t) => {
    const codec = new Codec(undefined, on)
    const good = codec.encode(Buffer.from('{"a":1}'), KIND_VALUE, 1, undefined).bytes
    t.throws(() => openEnvelope(Buffer.from('hello world, not ours'), KIND_VALUE), { name: 'CacheDeserializationError', message: /not a fastify-redis-cache entry/ })
    t.throws(() => openEnvelope(good.subarray(0, HEADER_BYTES - 1), KIND_VALUE), CacheDeserializationError, 'truncated header')
    t.throws(() => openEnvelope(Buffer.alloc(0), KIND_VALUE), CacheDeserializationError, 'empty')
    t.throws(() => openEnvelope(envelope(7, KIND_VALUE, Buffer.from('x')), KIND_VALUE), { message: /unknown encoding 7/ })
    t.throws(() => openEnvelope(envelope(ENCODING_PLAIN, KIND_RESPONSE, Buffer.from('x')), KIND_VALUE), { message: /kind 1, expected 0/ })
    t.throws(() => Codec.plain(openEnvelope(envelope(ENCODING_GZIP, KIND_VALUE, Buffer.from('not gzip')), KIND_VALUE)), { name: 'CacheDecompressionError', code: 'CACHE_DECOMPRESSION' })
    const truncatedGzip = gzipSync(Buffer.from('a'.repeat(500))).subarray(0, 10)
    t.throws(() => codec.decodeValue(envelope(ENCODING_GZIP, KIND_VALUE, truncatedGzip)), CacheDecompressionError)
    t.throws(() => codec.decodeValue(envelope(ENCODING_PLAIN, KIND_VALUE, Buffer.from('{not json'))), { name: 'CacheDeserializationError', code: 'CACHE_DESERIALIZATION', message: /Cannot deserialize stored value/ })
    t.same(codec.decodeValue(good).value, { a: 1 })
  })

  t.test('serializing fails with CacheSerializationError', async (t) => {
    const codec = new Codec(undefined, on)
    const circular: Record<string, unknown> = {}
    circular.self = circular
    for (const [what, value] of [['circular', circular], ['BigInt', 10n], ['a function', () => 1], ['a symbol', Symbol('s')]] as const) {
      t.throws(() => codec.serialize(value), { name: 'CacheSerializationError', code: 'CACHE_SERIALIZATION', message: /Cannot serialize value/ }, what)
    }
    const numeric = new Codec({ serialize: () => 5 as unknown as string, deserialize: () => null }, on)
    t.throws(() => numeric.serialize('x'), { name: 'CacheSerializationError', message: /Serializer returned number, expected a Buffer or a string/ })
    const binary = new Codec({ serialize: () => Buffer.from([1, 2, 3]), deserialize: (b) => [...b] }, on)
    t.same(binary.serialize('x'), Buffer.from([1, 2, 3]), 'a Buffer is used as is')
    t.same(binary.deserialize(Buffer.from([4])), [4])
    t.equal(codec.serializer, jsonSerializer, 'JSON by default')
  })

  t.test('jsonSerializer', async (t) => {
    t.equal(jsonSerializer.serialize({ a: [1] }), '{"a":[1]}')
    t.same(jsonSerializer.deserialize(Buffer.from('{"a":[1]}')), { a: [1] })
    t.throws(() => jsonSerializer.serialize(undefined), { name: 'TypeError', message: 'a undefined is not JSON' })
  })
})

t.test('stored bytes in Redis', async (t) => {
  const setup = async (t: Scope, options: CacheOptions = {}): Promise<Awaited<ReturnType<typeof build>> & { raw: ReturnType<typeof rawClient> }> => {
    const built = await build(t, { redis: { url: server.url }, prefix: uniquePrefix(), ...options })
    return { ...built, raw: rawClient(t, server.url) }
  }

  t.test('over the threshold: gzip; under it: plain', async (t) => {
    const { cache, raw } = await setup(t, { compression: { threshold: 200 } })
    const big = { text: 'lorem ipsum '.repeat(100) }
    await cache.set('big', big)
    const stored = await raw.getBuffer(cache.redisKey('big'))
    t.ok(stored !== null)
    t.equal(stored?.[0], 0xc7, 'magic byte')
    t.equal(stored?.[1], 1, 'gzip')
    t.equal(stored?.[2], 0, 'a value')
    t.ok((stored?.length ?? 0) < JSON.stringify(big).length)
    t.same(await cache.get('big'), big)

    await cache.set('small', { text: 'short' })
    const plain = await raw.getBuffer(cache.redisKey('small'))
    t.equal(plain?.[0], 0xc7)
    t.equal(plain?.[1], 0, 'plain')
    t.equal(plain?.subarray(HEADER_BYTES).toString(), '{"text":"short"}', 'readable JSON after the header, not base64')

    await cache.set('exact', 'x'.repeat(198)) // 200 bytes serialized, quotes included
    t.equal((await raw.getBuffer(cache.redisKey('exact')))?.[1], 1, 'at the threshold: gzip')
    await cache.set('below', 'x'.repeat(197))
    t.equal((await raw.getBuffer(cache.redisKey('below')))?.[1], 0, 'one byte under: plain')

    await cache.set('nozip', big, { compress: false })
    t.equal((await raw.getBuffer(cache.redisKey('nozip')))?.[1], 0, 'compress: false')
    t.same(await cache.get('nozip'), big)
    await cache.getOrSet('nozip2', () => big, { compress: false })
    t.equal((await raw.getBuffer(cache.redisKey('nozip2')))?.[1], 0, 'getOrSet compress: false')
  })

  t.test('default threshold is 1024 bytes', async (t) => {
    const { cache, raw } = await setup(t)
    await cache.set('a', 'y'.repeat(1022))
    await cache.set('b', 'y'.repeat(1021))
    t.equal((await raw.getBuffer(cache.redisKey('a')))?.[1], 1)
    t.equal((await raw.getBuffer(cache.redisKey('b')))?.[1], 0)
  })

  for (const compression of [false, { enabled: false }] as const) {
    t.test(`compression disabled (${JSON.stringify(compression)})`, async (t) => {
      const { cache, raw } = await setup(t, { compression })
      await cache.set('big', 'z'.repeat(5000))
      t.equal((await raw.getBuffer(cache.redisKey('big')))?.[1], 0)
      t.equal(cache.getStatistics().compressionRatio, 1)
    })
  }

  t.test('CACHE_COMPRESSION_ENABLED=false and CACHE_COMPRESSION_THRESHOLD apply', async (t) => {
    process.env.CACHE_COMPRESSION_THRESHOLD = '10'
    t.teardown(() => { delete process.env.CACHE_COMPRESSION_THRESHOLD })
    const { cache, raw } = await setup(t)
    await cache.set('k', 'w'.repeat(60))
    t.equal((await raw.getBuffer(cache.redisKey('k')))?.[1], 1)
    process.env.CACHE_COMPRESSION_ENABLED = 'false'
    t.teardown(() => { delete process.env.CACHE_COMPRESSION_ENABLED })
    const off = await setup(t)
    await off.cache.set('k', 'w'.repeat(5000))
    t.equal((await off.raw.getBuffer(off.cache.redisKey('k')))?.[1], 0)
  })

  t.test('incompressible data is kept plain', async (t) => {
    const binary: Serializer = { serialize: (v) => v as Buffer, deserialize: (b) => b }
    const { cache, raw } = await setup(t, { serializer: binary, compression: { threshold: 10 } })
    const noise = randomBytes(5000)
    await cache.set('noise', noise)
    const stored = await raw.getBuffer(cache.redisKey('noise'))
    t.equal(stored?.[1], 0)
    t.same(stored?.subarray(HEADER_BYTES), noise, 'binary-safe')
    t.same(await cache.get('noise'), noise)
    t.equal(cache.getStatistics().compressedBytesIn, 0, 'not counted as compressed')
  })

  t.test('a custom serializer', async (t) => {
    const v8: Serializer = { serialize: (value) => v8Serialize(value), deserialize: (data) => v8Deserialize(data) }
    const { cache, raw } = await setup(t, { serializer: v8 })
    const value = { map: new Map([['a', 1n]]), set: new Set([1, 2]), date: new Date(5), big: 2n ** 70n }
    t.equal(await cache.set('k', value), true)
    t.same(await cache.get('k'), value)
    t.same((await raw.getBuffer(cache.redisKey('k')))?.subarray(HEADER_BYTES), v8Serialize(value))
    const failing: Serializer = { serialize: () => 'ok', deserialize: () => { throw new Error('cannot read') } }
    const other = await setup(t, { serializer: failing })
    await other.cache.set('k', 1)
    t.equal(await other.cache.get('k'), null, 'a deserializer that throws makes a miss')
    t.equal(other.cache.getStatistics().errors, 1)
  })

  t.test('unserializable values are not stored', async (t) => {
    const circular: Record<string, unknown> = { a: 1 }
    circular.self = circular
    const values: Array<[string, unknown]> = [['circular', circular], ['BigInt', { n: 1n }], ['a function', () => 1], ['a symbol', Symbol('s')]]

    const { cache, raw, logs } = await setup(t)
    for (const [what, value] of values) {
      t.equal(await cache.set(what, value), false, what)
      t.equal(await raw.exists(cache.redisKey(what)), 0, `${what} not stored`)
    }
    t.match(cache.getStatistics(), { errors: values.length, sets: 0, bytesWritten: 0 })
    t.ok(logs.find(/set failed: Cannot serialize value/, LEVEL.warn).length >= 1, 'logged')
    t.equal(await cache.getOrSet('g', () => 10n), 10n, 'getOrSet still answers with the value')
    t.equal(await raw.exists(cache.redisKey('g')), 0)

    const strict = await setup(t, { throwOnError: true })
    for (const [what, value] of values) {
      const err = await t.rejects(strict.cache.set(what, value), CacheSerializationError, what) as unknown as CacheSerializationError
      t.ok(err instanceof CacheError)
      t.equal(err.statusCode, 500)
    }
    await t.rejects(strict.cache.getOrSet('g', () => 10n), CacheSerializationError)
    t.equal(strict.cache.getStatistics().errors, values.length + 1)
  })

  t.test('a compression failure: set returns false, counted; thrown with throwOnError', async (t) => {
    const breakZlib = (codec: Codec): void => {
      (codec as unknown as { compression: { level: number } }).compression.level = 42
    }
    const { cache, raw } = await setup(t, { compression: { threshold: 10 } })
    breakZlib(cache.core.codec)
    t.equal(await cache.set('k', 'x'.repeat(100)), false)
    t.equal(await raw.exists(cache.redisKey('k')), 0)
    t.equal(await cache.set('small', 'x'), true, 'values under the threshold are stored')
    t.match(cache.getStatistics(), { errors: 1, sets: 1 })
    const strict = await setup(t, { compression: { threshold: 10 }, throwOnError: true })
    breakZlib(strict.cache.core.codec)
    await t.rejects(strict.cache.set('k', 'x'.repeat(100)), { name: 'CacheCompressionError', statusCode: 500 })
  })

  t.test('maxEntrySize', async (t) => {
    const { cache, raw, logs } = await setup(t, { maxEntrySize: 100, compression: { threshold: 50 } })
    t.equal(await cache.set('big', randomBytes(200).toString('hex')), false, 'over maxEntrySize')
    t.equal(await raw.exists(cache.redisKey('big')), 0)
    t.match(cache.getStatistics(), { oversized: 1, sets: 0, errors: 0 })
    t.equal(logs.find('larger than maxEntrySize', LEVEL.warn).length, 1)
    t.equal(await cache.set('squeezed', 'a'.repeat(1000)), false, 'the size before compression counts: nothing is gzipped for nothing')
    t.equal(cache.getStatistics().compressedBytesIn, 0, 'it was not even gzipped')
    t.equal(await cache.set('fits', 'b'.repeat(85)), true, '87 + 13 = 100 bytes: exactly maxEntrySize')
    t.equal(await cache.set('over', 'b'.repeat(86), { compress: false }), false, '101 bytes')
    // Bytes, not characters: '€' is 3 bytes in UTF-8.
    t.equal(await cache.set('euros', '€'.repeat(28), { compress: false }), true, '86 + 13 = 99 bytes')
    t.equal(await cache.set('more-euros', '€'.repeat(29), { compress: false }), false, '31 characters, but 89 + 13 = 102 bytes')
    t.equal(cache.getStatistics().oversized, 4)
    t.equal(await cache.getOrSet('g', () => 'c'.repeat(500), { compress: false }), 'c'.repeat(500))
    t.equal(await cache.exists('g'), 0, 'getOrSet answers but does not store')
    const strict = await setup(t, { maxEntrySize: 20, throwOnError: true })
    t.equal(await strict.cache.set('k', 'x'.repeat(100), { compress: false }), false, 'not an error, even with throwOnError')
  })

  t.test('entries that cannot be read back are misses, deleted and counted', async (t) => {
    const valid = new Codec(undefined, on).encode(Buffer.from('{"ok":true}'), KIND_VALUE, 60, false).bytes
    const cases: Array<[string, Buffer, new (...args: never[]) => CacheError]> = [
      ['foreign bytes', Buffer.from('written by another program'), CacheDeserializationError],
      ['an empty value', Buffer.alloc(0), CacheDeserializationError],
      ['a truncated envelope', valid.subarray(0, 8), CacheDeserializationError],
      ['an unknown encoding', envelope(9, KIND_VALUE, Buffer.from('{}')), CacheDeserializationError],
      ['a route response entry', envelope(ENCODING_PLAIN, KIND_RESPONSE, Buffer.from('{}')), CacheDeserializationError],
      ['bad gzip', envelope(ENCODING_GZIP, KIND_VALUE, Buffer.from('definitely not gzip')), CacheDecompressionError],
      ['truncated gzip', envelope(ENCODING_GZIP, KIND_VALUE, gzipSync(Buffer.from('"abc"')).subarray(0, 12)), CacheDecompressionError],
      ['bad JSON', envelope(ENCODING_PLAIN, KIND_VALUE, Buffer.from('{"truncated": ')), CacheDeserializationError],
      ['gzipped bad JSON', envelope(ENCODING_GZIP, KIND_VALUE, gzipSync(Buffer.from('nope'))), CacheDeserializationError]
    ]
    for (const throwOnError of [false, true]) {
      t.test(`throwOnError: ${throwOnError}`, async (t) => {
        const { cache, raw, logs } = await setup(t, { throwOnError })
        for (const [i, [what, bytes, ErrorClass]] of cases.entries()) {
          const key = `k${i}`
          const full = cache.redisKey(key)
          await raw.set(full, bytes)
          if (throwOnError) {
            await t.rejects(cache.get(key), ErrorClass, what)
          } else {
            t.equal(await cache.get(key), null, `${what}: a miss`)
          }
          await until(async () => await raw.exists(full) === 0, 2000, `${what} to be deleted`)
          t.pass(`${what}: deleted`)
          t.equal(cache.getStatistics().errors, i + 1, `${what}: counted`)
        }
        t.equal(cache.getStatistics().misses, cases.length)
        t.equal(cache.getStatistics().hits, 0)
        t.ok(logs.find('get failed', LEVEL.warn).length >= 1, 'logged')

        await raw.set(cache.redisKey('heal'), 'garbage')
        if (throwOnError) {
          await t.rejects(cache.getOrSet('heal', () => 'fresh'), CacheDeserializationError)
        } else {
          t.equal(await cache.getOrSet('heal', () => 'fresh'), 'fresh', 'getOrSet runs the callback over a corrupt entry')
          t.equal(await cache.get('heal'), 'fresh', 'and replaces it')
        }
      })
    }
  })

  t.test('an unreadable entry appearing while getOrSet waits for another instance is not served', async (t) => {
    const { cache, raw } = await setup(t, { lock: { ttl: 5000, wait: 2000 } })
    const full = cache.redisKey('k')
    // Another instance holds the single-flight lock for this entry...
    await raw.set(`${cache.core.layout.lockPrefix}${full}`, 'another instance', 'PX', 5000)
    let runs = 0
    const pending = cache.getOrSet('k', () => { runs++; return 'mine' })
    await sleep(50)
    // ...and publishes a fresh entry that cannot be read back.
    await raw.set(full, envelope(ENCODING_PLAIN, KIND_VALUE, Buffer.from('{"broken": ')))
    t.equal(await pending, 'mine', 'the callback runs instead')
    t.equal(runs, 1)
    t.equal(await cache.get('k'), 'mine', 'and its result replaces the unreadable entry')
  })

  t.test('a corrupt entry is a miss on the memory store too', async (t) => {
    const { cache } = await build(t, { redis: false })
    await innerStore(cache).set(cache.redisKey('k'), Buffer.from('junk'), 60, [])
    t.equal(await cache.get('k'), null)
    t.equal(await cache.exists('k'), 0)
    t.equal(cache.getStatistics().errors, 1)
  })
})
