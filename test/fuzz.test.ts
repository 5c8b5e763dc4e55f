// Property-based fuzzing (fast-check) of what users and clients can throw at the cache: keys and
// namespaces (unicode, glob characters, control characters, very long), URLs and query strings
// sent raw over TCP (huge, malformed percent-encoding, repeated parameters), and arbitrary bytes
// found in Redis. Never a crash, never a 5xx caused by the cache, never a key outside the prefix.
import net from 'node:net'
import t from 'tap'
import fc from 'fast-check'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import fastifyRedisCache, { CacheKeyError } from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { decodeEntry, encodeHead } from '../lib/route-cache/http-entry'
import { KIND_RESPONSE, KIND_VALUE } from '../lib/envelope'
import { Codec } from '../lib/serializer'
import { captureLogs, rawClient, uniquePrefix, until } from './helpers/app'
import { startRedis, type RedisServer } from './helpers/redis-server'

let server: RedisServer
let raw: Redis
// One Redis for this file only: every key in it must be under a prefix of ours.
const prefix = uniquePrefix('fuzz')
t.before(async () => {
  server = await startRedis()
  raw = rawClient(t, server.url)
})
t.teardown(() => server?.stop())

interface Listening {
  app: FastifyInstance
  cache: CacheManager
  port: number
  runs: () => number
}

async function listening (t: tap.Test): Promise<Listening> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'fatal', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: { url: server.url }, prefix, routes: false })
  let runs = 0
  app.get('/items', { config: { cache: { ttl: 60, namespace: 'items' } } }, async () => { runs++; return { items: [1, 2, 3] } })
  app.get('/items/:id', { config: { cache: { ttl: 60, namespace: 'items', tags: (request) => [`item:${(request.params as { id: string }).id}`] } } }, async (request) => {
    runs++
    return { id: (request.params as { id: string }).id }
  })
  // A key built from the query: whatever a client sends becomes a cache key.
  app.get('/search', { config: { cache: { ttl: 60, namespace: 'search', key: (request) => (request.query as Record<string, string>).q } } }, async (request) => {
    runs++
    return { q: (request.query as Record<string, unknown>).q ?? null }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { app, cache: app.cache as CacheManager, port: (app.server.address() as { port: number }).port, runs: () => runs }
}

/** Sends a request line as raw bytes (no client-side validation) and reads the status code. */
function rawGet (port: number, target: Buffer): Promise<{ status: number, head: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    const socket = net.connect({ port, host: '127.0.0.1' })
    const finish = (): void => {
      clearTimeout(timer)
      socket.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      const match = /^HTTP\/1\.1 (\d{3})/.exec(text)
      resolve({ status: match === null ? 0 : Number(match[1]), head: text.slice(0, text.indexOf('\r\n\r\n')) })
    }
    const timer = setTimeout(finish, 3000)
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', finish)
    socket.on('end', finish)
    socket.on('connect', () => {
      socket.write(Buffer.concat([Buffer.from('GET '), target, Buffer.from(' HTTP/1.1\r\nHost: fuzz\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n')]))
    })
  })
}

/** Every key in this Redis, scanned. */
async function allKeys (): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await raw.scan(cursor, 'COUNT', 1000)
    cursor = next
    keys.push(...batch)
  } while (cursor !== '0')
  return keys
}

async function nothingOutsideThePrefix (t: tap.Test): Promise<void> {
  const outside = (await allKeys()).filter((key) => !key.startsWith(`${prefix}:`))
  t.same(outside, [], 'no key outside the prefix')
}

// Keys of every kind: unicode, glob and control characters, separators, very long ones.
const hostileChars = fc.constantFrom('*', '?', '[', ']', '\\', '^', '-', ':', '#', '{', '}', '\r', '\n', '\0', '\t', ' ', '%', '\u00ff', '\u2028', '\ud83d\ude00', '\ud800')
const hostileString = (maxLength: number): fc.Arbitrary<string> => fc.oneof(
  fc.string({ unit: 'binary', maxLength }),
  fc.string({ unit: 'grapheme', maxLength }),
  fc.string({ unit: hostileChars, maxLength }),
  fc.array(fc.oneof(hostileChars, fc.string({ unit: 'grapheme-ascii', maxLength: 4 })), { maxLength }).map((parts) => parts.join(''))
)
const anyKey = fc.oneof(
  { weight: 6, arbitrary: hostileString(40) },
  { weight: 2, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1000, maxLength: 1100 }) },
  { weight: 1, arbitrary: fc.string({ unit: hostileChars, minLength: 300, maxLength: 400 }) },
  { weight: 1, arbitrary: fc.constant('') }
)

