// Route caching through config.cache: wiring, keys, what is stored and replayed, what is never
// stored, cache headers, ETag and 304, HEAD, gzip passthrough, statistics, unreadable entries
// and route option validation. Real redis-server, requests through inject unless the wire matters.
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { gunzipSync, gzipSync } from 'node:zlib'
import t from 'tap'
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify'
import fastifyRedisCache from '../index'
import { CacheConfigError, CacheDeserializationError, CacheSerializationError } from '../lib/errors'
import { ENCODING_PLAIN, KIND_RESPONSE, writeEnvelope } from '../lib/envelope'
import { Codec } from '../lib/serializer'
import { DecodedEntries, ENTRY_OVERHEAD } from '../lib/route-cache/decoded-entries'
import { decodeEntry, encodeHead, etagMatches, type HttpEntry, strongEtag } from '../lib/route-cache/http-entry'
import { captureLogs, LEVEL, rawClient, until } from './helpers/app'
import { listen, onRedis, rawRequest, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)

interface Query { [name: string]: string | undefined }

t.test('wiring: only routes with config.cache get hooks; false opts out', async (t) => {
  const server = await redis()
  const seen = new Map<string, RouteOptions>()
  let plain = 0
  let optedOut = 0
  let cached = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.addHook('onRoute', (route) => { seen.set(`${String(route.method)} ${route.url}`, route) })
    app.get('/plain', async () => ({ n: ++plain }))
    app.get('/off', { config: { cache: false } }, async () => ({ n: ++optedOut }))
    app.get('/on', { config: { cache: { ttl: 60 } } }, async () => ({ n: ++cached }))
    app.post('/post-only', { config: { cache: { ttl: 60 } } }, async () => ({ ok: true }))
  })

  t.equal(seen.get('GET /plain')?.onRequest, undefined, 'no hook on a route without config.cache')
  t.equal(seen.get('GET /plain')?.onSend, undefined)
  t.equal(seen.get('GET /off')?.onRequest, undefined, 'no hook with config.cache: false')
  t.equal([seen.get('GET /on')?.onRequest].flat().length, 1, 'one onRequest hook on a cached route')
  t.equal([seen.get('HEAD /on')?.onRequest].flat().length, 1, 'and on its HEAD route')
  t.equal(seen.get('POST /post-only')?.onRequest, undefined, 'a POST-only route is never served from the cache')

  for (let i = 0; i < 2; i++) {
    const res = await app.inject('/plain')
    t.equal(res.headers['x-cache'], undefined)
    t.equal(res.headers['cache-status'], undefined)
    t.equal(res.headers.etag, undefined)
  }
  await app.inject('/off')
  const off = await app.inject('/off')
  t.equal(off.headers['x-cache'], undefined)
  t.same(off.json(), { n: 2 }, 'an opted-out route runs its handler every time')

  const post = await app.inject({ method: 'POST', url: '/post-only' })
  t.equal(post.headers['x-cache'], undefined)

  const miss = await app.inject('/on')
  const hit = await app.inject('/on')
  t.equal(miss.headers['x-cache'], 'MISS')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same(hit.json(), { n: 1 })
  t.equal(cached, 1, 'the handler ran once')
})

t.test('a hit is the miss byte for byte: status, content type, headers, body; never re-serialized', async (t) => {
  const server = await redis()
  const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  const runs = { json: 0, text: 0, bin: 0 }
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/json', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      runs.json++
      // Odd spacing and key order: a re-serialized hit would differ.
      reply.header('content-type', 'application/vnd.api+json; charset=utf-8')
      reply.header('x-custom', 'kept')
      reply.header('link', ['</a>; rel="a"', '</b>; rel="b"'])
      reply.header('x-number', 42)
      reply.header('connection', 'keep-alive')
      return '{ "b":2,  "a": [1, 2 ,3], "u": "\u00e9\u20ac" }'
    })
    app.get('/text', { config: { cache: { ttl: 60 } } }, async () => { runs.text++; return 'plain text' })
    app.get('/bin', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      runs.bin++
      reply.type('image/png')
      return binary
    })
    app.get('/object', { config: { cache: { ttl: 60 } } }, async () => ({ z: 1, a: { deep: [true, null] } }))
  })

  const miss = await app.inject('/json')
  const hit = await app.inject('/json')
  t.equal(miss.statusCode, 200)
  t.equal(hit.statusCode, 200)
  t.same(hit.rawPayload, miss.rawPayload, 'same bytes')
  t.equal(miss.body, '{ "b":2,  "a": [1, 2 ,3], "u": "\u00e9\u20ac" }', 'the miss sends the string as UTF-8')
  t.equal(miss.headers['content-length'], String(Buffer.byteLength(miss.body)))
  t.equal(hit.body, '{ "b":2,  "a": [1, 2 ,3], "u": "\u00e9\u20ac" }')
  t.equal(hit.headers['content-type'], 'application/vnd.api+json; charset=utf-8')
  t.equal(hit.headers['x-custom'], 'kept')
  t.same(hit.headers.link, ['</a>; rel="a"', '</b>; rel="b"'], 'repeated headers replayed as they were')
  t.equal(hit.headers['x-number'], '42')
  t.equal(hit.headers['content-length'], String(miss.rawPayload.length))
  t.equal(hit.headers.etag, miss.headers.etag)
  t.equal(runs.json, 1)

  await app.inject('/text')
  const text = await app.inject('/text')
  t.equal(text.headers['x-cache'], 'HIT')
  t.equal(text.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(text.body, 'plain text')

  await app.inject('/bin')
  const bin = await app.inject('/bin')
  t.equal(bin.headers['x-cache'], 'HIT')
  t.equal(bin.headers['content-type'], 'image/png')
  t.same(bin.rawPayload, binary, 'binary bytes survive')
  t.equal(runs.bin, 1)

  const objectMiss = await app.inject('/object')
  const objectHit = await app.inject('/object')
  t.equal(objectHit.headers['x-cache'], 'HIT')
  t.equal(objectHit.headers['content-type'], 'application/json; charset=utf-8', 'content type kept on hits')
  t.equal(objectHit.body, objectMiss.body)
})

t.test('hop-by-hop, Content-Length, Set-Cookie and the cache headers are never stored; Date is', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/h', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      reply.header('keep-alive', 'timeout=5')
      reply.header('x-kept', 'yes')
      return 'body'
    })
  })
  await app.inject('/h')
  const raw = rawClient(t, server.url)
  const stored = await raw.getBuffer(cache.redisKey('localhost:80/h')) as Buffer
  const text = stored.toString('latin1')
  t.match(text, 'x-kept:yes')
  t.match(text, 'content-type:text/plain')
  t.match(text, /\netag:"/)
  t.match(text, /\ndate:/, 'RFC 9111 §4: the Date is stored, to be sent as stored')
  for (const name of ['keep-alive', 'content-length', 'x-cache', 'cache-status', 'age', 'connection']) {
    t.notMatch(text, `\n${name}:`, `${name} is not stored`)
  }
  const hit = await app.inject('/h')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.not(hit.headers['keep-alive'], 'timeout=5')
})

t.test('X-Cache, Cache-Status (RFC 9211) and Age', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/s', { config: { cache: { ttl: 600 } } }, async () => 'x')
  })
  const miss = await app.inject('/s')
  t.equal(miss.headers['x-cache'], 'MISS')
  t.equal(miss.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; stored')
  t.equal(miss.headers.age, undefined, 'no Age on a miss')
  const hit = await app.inject('/s')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.match(hit.headers['cache-status'], /^fastify-redis-cache; hit; ttl=(599|600)$/)
  t.equal(hit.headers.age, '0')
})