t.test('any key round-trips under the prefix or is refused with CacheKeyError', async (t) => {
  const { cache } = await listening(t)
  let stored = 0
  let refused = 0
  await fc.assert(fc.asyncProperty(anyKey, fc.jsonValue({ maxDepth: 2 }), async (key, value) => {
    const valid = key.length > 0 && Buffer.byteLength(key) <= 1024 && key.isWellFormed()
    if (!valid) {
      refused++
      for (const attempt of [() => cache.set(key, value), () => cache.get(key), () => cache.delete([key]), () => cache.exists(key), () => cache.getOrSet(key, () => value)]) {
        let error: unknown
        try { await attempt() } catch (err) { error = err }
        if (!(error instanceof CacheKeyError)) return false
      }
      return true
    }
    stored++
    const fullKey = cache.redisKey(key, 'fz')
    if (fullKey !== `${prefix}:fz:${key}`) return false
    if (!(await cache.set(key, value, { namespace: 'fz' }))) return false
    if (await raw.exists(Buffer.from(fullKey)) !== 1) return false
    const back = await cache.get(key, { namespace: 'fz' })
    if (JSON.stringify(back) !== JSON.stringify(JSON.parse(JSON.stringify(value)))) return false
    if (await cache.exists([key, key], { namespace: 'fz' }) !== 2) return false
    return await cache.delete(key, { namespace: 'fz' }) === 1
  }), { numRuns: 200 })
  t.ok(stored > 50 && refused > 5, `${stored} stored, ${refused} refused`)
  await nothingOutsideThePrefix(t)
})

t.test('clear(namespace) never touches another namespace; patterns are refused', async (t) => {
  const { cache } = await listening(t)
  const namespace = fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/)
  await fc.assert(fc.asyncProperty(namespace, namespace, fc.array(hostileString(12).filter((k) => k.length > 0 && k.isWellFormed()), { minLength: 1, maxLength: 4 }), async (a, b, keys) => {
    fc.pre(a !== b)
    // Namespaces that extend each other ('a' and 'ab') are the interesting neighbours.
    const neighbours = [...new Set([b, `${a}${b}`, `${a}-`, `${a}.x`])]
    for (const key of keys) {
      await cache.set(key, 1, { namespace: a })
      for (const ns of neighbours) await cache.set(key, 2, { namespace: ns })
    }
    await cache.clear(a)
    const unique = [...new Set(keys)]
    if (await cache.exists(unique, { namespace: a }) !== 0) return false
    for (const ns of neighbours) {
      if (await cache.exists(unique, { namespace: ns }) !== unique.length) return false
      await cache.clear(ns)
    }
    return true
  }), { numRuns: 100 })

  await fc.assert(fc.asyncProperty(hostileString(20).filter((ns) => !/^[A-Za-z0-9_.-]{1,128}$/.test(ns)), async (ns) => {
    for (const attempt of [() => cache.clear(ns), () => cache.get('k', { namespace: ns }), () => cache.set('k', 1, { namespace: ns })]) {
      let error: unknown
      try { await attempt() } catch (err) { error = err }
      if (!(error instanceof CacheKeyError)) return false
    }
    return true
  }), { numRuns: 100 })
  await cache.set('survivor', 1, { namespace: 'zz' })
  await t.rejects(cache.clear('z*'), CacheKeyError)
  t.equal(await cache.exists('survivor', { namespace: 'zz' }), 1)
  await nothingOutsideThePrefix(t)
})

// Request targets: paths and query strings with malformed percent-encoding, repeated
// parameters, raw high bytes, huge lengths (past Node's header limit too).
const safeChar = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom(...'abcXYZ019-._~!$&\'()*+,;=:@/?'.split('')) },
  { weight: 4, arbitrary: fc.constantFrom('%', '%2', '%zz', '%00', '%0d%0a', '%E0%A4%A', '%25', '%%', '%ff', '%2F', '%3F', '%23', '%2A', '%5B') },
  { weight: 2, arbitrary: fc.constantFrom('[', ']', '{', '}', '|', '^', '`', '"', '<', '>', '\\', '#') }
)
// Node's parser refuses raw bytes of 0x80 and over and control characters (a 400).
const anyChar = fc.oneof({ weight: 8, arbitrary: safeChar }, { weight: 1, arbitrary: fc.constantFrom('\u00e9', '\u00ff', '\u4e2d', '\ud83d\ude00', '\u0001', '\u007f', '\t') })
const queryOf = (urlChar: fc.Arbitrary<string>): fc.Arbitrary<string> => fc.oneof(
  fc.array(fc.tuple(fc.string({ unit: urlChar, maxLength: 8 }), fc.string({ unit: urlChar, maxLength: 12 })).map(([k, v]) => `${k}=${v}`), { maxLength: 8 }).map((params) => params.join('&')),
  fc.tuple(fc.constantFrom('q', 'a'), fc.string({ unit: urlChar, maxLength: 10 }), fc.integer({ min: 2, max: 50 })).map(([k, v, n]) => Array(n).fill(`${k}=${v}`).join('&')),
  fc.string({ unit: urlChar, minLength: 2000, maxLength: 4000 })
)
const query = fc.oneof(
  { weight: 6, arbitrary: queryOf(safeChar) },
  { weight: 2, arbitrary: queryOf(anyChar) },
  { weight: 1, arbitrary: fc.integer({ min: 15_000, max: 20_000 }).map((n) => `q=${'x'.repeat(n)}`) }
)
const target = fc.tuple(fc.constantFrom('/items', '/items/', '/items/1', '/search', '/items/%', '/items/%zz', '//items', '/items/..%2f..', '/nope'), fc.option(query), fc.boolean())
  .map(([path, q, encode]) => {
    const text = q === null ? path : `${path}?${q}`
    return encode ? Buffer.from(text, 'utf8') : Buffer.from(text, 'latin1')
  })