t.test('default key: host, path and sorted query; the entry lives under redisKey(key, namespace)', async (t) => {
  const server = await redis()
  const seen: string[] = []
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/items', { config: { cache: { ttl: 60, namespace: 'items' } } }, async (req) => {
      seen.push(req.url)
      return { url: req.url }
    })
  })
  t.equal((await app.inject('/items?a=1&b=2')).headers['x-cache'], 'MISS')
  const swapped = await app.inject('/items?b=2&a=1')
  t.equal(swapped.headers['x-cache'], 'HIT', 'parameter order does not split the entry')
  t.same(swapped.json(), { url: '/items?a=1&b=2' })
  t.equal((await app.inject('/items?a=1&&b=2&')).headers['x-cache'], 'HIT', 'empty parameters are ignored')
  t.equal((await app.inject('/items?a=2&b=2')).headers['x-cache'], 'MISS', 'values split it')
  t.equal((await app.inject('/items?x=1&x=2')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/items?x=2&x=1')).headers['x-cache'], 'MISS', 'repeated parameters keep their order')
  t.equal((await app.inject('/items?x=1&x=2')).headers['x-cache'], 'HIT')

  await app.inject('/items')
  t.equal((await app.inject('/items?')).headers['x-cache'], 'HIT', 'a bare ? is the path')
  t.equal((await app.inject('/items?&')).headers['x-cache'], 'HIT')

  t.equal(await cache.exists('localhost:80/items?a=1&b=2', { namespace: 'items' }), 1, 'fastify.cache.exists reaches the entry')
  t.equal(await cache.exists('localhost:80/items', { namespace: 'items' }), 1)
  t.equal(await cache.exists('localhost:80/items?a=1&b=2'), 0, 'not in the default namespace')
  t.equal(await cache.delete('localhost:80/items?a=1&b=2', { namespace: 'items' }), 1, 'fastify.cache.delete removes it')
  t.equal((await app.inject('/items?b=2&a=1')).headers['x-cache'], 'MISS')
  t.equal(seen.length, 6)
})

t.test('default key: right for every URL, past the per-route memo of keys and for long URLs', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/n', { config: { cache: { ttl: 60 } } }, async (req) => ({ q: (req.query as Query).q }))
  })
  // More distinct URLs than the memo holds (1024): it starts over, and keys stay right.
  for (let i = 0; i < 1100; i++) t.equal((await app.inject(`/n?q=${i}`)).headers['x-cache'], 'MISS')
  for (const i of [0, 1023, 1099]) {
    const hit = await app.inject(`/n?q=${i}`)
    t.equal(hit.headers['x-cache'], 'HIT')
    t.same(hit.json(), { q: String(i) }, `URL ${i} keeps its own entry`)
  }
  const long = `/n?q=${'x'.repeat(600)}`
  t.equal((await app.inject(long)).headers['x-cache'], 'MISS')
  const longHit = await app.inject(long)
  t.equal(longHit.headers['x-cache'], 'HIT', 'a long URL, never remembered, is keyed the same each time')
  t.same(longHit.json(), { q: 'x'.repeat(600) })
})

t.test('key: a string, a function of the request; a throwing or invalid key bypasses', async (t) => {
  const server = await redis()
  let fixed = 0
  let byId = 0
  let broken = 0
  const { app, cache, logs } = await routeApp(t, onRedis(server), (app) => {
    app.get('/fixed', { config: { cache: { ttl: 60, namespace: 'k', key: 'the-list' } } }, async () => ({ n: ++fixed }))
    app.get<{ Params: { id: string } }>('/item/:id', {
      config: { cache: { ttl: 60, namespace: 'k', key: (req) => `item:${(req.params as { id: string }).id}` } }
    }, async (req) => ({ id: req.params.id, n: ++byId }))
    app.get('/broken', {
      config: {
        cache: {
          ttl: 60,
          key: (req) => {
            const mode = (req.query as Query).mode
            if (mode === 'throw') throw new Error('no key for you')
            return mode === 'empty' ? '' : 'x'.repeat(2000)
          }
        }
      }
    }, async () => ({ n: ++broken }))
  })

  await app.inject('/fixed?page=1')
  const other = await app.inject('/fixed?page=2')
  t.equal(other.headers['x-cache'], 'HIT', 'a string key ignores the query')
  t.equal(fixed, 1)
  t.equal(await cache.exists('the-list', { namespace: 'k' }), 1)

  await app.inject('/item/7')
  t.equal((await app.inject('/item/7?utm=x')).headers['x-cache'], 'HIT')
  t.equal((await app.inject('/item/8')).headers['x-cache'], 'MISS')
  t.equal(await cache.exists(['item:7', 'item:8'], { namespace: 'k' }), 2)

  for (const mode of ['throw', 'empty', 'long']) {
    const res = await app.inject(`/broken?mode=${mode}`)
    t.equal(res.statusCode, 200, `${mode}: the route still answers`)
    t.equal(res.headers['x-cache'], 'BYPASS')
    t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=bypass; detail=key')
  }
  t.equal(broken, 3, 'the handler ran for each')
  // One warning: a client could send a bad key with every request; the rest are throttled.
  t.equal(logs.find('cannot build the cache key').length, 1)
  t.equal(cache.getStatistics().misses, 3, 'bypasses are not counted as misses')
})

t.test('vary: request headers split entries and are announced in Vary', async (t) => {
  const server = await redis()
  let runs = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/greet', { config: { cache: { ttl: 60, vary: ['Accept-Language'] } } }, async (req) => {
      runs++
      return { lang: req.headers['accept-language'] ?? 'none' }
    })
  })
  const en = await app.inject({ url: '/greet', headers: { 'accept-language': 'en' } })
  const de = await app.inject({ url: '/greet', headers: { 'accept-language': 'de' } })
  const none = await app.inject('/greet')
  t.equal(en.headers['x-cache'], 'MISS')
  t.equal(de.headers['x-cache'], 'MISS')
  t.equal(none.headers['x-cache'], 'MISS')
  t.equal(en.headers.vary, 'accept-language', 'downstream caches learn what the entry varies on')
  const enHit = await app.inject({ url: '/greet', headers: { 'accept-language': 'en' } })
  const deHit = await app.inject({ url: '/greet', headers: { 'accept-language': 'de' } })
  const noneHit = await app.inject('/greet')
  t.same([enHit.json(), deHit.json(), noneHit.json()], [{ lang: 'en' }, { lang: 'de' }, { lang: 'none' }])
  t.same([enHit.headers['x-cache'], deHit.headers['x-cache'], noneHit.headers['x-cache']], ['HIT', 'HIT', 'HIT'])
  t.equal(enHit.headers.vary, 'accept-language')
  t.equal(runs, 3)
})

t.test('vary: the cache adds to a Vary the handler set', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server, { compression: { threshold: 100 } }), (app) => {
    app.get('/tenant', { config: { cache: { ttl: 60, compress: true, vary: ['x-tenant', 'accept-language'] } } }, async (req, reply) => {
      reply.header('vary', 'X-Tenant')
      return `${String(req.headers['x-tenant'])} `.repeat(100)
    })
  })
  const headers = { 'x-tenant': 'acme', 'accept-language': 'en' }
  const miss = await app.inject({ url: '/tenant', headers })
  t.equal(miss.headers.vary, 'X-Tenant, accept-language, accept-encoding')
  const hit = await app.inject({ url: '/tenant', headers })
  t.equal(hit.headers['x-cache'], 'HIT')
  t.equal(hit.headers.vary, 'X-Tenant, accept-language, accept-encoding', 'a gzipped entry adds accept-encoding on hits too')
  t.equal(hit.body, miss.body)
})

t.test('a response Vary must name only what the key includes', async (t) => {
  const server = await redis()
  const runs = { star: 0, other: 0, listed: 0, ae: 0 }
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/star', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      runs.star++
      reply.header('vary', '*')
      return 'x'
    })
    app.get('/other', { config: { cache: { ttl: 60, vary: ['x-tenant'] } } }, async (_req, reply) => {
      runs.other++
      reply.header('vary', 'X-Tenant, Cookie')
      return 'x'
    })
    app.get('/listed', { config: { cache: { ttl: 60, vary: ['x-tenant'] } } }, async (_req, reply) => {
      runs.listed++
      reply.header('vary', 'X-Tenant,')
      return 'x'
    })
    app.get('/ae', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      runs.ae++
      // The body is not encoded: any client can take it.
      reply.header('vary', 'Accept-Encoding')
      return 'x'
    })
  })
  for (let i = 0; i < 2; i++) {
    const star = await app.inject('/star')
    t.equal(star.headers['x-cache'], 'MISS')
    t.equal(star.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=vary')
    t.equal(star.headers.etag, undefined, 'no validator on a response the cache did not take')
    t.equal((await app.inject('/other')).headers['x-cache'], 'MISS')
  }
  await app.inject('/listed')
  t.equal((await app.inject('/listed')).headers['x-cache'], 'HIT')
  await app.inject('/ae')
  t.equal((await app.inject('/ae')).headers['x-cache'], 'HIT')
  t.same(runs, { star: 2, other: 2, listed: 1, ae: 1 })
})

const CACHE_CONTROLS = ['no-store', 'private, max-age=60', 'max-age=60,no-cache', 'Private', 'public, no-store']

t.test('not stored: statuses outside the list, Set-Cookie, no-store/private/no-cache, streams', async (t) => {
  const server = await redis()
  const runs: Record<string, number> = {}
  const count = (name: string): number => { runs[name] = (runs[name] ?? 0) + 1; return runs[name] }
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    const config = { cache: { ttl: 60 } }
    app.get('/404', { config }, async (_req, reply) => { count('404'); reply.code(404); return { error: 'nope' } })
    app.get('/500', { config }, async () => { count('500'); throw new Error('boom') })
    app.get('/201', { config }, async (_req, reply) => { count('201'); reply.code(201); return 'made' })
    app.get('/cookie', { config }, async (_req, reply) => { count('cookie'); reply.header('set-cookie', 'sid=secret'); return 'mine' })
    CACHE_CONTROLS.forEach((value, i) => {
      app.get(`/cc/${i}`, { config }, async (_req, reply) => { count(`cc ${value}`); reply.header('cache-control', value); return value })
    })
    app.get('/stream', { config }, async (_req, reply) => {
      count('stream')
      reply.type('text/plain')
      return Readable.from(['chunk one, ', 'chunk two'])
    })
  })

  for (let i = 0; i < 2; i++) {
    const r404 = await app.inject('/404')
    t.equal(r404.statusCode, 404)
    t.equal(r404.headers['x-cache'], 'MISS')
    t.equal(r404.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=status')
    const r500 = await app.inject('/500')
    t.equal(r500.statusCode, 500)
    t.equal(r500.headers['x-cache'], 'MISS')
    t.equal((await app.inject('/201')).headers['x-cache'], 'MISS')
    const cookie = await app.inject('/cookie')
    t.equal(cookie.headers['set-cookie'], 'sid=secret')
    t.equal(cookie.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=set-cookie')
    for (const [i, value] of CACHE_CONTROLS.entries()) {
      const res = await app.inject(`/cc/${i}`)
      t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=cache-control', value)
      t.equal(res.headers['cache-control'], value, 'the handler\'s Cache-Control is left alone')
    }
    const stream = await app.inject('/stream')
    t.equal(stream.body, 'chunk one, chunk two', 'a stream passes through untouched')
    t.equal(stream.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=stream')
  }
  for (const [name, n] of Object.entries(runs)) t.equal(n, 2, `${name}: the handler ran every time`)
  t.equal(cache.getStatistics().sets, 0, 'nothing was stored')
  const raw = rawClient(t, server.url)
  t.same(await raw.keys(`${cache.core.layout.prefix}:*`), [], 'and nothing is in Redis')
})

t.test('statuses: a route may store other statuses; a stored 404 comes back as a 404', async (t) => {
  const server = await redis()
  let runs = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/gone/:id', { config: { cache: { ttl: 60, statuses: [200, 404] } } }, async (_req, reply) => {
      runs++
      reply.code(404)
      return { error: 'Not Found' }
    })
  })
  const miss = await app.inject('/gone/1')
  const hit = await app.inject('/gone/1')
  t.equal(hit.statusCode, 404)
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same(hit.json(), { error: 'Not Found' })
  t.equal(runs, 1)
  // Preconditions apply to 2xx only (RFC 9110 13.1.1): never a 304 instead of a 404.
  const etag = miss.headers.etag as string
  const conditionalHit = await app.inject({ url: '/gone/1', headers: { 'if-none-match': etag } })
  t.equal(conditionalHit.statusCode, 404)
  t.equal(conditionalHit.headers['x-cache'], 'HIT')
  const conditionalMiss = await app.inject({ url: '/gone/2', headers: { 'if-none-match': etag } })
  t.equal(conditionalMiss.statusCode, 404)
  t.equal(conditionalMiss.headers['x-cache'], 'MISS')
  t.same(conditionalMiss.json(), { error: 'Not Found' })
})

t.test('a route for GET and POST: POST is never served from nor stored in the cache', async (t) => {
  const server = await redis()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.route({
      method: ['GET', 'POST'],
      url: '/both',
      config: { cache: { ttl: 60 } },
      handler: async (req) => ({ method: req.method, n: ++runs })
    })
  })
  await app.inject('/both')
  t.equal((await app.inject('/both')).headers['x-cache'], 'HIT')
  for (let i = 0; i < 2; i++) {
    const post = await app.inject({ method: 'POST', url: '/both', payload: { a: 1 } })
    t.equal(post.json().method, 'POST', 'the handler answers the POST')
    t.equal(post.headers['x-cache'], 'BYPASS')
    t.equal(post.headers['cache-status'], 'fastify-redis-cache; fwd=method')
  }
  t.equal(runs, 3)
  t.same((await app.inject('/both')).json(), { method: 'GET', n: 1 }, 'the GET entry is untouched')
  t.equal(cache.getStatistics().sets, 1)
})