t.test('hostile URLs and query strings: never a 5xx, never a key outside the prefix', async (t) => {
  const { port, cache } = await listening(t)
  const statuses = new Map<number, number>()
  await fc.assert(fc.asyncProperty(target, async (line) => {
    const { status, head } = await rawGet(port, line)
    statuses.set(status, (statuses.get(status) ?? 0) + 1)
    // A request Node's parser (bytes) or Fastify's router (a malformed %-escape in the path)
    // refuses gets a 4xx before any hook; anything else is answered.
    if (status === 0 || status >= 500) return false
    if (status === 200 && !/\r\nx-cache: (HIT|MISS|BYPASS)/i.test(head)) return false
    return true
  }), { numRuns: 200 })
  t.ok((statuses.get(200) ?? 0) > 50, `answers by status: ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.equal(cache.getStatistics().errors, 0, 'no cache failure')
  await nothingOutsideThePrefix(t)
  const entries = await allKeys()
  t.ok(entries.every((key) => Buffer.byteLength(key) <= Buffer.byteLength(`${prefix}:search:`) + 1100), 'every key bounded in size')
})

// Bytes in Redis: entirely random, valid envelopes with a damaged payload, truncations.
const codec = new Codec(undefined, { enabled: true, threshold: 16, level: 1 })
const validValue = codec.encode(Buffer.from(JSON.stringify({ hello: 'world', list: [1, 2, 3, 'x'.repeat(40)] })), KIND_VALUE, 60, undefined).bytes
const validResponse = codec.encode(Buffer.from('{"items":[1,2,3]}'), KIND_RESPONSE, 60, false, encodeHead(200, { 'content-type': 'application/json; charset=utf-8', etag: '"x"' })).bytes

function envelope (encoding: number, kind: number, payload: Uint8Array, storedAt = Date.now(), freshFor = 60): Buffer {
  const bytes = Buffer.alloc(13 + payload.length)
  bytes[0] = 0xc7
  bytes[1] = encoding
  bytes[2] = kind
  bytes.writeUIntBE(storedAt, 3, 6)
  bytes.writeUInt32BE(freshFor, 9)
  Buffer.from(payload).copy(bytes, 13)
  return bytes
}

/** A response head as stored: a status line and header lines, from arbitrary strings. */
const forgedHead = fc.tuple(
  fc.oneof(fc.integer({ min: 0, max: 1000 }).map(String), fc.string({ unit: 'binary-ascii', maxLength: 5 })),
  fc.array(fc.tuple(fc.oneof(fc.constantFrom('content-type', 'etag', 'transfer-encoding', 'content-length', 'x-ok', 'vary', 'content-encoding'), fc.string({ unit: 'binary-ascii', maxLength: 10 })), fc.string({ unit: 'binary', maxLength: 20 })), { maxLength: 4 })
).map(([status, headers]) => {
  const text = [status, ...headers.map(([name, value]) => `${name}:${value}`)].join('\n')
  const head = Buffer.alloc(4 + Buffer.byteLength(text, 'latin1'))
  head.writeUInt32BE(head.length - 4, 0)
  head.write(text, 4, 'latin1')
  return head
})

const mutate = (base: Buffer): fc.Arbitrary<Buffer> => fc.oneof(
  fc.integer({ min: 0, max: base.length - 1 }).map((n) => base.subarray(0, n)),
  fc.tuple(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 255 })).map(([i, byte]) => {
    const copy = Buffer.from(base)
    copy[i] = byte
    return copy
  }),
  fc.uint8Array({ maxLength: 64 }).map((tail) => Buffer.concat([base, tail]))
)

const storedBytes = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 200 })).map(([enc, kind, payload]) => envelope(enc, kind, payload)),
  fc.tuple(fc.integer({ min: 0, max: 1 }), forgedHead, fc.uint8Array({ maxLength: 100 })).map(([enc, head, body]) => envelope(enc, KIND_RESPONSE, Buffer.concat([head, body]))),
  mutate(validValue),
  mutate(validResponse)
)

t.test('arbitrary bytes in Redis are a miss for get and getOrSet, never a throw', async (t) => {
  const { cache } = await listening(t)
  let readable = 0
  await fc.assert(fc.asyncProperty(storedBytes, async (bytes) => {
    const fullKey = cache.redisKey('victim')
    await raw.set(fullKey, bytes)
    const value = await cache.get('victim')
    if (value !== null) readable++
    await raw.set(fullKey, bytes)
    const computed = await cache.getOrSet('victim', () => ({ recomputed: true }))
    if (value === null && JSON.stringify(computed) !== '{"recomputed":true}') return false
    return true
  }), { numRuns: 200 })
  t.ok(readable < 100, `${readable} damaged entries still read as a value (damage in a JSON string, say)`)
  t.ok(cache.getStatistics().errors > 0, 'unreadable entries are counted')
  // The last generated entry may have been a readable one; end on one that is not, so the check
  // does not depend on what fast-check drew last.
  await raw.set(cache.redisKey('victim'), Buffer.from('not an entry'))
  t.same(await cache.getOrSet('victim', () => ({ recomputed: true })), { recomputed: true })
  await until(async () => JSON.stringify(await cache.get('victim')) === '{"recomputed":true}', 1000, 'getOrSet to store its value')
})

t.test('arbitrary bytes under a route\'s key: answered, never a 5xx the entry did not say', async (t) => {
  const { cache, port } = await listening(t)
  const fullKey = cache.redisKey(`127.0.0.1:${port}/items`, 'items')
  const replayed = new Map<string, number>()
  await fc.assert(fc.asyncProperty(storedBytes, fc.boolean(), async (bytes, gzip) => {
    await raw.set(fullKey, bytes)
    const res = await fetch(`http://127.0.0.1:${port}/items`, { headers: { 'accept-encoding': gzip ? 'gzip' : 'identity' }, signal: AbortSignal.timeout(3000) })
      .then(async (r) => ({ status: r.status, cache: r.headers.get('x-cache'), body: await r.arrayBuffer().then(() => 'read', () => 'broken body') }))
      .catch(() => null)
    if (res === null) return false
    const outcome = `${res.cache ?? 'none'} ${res.status}`
    replayed.set(outcome, (replayed.get(outcome) ?? 0) + 1)
    // A 5xx may only be a forged entry replayed as it says (a hit); never one of the cache's own.
    if (res.status >= 500 && res.cache !== 'HIT') return false
    return res.cache === 'HIT' || res.status === 200
  }), { numRuns: 200 })
  t.ok((replayed.get('MISS 200') ?? 0) > 100, `outcomes: ${JSON.stringify(Object.fromEntries(replayed))}`)
  await nothingOutsideThePrefix(t)
})