t.test('Authorization: bypassed unless the route opts in; then private Cache-Control', async (t) => {
  const server = await redis()
  let shared = 0
  let perUser = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/shared', { config: { cache: { ttl: 60, maxAge: 30 } } }, async (req) => ({ n: ++shared, auth: req.headers.authorization ?? null }))
    app.get('/me', {
      config: {
        cache: { ttl: 60, maxAge: 30, allowAuthorization: true, key: (req) => `me:${req.headers.authorization ?? 'anonymous'}` }
      }
    }, async (req) => ({ n: ++perUser, user: req.headers.authorization ?? null }))
  })

  await app.inject('/shared')
  t.equal((await app.inject('/shared')).headers['x-cache'], 'HIT')
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ url: '/shared', headers: { authorization: 'Bearer alice' } })
    t.same(res.json(), { n: 2 + i, auth: 'Bearer alice' }, 'never the shared entry')
    t.equal(res.headers['x-cache'], 'BYPASS')
    t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=request; detail=authorization')
    t.equal(res.headers['cache-control'], undefined, 'no max-age on a bypassed response')
  }
  t.same((await app.inject('/shared')).json(), { n: 1, auth: null }, 'and never stored')

  const alice = await app.inject({ url: '/me', headers: { authorization: 'Bearer alice' } })
  t.equal(alice.headers['x-cache'], 'MISS')
  t.equal(alice.headers['cache-control'], 'private, max-age=30')
  const aliceAgain = await app.inject({ url: '/me', headers: { authorization: 'Bearer alice' } })
  t.equal(aliceAgain.headers['x-cache'], 'HIT')
  t.equal(aliceAgain.headers['cache-control'], 'private, max-age=30')
  t.same(aliceAgain.json(), { n: 1, user: 'Bearer alice' })
  const bob = await app.inject({ url: '/me', headers: { authorization: 'Bearer bob' } })
  t.same(bob.json(), { n: 2, user: 'Bearer bob' }, 'the key includes the user: no leak')
  const anonymous = await app.inject('/me')
  t.equal(anonymous.headers['cache-control'], 'public, max-age=30')
  t.equal(await cache.exists(['me:Bearer alice', 'me:Bearer bob', 'me:anonymous']), 3)
})

t.test('maxAge: public max-age for clients and CDNs; handler Cache-Control wins; 0 and false', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/a', { config: { cache: { ttl: 600, maxAge: 60 } } }, async () => 'a')
    app.get('/own', { config: { cache: { ttl: 600, maxAge: 60 } } }, async (_req, reply) => {
      reply.header('cache-control', 'public, s-maxage=5')
      return 'own'
    })
    app.get('/zero', { config: { cache: { ttl: 600, maxAge: 0 } } }, async () => 'zero')
    app.get('/none', { config: { cache: { ttl: 600, maxAge: false } } }, async () => 'none')
  })
  for (const outcome of ['MISS', 'HIT']) {
    const a = await app.inject('/a')
    t.equal(a.headers['x-cache'], outcome)
    t.equal(a.headers['cache-control'], 'public, max-age=60')
    t.equal((await app.inject('/own')).headers['cache-control'], 'public, s-maxage=5')
    t.equal((await app.inject('/zero')).headers['cache-control'], 'public, max-age=0')
    t.equal((await app.inject('/none')).headers['cache-control'], undefined)
  }
})

t.test('ETag: strong, from the bytes, kept when the handler set one; If-None-Match gets 304', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/e', { config: { cache: { ttl: 60 } } }, async () => 'etag me')
    app.get('/own', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      reply.header('etag', 'W/"v7"')
      return 'own'
    })
  })
  const expected = `"${createHash('sha1').update('etag me').digest('base64url')}"`
  const conditionalMiss = await app.inject({ url: '/e', headers: { 'if-none-match': expected } })
  t.equal(conditionalMiss.statusCode, 304, 'a matching If-None-Match on a miss')
  t.equal(conditionalMiss.headers['x-cache'], 'MISS')
  t.equal(conditionalMiss.headers.etag, expected)
  t.equal(conditionalMiss.body, '')
  t.equal(conditionalMiss.headers['content-length'], undefined)

  const hit = await app.inject('/e')
  t.equal(hit.headers['x-cache'], 'HIT', 'the 304 miss still stored the full response')
  t.equal(hit.body, 'etag me')
  t.equal(hit.headers.etag, expected)
  t.notOk(expected.startsWith('W/'), 'strong')

  for (const inm of [expected, `W/${expected}`, `"nope", ${expected}`, '*']) {
    const res = await app.inject({ url: '/e', headers: { 'if-none-match': inm } })
    t.equal(res.statusCode, 304, `If-None-Match: ${inm}`)
    t.equal(res.headers['x-cache'], 'HIT')
    t.equal(res.body, '')
    t.equal(res.headers.etag, expected)
  }
  const stale = await app.inject({ url: '/e', headers: { 'if-none-match': '"old"' } })
  t.equal(stale.statusCode, 200)
  t.equal(stale.body, 'etag me')

  const own = await app.inject('/own')
  t.equal(own.headers.etag, 'W/"v7"')
  const ownHit = await app.inject({ url: '/own', headers: { 'if-none-match': '"v7"' } })
  t.equal(ownHit.statusCode, 304, 'weak comparison')
  t.equal(ownHit.headers.etag, 'W/"v7"')
})

t.test('HEAD is answered from the GET entry without running the handler', async (t) => {
  const server = await redis()
  let runs = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/doc', { config: { cache: { ttl: 60 } } }, async () => { runs++; return { doc: 'x'.repeat(50) } })
  })
  const headMiss = await app.inject({ method: 'HEAD', url: '/doc' })
  t.equal(headMiss.statusCode, 200)
  t.equal(headMiss.headers['x-cache'], 'MISS')
  t.equal(headMiss.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=method')
  t.equal(runs, 1)
  const get = await app.inject('/doc')
  t.equal(get.headers['x-cache'], 'MISS', 'a HEAD does not store')
  const head = await app.inject({ method: 'HEAD', url: '/doc' })
  t.equal(runs, 2, 'the handler did not run for the HEAD hit')
  t.equal(head.statusCode, 200)
  t.equal(head.headers['x-cache'], 'HIT')
  t.equal(head.body, '')
  t.equal(head.headers['content-length'], String(get.rawPayload.length))
  t.equal(head.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(head.headers.etag, get.headers.etag)
  const conditional = await app.inject({ method: 'HEAD', url: '/doc', headers: { 'if-none-match': get.headers.etag as string } })
  t.equal(conditional.statusCode, 304)
})

t.test('an entry without a content type is replayed without one', async (t) => {
  const server = await redis()
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/empty', { config: { cache: { ttl: 60 } } }, async (_req, reply) => { reply.send() })
    app.get('/nulled', {
      config: { cache: { ttl: 60 } },
      onSend: async () => null
    }, async () => 'dropped by the route\'s own onSend')
  })
  const miss = await app.inject('/empty')
  const hit = await app.inject('/empty')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.equal(miss.headers['content-type'], undefined)
  t.equal(hit.headers['content-type'], undefined, 'Fastify does not get to add application/octet-stream')
  t.equal(hit.headers['content-length'], '0')
  t.equal(hit.body, '')
  // A payload nulled by an earlier onSend hook: an empty body, with the type the handler chose.
  const nulledMiss = await app.inject('/nulled')
  const nulledHit = await app.inject('/nulled')
  t.equal(nulledHit.headers['x-cache'], 'HIT')
  t.equal(nulledHit.headers['content-type'], nulledMiss.headers['content-type'])
  t.equal(nulledHit.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(nulledHit.body, '')
})