t.test('forged response heads are refused before they reach Node', async (t) => {
  const forged = (head: string, body = 'x', storedAt = Date.now()): Buffer => {
    const h = Buffer.alloc(4 + Buffer.byteLength(head, 'latin1'))
    h.writeUInt32BE(h.length - 4, 0)
    h.write(head, 4, 'latin1')
    return envelope(0, KIND_RESPONSE, Buffer.concat([h, Buffer.from(body)]), storedAt)
  }
  for (const [what, head] of [
    ['a 1xx status', '101'],
    ['status 199', '199'],
    ['no status', 'abc'],
    ['a header name with a space', '200\nbad name:x'],
    ['a header without a name', '200\n:x'],
    ['a header without a colon', '200\nnocolon'],
    ['a control character in a value', '200\nx-a:\u0001'],
    ['a carriage return in a value', '200\nx-a:1\rset-cookie:a=b'],
    ['a hop-by-hop header', '200\ntransfer-encoding:chunked'],
    ['a header the cache never stores', '200\nSet-Cookie:a=b'],
    ['a length of its own', '200\ncontent-length:99']
  ] as const) {
    t.throws(() => decodeEntry(forged(head)), { name: 'CacheDeserializationError' }, what)
  }
  const ok = decodeEntry(forged('204\nx-a:\t tab and latin1 \u00e9\nx-a:2', ''))
  t.same(ok.headers, { 'x-a': ['\t tab and latin1 \u00e9', '2'] })
  t.equal(ok.status, 204)
})