t.test('an earlier onRequest hook that replies: BYPASS, nothing stored', async (t) => {
  const server = await redis()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.addHook('onRequest', async (req, reply) => {
      if (req.headers['x-block'] !== undefined) return reply.code(401).send({ error: 'blocked' })
    })
    app.get('/guarded', { config: { cache: { ttl: 60 } } }, async () => { runs++; return 'secret' })
  })
  const blocked = await app.inject({ url: '/guarded', headers: { 'x-block': '1' } })
  t.equal(blocked.statusCode, 401)
  t.equal(blocked.headers['x-cache'], 'BYPASS')
  t.equal(blocked.headers['cache-status'], 'fastify-redis-cache; fwd=request; detail=early-reply')
  t.equal(cache.getStatistics().sets, 0)
  t.equal((await app.inject('/guarded')).headers['x-cache'], 'MISS')
  t.equal(runs, 1)
})

t.test('tags: array or function of the request; invalidateTags; a failing tags function', async (t) => {
  const server = await redis()
  const { app, cache, logs } = await routeApp(t, onRedis(server), (app) => {
    app.get('/list', { config: { cache: { ttl: 60, namespace: 'items', tags: ['items'] } } }, async () => ['a', 'b'])
    app.get<{ Params: { id: string } }>('/item/:id', {
      config: { cache: { ttl: 60, namespace: 'items', tags: (req) => ['items', `item:${(req.params as { id: string }).id}`] } }
    }, async (req) => ({ id: req.params.id }))
    app.get('/bad-tags', {
      config: {
        cache: {
          ttl: 60,
          tags: (req) => {
            if ((req.query as Query).mode === 'throw') throw new Error('no tags')
            return ['']
          }
        }
      }
    }, async () => 'ok')
  })
  await app.inject('/list')
  await app.inject('/item/1')
  await app.inject('/item/2')
  t.equal(await cache.invalidateTags('item:1'), 1)
  t.equal((await app.inject('/item/1')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/item/2')).headers['x-cache'], 'HIT')
  t.equal(await cache.invalidateTags(['items']), 3)
  for (const url of ['/list', '/item/1', '/item/2']) t.equal((await app.inject(url)).headers['x-cache'], 'MISS', url)

  const errors = cache.getStatistics().errors
  for (const mode of ['throw', 'empty']) {
    const res = await app.inject(`/bad-tags?mode=${mode}`)
    t.equal(res.statusCode, 200)
    t.equal(res.body, 'ok')
    t.equal(res.headers['x-cache'], 'MISS')
    t.equal(res.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=tags')
  }
  t.equal(cache.getStatistics().errors, errors + 2, 'counted')
  t.ok(logs.find('set failed').length > 0, 'logged')
  t.equal((await app.inject('/bad-tags?mode=throw')).headers['x-cache'], 'MISS', 'not stored')
})

t.test('a header Node would refuse is never stored (no header injection through the cache)', async (t) => {
  const server = await redis()
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/echo', { config: { cache: { ttl: 60 } } }, async (req, reply) => {
      runs++
      reply.header('x-echo', (req.query as Query).v ?? '')
      return 'ok'
    })
  })
  const url = `/echo?v=${encodeURIComponent('a\r\nset-cookie: pwned=1')}`
  for (let i = 0; i < 2; i++) {
    const res = await app.inject(url)
    t.equal(res.statusCode, 500, 'Node refuses the header')
    t.equal(res.headers['set-cookie'], undefined)
    t.not(res.headers['x-cache'], 'HIT')
  }
  t.equal(runs, 2)
  t.equal(await cache.exists(`localhost:80/echo?v=${encodeURIComponent('a\r\nset-cookie: pwned=1')}`), 0)
  t.ok(cache.getStatistics().errors >= 2)
})

t.test('compression: bodies over the threshold are stored gzipped and passed through to gzip clients', async (t) => {
  const server = await redis()
  const big = JSON.stringify({ rows: Array.from({ length: 200 }, (_, i) => ({ id: i, name: `row ${i}` })) })
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/big', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      reply.type('application/json')
      return big
    })
    app.get('/plain', { config: { cache: { ttl: 60, compress: false } } }, async () => big)
  })
  const base = await listen(app)

  const miss = await rawRequest(`${base}/big`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(miss.headers['x-cache'], 'MISS')
  t.equal(miss.headers['content-encoding'], undefined, 'the miss goes out as the handler made it')
  t.equal(miss.body.toString(), big)
  t.equal(miss.headers.vary, 'accept-encoding', 'Vary from the first response')
  t.ok(cache.getStatistics().compressedBytesIn >= big.length)
  const stored = await rawClient(t, server.url).getBuffer(cache.redisKey(`${new URL(base).host}/big`)) as Buffer
  t.ok(stored.length < big.length / 2, 'stored gzipped')

  const gz = await rawRequest(`${base}/big`, { headers: { 'accept-encoding': 'gzip, deflate, br' } })
  t.equal(gz.headers['x-cache'], 'HIT')
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.equal(gz.headers.vary, 'accept-encoding')
  t.equal(gz.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(gz.headers.etag, (miss.headers.etag as string).replace(/"$/, '-gzip"'), 'a validator of its own for the gzip coding')
  t.equal(gz.headers['content-length'], String(gz.body.length))
  t.equal(gunzipSync(gz.body).toString(), big, 'the stored gzip bytes')

  const identity = await rawRequest(`${base}/big`)
  t.equal(identity.headers['x-cache'], 'HIT')
  t.equal(identity.headers['content-encoding'], undefined)
  t.same(identity.body, miss.body, 'decompressed: byte-identical to the miss')
  t.equal(identity.headers.etag, miss.headers.etag)
  t.equal(identity.headers.vary, 'accept-encoding')

  const cases: Array<[string, boolean]> = [
    ['gzip;q=0', false],
    ['*', true],
    ['*;q=0, gzip', true],
    ['gzip;q=0, *', false],
    ['identity', false],
    ['x-gzip', true],
    ['GZIP;q=0.5', true],
    ['br, *;q=0.1', true],
    ['br;q=1, identity;q=0.5', false],
    ['deflate, GZIP', true],
    ['deflate,x-gzip ,br', true],
    ['br, zstd', false],
    ['gzipped, deflate', false]
  ]
  for (const [acceptEncoding, gzipped] of cases) {
    const res = await app.inject({ url: '/big', headers: { 'accept-encoding': acceptEncoding } })
    t.equal(res.headers['content-encoding'], gzipped ? 'gzip' : undefined, `Accept-Encoding: ${acceptEncoding}`)
    t.equal(gzipped ? gunzipSync(res.rawPayload).toString() : res.body, big)
  }

  const conditional = await app.inject({ url: '/big', headers: { 'accept-encoding': 'gzip', 'if-none-match': gz.headers.etag as string } })
  t.equal(conditional.statusCode, 304)
  const wrongCoding = await app.inject({ url: '/big', headers: { 'if-none-match': gz.headers.etag as string } })
  t.equal(wrongCoding.statusCode, 200, 'the gzip validator does not match the identity representation')

  await rawRequest(`${base}/plain`)
  const plain = await rawRequest(`${base}/plain`, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(plain.headers['x-cache'], 'HIT')
  t.equal(plain.headers['content-encoding'], undefined, 'compress: false stores it plain')
  t.equal(plain.headers.vary, undefined)
  t.equal(plain.body.toString(), big)
})

t.test('compression by default follows the clients: plain for clients without gzip, else gzipped', async (t) => {
  const server = await redis()
  const big = 'x'.repeat(5000)
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/doc/:id', { config: { cache: { ttl: 60 } } }, async () => big)
  })
  const stored = async (id: number): Promise<Buffer> => {
    await until(async () => (await app.inject(`/doc/${id}`)).headers['x-cache'] === 'HIT', 2000, `entry ${id}`)
    return await rawClient(t, server.url).getBuffer(cache.redisKey(`localhost:80/doc/${id}`)) as Buffer
  }
  await app.inject('/doc/1')
  t.ok((await stored(1)).length > big.length, 'clients without gzip: stored plain')
  const gz = await app.inject({ url: '/doc/1', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gz.headers['content-encoding'], undefined, 'and a gzip client is served the plain body')
  t.equal(gz.body, big)
  // The share of gzip clients counts from now on: mostly gzip clients, and entries go gzipped.
  for (let i = 0; i < 20; i++) await app.inject({ url: '/doc/1', headers: { 'accept-encoding': 'gzip, deflate, br' } })
  await app.inject({ url: '/doc/2', headers: { 'accept-encoding': 'gzip' } })
  t.ok((await stored(2)).length < big.length / 10, 'mostly gzip clients: stored gzipped')
})

t.test('a body the handler encoded itself is never gzipped again; negotiated ones are not stored', async (t) => {
  const server = await redis()
  const big = 'z'.repeat(10_000)
  const precompressed = gzipSync(big, { level: 0 })
  let negotiated = 0
  const { app } = await routeApp(t, onRedis(server), (app) => {
    app.get('/pre', { config: { cache: { ttl: 60 } } }, async (_req, reply) => {
      reply.header('content-encoding', 'gzip').type('text/plain')
      return precompressed
    })
    app.get('/negotiated', { config: { cache: { ttl: 60 } } }, async (req, reply) => {
      negotiated++
      reply.header('vary', 'accept-encoding').type('text/plain')
      if (req.headers['accept-encoding'] === 'gzip') {
        reply.header('content-encoding', 'gzip')
        return gzipSync(big)
      }
      return big
    })
  })
  await app.inject('/pre')
  for (const acceptEncoding of ['gzip', 'identity']) {
    const hit = await app.inject({ url: '/pre', headers: { 'accept-encoding': acceptEncoding } })
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.headers['content-encoding'], 'gzip')
    t.same(hit.rawPayload, precompressed, 'the handler\'s bytes, gzipped once')
  }

  const gz = await app.inject({ url: '/negotiated', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gz.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; detail=vary')
  const identity = await app.inject('/negotiated')
  t.equal(identity.headers['cache-status'], 'fastify-redis-cache; fwd=uri-miss; stored', 'the unencoded variant suits every client')
  const later = await app.inject('/negotiated')
  t.equal(later.headers['x-cache'], 'HIT')
  t.equal(later.body, big)
  t.equal(negotiated, 2)
})

t.test('statistics: hits and misses, per namespace', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/a', { config: { cache: { ttl: 60, namespace: 'alpha' } } }, async () => 'a')
    app.get('/b', { config: { cache: { ttl: 60 } } }, async () => 'b')
  })
  await app.inject('/a')
  await app.inject('/a')
  await app.inject('/a')
  await app.inject('/b')
  await app.inject({ method: 'HEAD', url: '/b' })
  await app.inject({ url: '/b', headers: { authorization: 'x' } })
  const stats = cache.getStatistics()
  t.equal(stats.hits, 3)
  t.equal(stats.misses, 2)
  t.equal(stats.sets, 2)
  t.ok(stats.bytesRead > 0)
  t.same(stats.namespaces.alpha, { hits: 2, misses: 1, hitRate: 2 / 3 })
  t.same(stats.namespaces.default, { hits: 1, misses: 1, hitRate: 0.5 })
  t.equal(stats.hitRate, 0.6)
})

t.test('hostile URLs: keys are literal, never patterns, never outside their namespace', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/q', { config: { cache: { ttl: 60, namespace: 'ns' } } }, async (req) => ({ url: req.url }))
    app.get('/k', {
      config: { cache: { ttl: 60, namespace: 'ns', key: (req) => (req.query as Query).k ?? 'none' } }
    }, async (req) => ({ k: (req.query as Query).k }))
    app.get('/other', { config: { cache: { ttl: 60, namespace: 'ns2' } } }, async () => 'other')
  })
  const hostile = [
    '/q?*=1',
    '/q?a=[a-z]&b=?',
    '/q?x=a:b:c',
    '/q?x=%00%0A%0D',
    '/q?..%2F..%2Fns2=1',
    '/q?x=\\*'
  ]
  for (const url of hostile) {
    t.equal((await app.inject(url)).headers['x-cache'], 'MISS', url)
    const again = await app.inject(url)
    t.equal(again.headers['x-cache'], 'HIT', url)
    t.same(again.json(), { url })
    t.equal(await cache.exists(`localhost:80${url}`, { namespace: 'ns' }), 1, 'stored under its literal key')
  }
  t.equal((await app.inject('/q?b=2')).headers['x-cache'], 'MISS', 'no pattern matched it')

  const long = `/q?x=${'a'.repeat(3000)}`
  await app.inject(long)
  t.equal((await app.inject(long)).headers['x-cache'], 'HIT', 'an overlong query is still cached')
  const digest = `#sha256:${createHash('sha256').update(`localhost:80${long}`).digest('hex')}`
  t.equal(await cache.exists(digest, { namespace: 'ns' }), 1, 'under a bounded digest key')

  for (const k of ['*', 'other:x', '../ns2/x', '?']) {
    await app.inject(`/k?k=${encodeURIComponent(k)}`)
    t.equal(await cache.exists(k, { namespace: 'ns' }), 1, `key ${k} is literal and stays in ns`)
  }
  await app.inject('/other')
  t.equal(await cache.delete('*', { namespace: 'ns' }), 1, 'deleting "*" removes only "*"')
  t.equal((await app.inject('/k?k=other%3Ax')).headers['x-cache'], 'HIT')
  t.equal(await cache.clear('ns2'), 1, 'clearing another namespace does not reach ns')
  t.equal((await app.inject('/k?k=%3F')).headers['x-cache'], 'HIT')
  // The hostile URLs, /q?b=2, the overlong one and three of the four literal keys.
  t.equal(await cache.clear('ns'), hostile.length + 1 + 1 + 3)
})

t.test('unreadable entries are misses: deleted, counted, never a 5xx', async (t) => {
  const server = await redis()
  const big = 'y'.repeat(4000)
  let runs = 0
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/r', { config: { cache: { ttl: 60, statuses: [201] } } }, async () => { runs++; return 'fresh' })
    app.get('/gz', { config: { cache: { ttl: 60, compress: true } } }, async () => { runs++; return big })
  })
  const raw = rawClient(t, server.url)
  const key = cache.redisKey('localhost:80/r')
  const head = encodeHead(200, { 'content-type': 'text/plain' })
  const valid = cache.core.codec.encode(Buffer.from('old'), KIND_RESPONSE, 60, false, head).bytes
  const corrupt: Array<[string, Buffer]> = [
    ['foreign bytes', Buffer.from('not ours at all')],
    ['a value, not a response', cache.core.codec.encode(Buffer.from('"v"'), 0, 60, false).bytes],
    ['a truncated head', valid.subarray(0, 20)],
    ['a bad status', cache.core.codec.encode(Buffer.from(''), KIND_RESPONSE, 60, false, encodeHeadText('abc')).bytes],
    ['a malformed header', cache.core.codec.encode(Buffer.from(''), KIND_RESPONSE, 60, false, encodeHeadText('200\nno colon')).bytes],
    ['a status the route never stores (its statuses are [201])', valid]
  ]
  for (const [what, bytes] of corrupt) {
    await raw.set(key, bytes)
    const errors = cache.getStatistics().errors
    const res = await app.inject('/r')
    t.equal(res.statusCode, 200, what)
    t.equal(res.body, 'fresh')
    t.equal(res.headers['x-cache'], 'MISS')
    t.equal(cache.getStatistics().errors, errors + 1, 'counted')
    await until(async () => (await raw.exists(key)) === 0, 2000, 'the unreadable entry to be deleted')
  }

  await app.inject('/gz')
  const gzKey = cache.redisKey('localhost:80/gz')
  await until(async () => (await raw.exists(gzKey)) === 1, 2000, 'the entry to be stored')
  const stored = await raw.getBuffer(gzKey) as Buffer
  await raw.set(gzKey, stored.subarray(0, stored.length - 16))
  const before = runs
  const res = await app.inject('/gz')
  t.equal(res.statusCode, 200, 'a truncated gzip body is not a 500')
  t.equal(res.headers['x-cache'], 'MISS')
  t.equal(res.body, big)
  t.equal(runs, before + 1)
  const after = await app.inject('/gz')
  t.equal(after.headers['x-cache'], 'HIT', 'replaced by the fresh response')
  t.equal(after.body, big)
})

t.test('entries written by others: no ETag means no 304, gzip or not', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server, { compression: { threshold: 10 } }), (app) => {
    app.get('/plain', { config: { cache: { ttl: 60 } } }, async () => 'handler')
    app.get('/gz', { config: { cache: { ttl: 60, compress: true } } }, async () => 'handler')
  })
  const raw = rawClient(t, server.url)
  const head = encodeHead(200, { 'content-type': 'text/plain' })
  await raw.set(cache.redisKey('localhost:80/plain'), cache.core.codec.encode(Buffer.from('written elsewhere'), KIND_RESPONSE, 60, false, head).bytes)
  await raw.set(cache.redisKey('localhost:80/gz'), cache.core.codec.encode(Buffer.from('written elsewhere, gzipped'.repeat(5)), KIND_RESPONSE, 60, true, head).bytes)
  const plain = await app.inject({ url: '/plain', headers: { 'if-none-match': '*' } })
  t.equal(plain.statusCode, 200)
  t.equal(plain.body, 'written elsewhere')
  t.equal(plain.headers.etag, undefined)
  const gz = await app.inject({ url: '/gz', headers: { 'if-none-match': '*', 'accept-encoding': 'gzip' } })
  t.equal(gz.statusCode, 200)
  t.equal(gz.headers['content-encoding'], 'gzip')
  t.equal(gz.headers.etag, undefined)
  t.equal(gunzipSync(gz.rawPayload).toString(), 'written elsewhere, gzipped'.repeat(5))
})

t.test('invalid route options fail registration with a CacheConfigError naming the route', async (t) => {
  const server = await redis()
  const bad: Array<[string, unknown]> = [
    ['must be an object or false', true],
    ['must be an object or false', null],
    ['ttl', { ttl: 0 }],
    ['ttl', { ttl: 1.5 }],
    ['staleWhileRevalidate', { staleWhileRevalidate: -1 }],
    ['staleIfError', { staleIfError: 'soon' }],
    ['Cache key', { key: '' }],
    ['Cache tag', { tags: [''] }],
    ['tags must be an array or a function', { tags: 'items' }],
    ['statuses', { statuses: [99] }],
    ['statuses', { statuses: 200 }],
    ['vary', { vary: ['bad header'] }],
    ['vary', { vary: 'accept' }],
    ['maxAge', { maxAge: -1 }],
    ['maxAge', { maxAge: true }],
    ['namespace', { namespace: 'a:b' }],
    ['bust must be an object', { bust: null }],
    ['namespace', { bust: { namespace: 'a*' } }],
    ['Cache key', { bust: { keys: [''] } }],
    ['bust.keys must be an array or a function', { bust: { keys: 'list' } }],
    ['Cache tag', { bust: { tags: [42] } }],
    ['bust.tags must be an array or a function', { bust: { tags: 'items' } }],
    ['bust needs keys, tags or a namespace', { bust: {} }]
  ]
  const errors: unknown[] = []
  const { app } = await routeApp(t, onRedis(server), (app) => {
    bad.forEach(([, cache], i) => {
      const options = { config: { cache } } as unknown as RouteOptions
      try {
        app.route({ ...options, method: 'GET', url: `/bad/${i}`, handler: async () => 'x' })
      } catch (err) {
        errors.push(err)
      }
    })
  })
  t.equal(errors.length, bad.length, 'every one fails')
  bad.forEach(([message, cache], i) => {
    const error = errors[i] as Error
    t.type(error, CacheConfigError, JSON.stringify(cache))
    t.match(error.message, `GET /bad/${i}`, 'names the route')
    t.match(error.message, message)
  })
  t.equal((await app.inject('/bad/0')).statusCode, 404, 'and is not registered')
})

t.test('route options are typed', async (t) => {
  // Compiled by `tsc` (npm run test:types); never called.
  function typeChecks (app: FastifyInstance): void {
    app.get('/typed', { config: { cache: { ttl: 60, namespace: 'n', key: (req) => req.url, tags: (req) => [req.url], vary: ['accept'], statuses: [200], maxAge: false } } }, async () => 'x')
    app.post('/typed', { config: { cache: { bust: { namespace: 'n', keys: (req, reply) => [req.url, String(reply.statusCode)], tags: ['t'] } } } }, async () => 'x')
    app.get('/off', { config: { cache: false } }, async () => 'x')
    // @ts-expect-error ttl is a number of seconds
    app.get('/bad', { config: { cache: { ttl: '60' } } }, async () => 'x')
    // @ts-expect-error key is a string or a function of the request
    app.get('/bad', { config: { cache: { key: 42 } } }, async () => 'x')
    // @ts-expect-error bust.keys is an array or a function
    app.post('/bad', { config: { cache: { bust: { keys: 'list' } } } }, async () => 'x')
  }
  t.type(typeChecks, 'function')
})

/** A head whose text is given as is (for malformed heads). */
function encodeHeadText (text: string): Buffer {
  const head = Buffer.alloc(4 + Buffer.byteLength(text, 'latin1'))
  head.writeUInt32BE(head.length - 4, 0)
  head.write(text, 4, 'latin1')
  return head
}

t.test('http-entry: the stored head, its checks, and validators', async (t) => {
  const head = encodeHead(203, {
    'content-type': 'text/plain',
    link: ['<a>', '<b>', '<c>'],
    'x-count': 3,
    'x-absent': undefined,
    'set-cookie': ['a=1'],
    'content-length': '10',
    'transfer-encoding': 'chunked'
  })
  const codec = new Codec(undefined, { enabled: false, threshold: 0, level: 1 })
  const entry = decodeEntry(codec.encode(Buffer.from('body'), KIND_RESPONSE, 60, false, head).bytes)
  t.equal(entry.status, 203)
  t.same(entry.headers, { 'content-type': 'text/plain', link: ['<a>', '<b>', '<c>'], 'x-count': '3' }, 'what is never replayed is not stored')
  t.equal(entry.body.toString(), 'body')

  for (const [name, value] of [['x-evil', 'a\nset-cookie: x=1'], ['x-evil', 'a\rb'], ['bad name', 'x'], ['na:me', 'x'], ['x-list', ['ok', 'b\nad']]] as const) {
    t.throws(() => encodeHead(200, { [name]: value as string | string[] }), CacheSerializationError, `refuses ${JSON.stringify(name)}: ${JSON.stringify(value)}`)
  }

  const open = (text: string, body = ''): Buffer => {
    const rawHead = Buffer.alloc(4 + Buffer.byteLength(text, 'latin1'))
    rawHead.writeUInt32BE(rawHead.length - 4, 0)
    rawHead.write(text, 4, 'latin1')
    return codec.encode(Buffer.from(body), KIND_RESPONSE, 60, false, rawHead).bytes
  }
  const tooShort = codec.encode(Buffer.from('ab'), KIND_RESPONSE, 60, false).bytes
  const overlong = open('200')
  overlong.writeUInt32BE(9999, 13)
  const forged: Array<[string, Buffer]> = [
    ['a payload shorter than the head length field', tooShort],
    ['a head longer than the payload', overlong],
    ['no status', open('')],
    ['a 1xx status', open('103')],
    ['a status over 599', open('600')],
    ['a header line without a colon', open('200\nnocolon')],
    ['an empty header name', open('200\n:value')],
    ['a header name Node refuses', open('200\nbad name:x')],
    ['a header value Node refuses', open('200\nx-a:\u0001')],
    ['a header that is never stored', open('200\ntransfer-encoding:chunked')],
    ['a kind other than a response', codec.encode(Buffer.from('x'), 0, 60, false).bytes]
  ]
  for (const [what, bytes] of forged) t.throws(() => decodeEntry(bytes), CacheDeserializationError, what)
  t.same(decodeEntry(open('204')).headers, {}, 'a head with the status only')

  const etag = strongEtag(Buffer.from('abc'))
  t.equal(etag, strongEtag(Buffer.from('abc')), 'stable')
  t.match(etag, /^"[A-Za-z0-9_-]+"$/)
  t.ok(etagMatches('*', etag))
  t.ok(etagMatches(` ${etag} `, etag))
  t.ok(etagMatches(`W/${etag}`, etag), 'weak comparison')
  t.ok(etagMatches(etag, `W/${etag}`))
  t.ok(etagMatches(`"x", "y",${etag}`, etag))
  t.notOk(etagMatches('"x", "y"', etag))
  t.notOk(etagMatches('', etag))
})

t.test('DEBUG=true logs every route cache decision, early replies included', async (t) => {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  process.env.DEBUG = 'true'
  t.teardown(() => { delete process.env.DEBUG })
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  app.get('/d', {
    onRequest: async (request, reply) => { if (request.headers['x-deny'] !== undefined) return reply.code(401).send({ denied: true }) },
    config: { cache: { ttl: 60 } }
  }, async () => ({ ok: true }))
  await app.inject('/d')
  await app.inject('/d')
  await app.inject({ url: '/d', headers: { 'x-deny': '1' } })
  const decisions = logs.find('route cache decision', LEVEL.debug)
  t.same(decisions.map((line) => line.outcome), ['MISS', 'HIT', 'BYPASS'])
  t.equal(decisions[0].key, 'cache:default:localhost:80/d')
  t.equal(decisions[2].key, undefined, 'the early reply came before any key was made')
})

t.test('decoded entries are bounded in bytes; those hit get a second chance', async (t) => {
  const codec = new Codec(undefined, { enabled: true, threshold: 1, level: 1 })
  const stored = (body: string): Buffer => codec.encode(Buffer.from(body), KIND_RESPONSE, 60, undefined, encodeHead(200, {})).bytes
  // Room for two small entries with their overhead, not three.
  const entries = new DecodedEntries(2 * ENTRY_OVERHEAD + 200)
  const a = stored('a'.repeat(100))
  const b = stored('b'.repeat(100))
  const c = stored('c'.repeat(100))
  entries.remember('a', decodeEntry(a))
  entries.remember('b', decodeEntry(b))
  t.ok(entries.get('a', a), 'a hit: a is now the most recent')
  entries.remember('c', decodeEntry(c))
  t.equal(entries.get('b', b), undefined, 'the least recently hit went past maxBytes')
  t.ok(entries.get('a', a))
  t.equal(entries.get('a', c), undefined, 'another version of the bytes is not the one decoded')
  t.equal(entries.plainBody('c', entries.get('c', c) as HttpEntry, false).toString(), 'c'.repeat(100))

  const small = new DecodedEntries(ENTRY_OVERHEAD + 150)
  const big = stored('x'.repeat(1000))
  const entry = decodeEntry(big)
  small.remember('big', entry)
  t.ok(small.get('big', big), 'its stored (gzipped) size fits')
  t.equal(small.plainBody('big', entry, false).length, 1000, 'the gunzipped body is still handed out')
  t.equal(small.get('big', big), undefined, 'but it pushed the entry past maxBytes')
  const loose = decodeEntry(stored('y'.repeat(50)))
  t.equal(small.plainBody('not remembered', loose, false).toString(), 'y'.repeat(50), 'an entry not remembered is gunzipped too')

  const plain = (body: string, storedAt: number): Buffer => writeEnvelope(ENCODING_PLAIN, KIND_RESPONSE, { storedAt, freshFor: 60 }, Buffer.from(body), encodeHead(200, { etag: '"v1"' }))
  const heads = new DecodedEntries(10 * ENTRY_OVERHEAD)
  const first = plain('first body', 1000)
  heads.remember('p', decodeEntry(first))
  const again = heads.get('p', plain('first body', 1000))
  t.equal(again?.body.toString(), 'first body', 'a plain entry: its head kept, the body from the bytes read')
  t.equal(heads.get('p', plain('other body', 1000))?.body.toString(), 'other body', 'the body always comes from the bytes read')
  t.equal(heads.get('p', plain('first body', 1001)), undefined, 'another stored-at time is another version')
  t.equal(heads.get('p', first.subarray(0, 20)), undefined, 'bytes shorter than the head')

  const nearby = decodeEntry(stored('z'.repeat(20_000)))
  t.equal(small.plainBody('nearby', nearby, true).length, 20_000, 'a large body of a nearby entry is gunzipped')
  t.equal(nearby.plain, undefined, 'and not kept')
  const nearbySmall = decodeEntry(stored('z'.repeat(2_000)))
  t.equal(small.plainBody('nearby', nearbySmall, true).length, 2_000)
  t.equal(nearbySmall.plain?.length, 2_000, 'a small one is kept on the entry')
})

t.test('the memory store: hits decode an entry once and read its bytes in place', async (t) => {
  let runs = 0
  const { app } = await routeApp(t, { redis: false, compression: { threshold: 100 } }, (app) => {
    app.get('/doc', { config: { cache: { ttl: 60, compress: true } } }, async () => { runs++; return 'd'.repeat(3000) })
  })
  await app.inject({ url: '/doc', headers: { 'accept-encoding': 'gzip' } })
  const gz = await app.inject({ url: '/doc', headers: { 'accept-encoding': 'gzip' } })
  t.equal(gz.headers['x-cache'], 'HIT')
  t.equal(gz.headers['content-encoding'], 'gzip')
  for (let i = 0; i < 2; i++) {
    const plain = await app.inject('/doc')
    t.equal(plain.headers['x-cache'], 'HIT')
    t.equal(plain.body, 'd'.repeat(3000), 'gunzipped for a client without gzip')
  }
  t.equal(runs, 1)
})
