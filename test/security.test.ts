// The security model of route caching, as an attacker and a newcomer would try it, with default
// options, against a real Redis and against the in-process store: a shared cache never gives a
// client what the handler would not have given it. Each test is one way it could go wrong.
import { connect } from 'node:net'
import t from 'tap'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { KIND_RESPONSE } from '../lib/envelope'
import type { CacheManager } from '../lib/cache/manager'
import { encodeHead } from '../lib/route-cache/http-entry'
import { constraintKey } from '../lib/route-cache/request-key'
import type { CacheOptions } from '../types'
import { LEVEL, type Scope, until } from './helpers/app'
import { listen, onRedis, type RouteApp, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)
const STORES = ['redis', 'memory'] as const
type Store = typeof STORES[number]

async function app (t: Scope, store: Store, declare: (app: FastifyInstance) => void, options: CacheOptions = {}): Promise<RouteApp> {
  const base = store === 'redis' ? onRedis(await redis()) : { redis: false as const }
  return routeApp(t, { ...base, ...options }, declare)
}

/** An auth check as @fastify/auth or a hand-written hook does it: 401 without the right key. */
async function requireKey (request: FastifyRequest, reply: FastifyReply): Promise<void> {
  if (request.headers['x-api-key'] !== 'good') await reply.code(401).send({ error: 'unauthorized' })
}

/** Writes a response entry that is already stale, as an earlier request would have left it. */
async function plantStale (cache: CacheManager, key: string, body: string): Promise<void> {
  const head = encodeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
  const bytes = cache.core.codec.encode(Buffer.from(body), KIND_RESPONSE, 1, false, head, Date.now() - 5000).bytes
  await cache.core.stack.entries.set(cache.redisKey(key), bytes, 600, [])
}

for (const store of STORES) {
  t.test(`1. hits run the route's authentication like misses do (${store})`, async (t) => {
    let runs = 0
    const { app: server } = await app(t, store, (app) => {
      // An application hook registered after the plugin, and a route-level preHandler.
      app.addHook('preValidation', async (request, reply) => {
        if (request.headers['x-banned'] !== undefined) await reply.code(403).send({ error: 'banned' })
      })
      app.get('/secret', { preHandler: requireKey, config: { cache: { ttl: 60 } } }, async () => ({ secret: ++runs }))
    })
    t.equal((await server.inject({ url: '/secret', headers: { 'x-api-key': 'good' } })).headers['x-cache'], 'MISS')
    t.equal((await server.inject({ url: '/secret', headers: { 'x-api-key': 'good' } })).headers['x-cache'], 'HIT')
    const anonymous = await server.inject('/secret')
    t.equal(anonymous.statusCode, 401, 'the anonymous request is refused, hit or not')
    t.same(anonymous.json(), { error: 'unauthorized' })
    t.equal(anonymous.headers['x-cache'], 'BYPASS')
    const banned = await server.inject({ url: '/secret', headers: { 'x-api-key': 'good', 'x-banned': '1' } })
    t.equal(banned.statusCode, 403, 'an application-level hook runs on hits too')
    t.equal(runs, 1)
  })

  t.test(`1b. skipHooksOnHit answers hits before the hooks, and says so at start (${store})`, async (t) => {
    const { app: server, logs } = await app(t, store, (app) => {
      app.get('/public', { preHandler: requireKey, config: { cache: { ttl: 60, skipHooksOnHit: true } } }, async () => 'public')
    })
    t.match(logs.find('opted out of the safe defaults', LEVEL.info), [{ routes: ['GET /public (skipHooksOnHit: hits skip the route\'s hooks)'] }])
    t.equal((await server.inject({ url: '/public', headers: { 'x-api-key': 'good' } })).headers['x-cache'], 'MISS')
    const hit = await server.inject('/public')
    t.equal(hit.statusCode, 200, 'what the option says: the hook does not run on a hit')
    t.equal(hit.headers['x-cache'], 'HIT')
  })

  t.test(`2. requests with Cookie or Authorization bypass the shared entry (${store})`, async (t) => {
    let runs = 0
    const { app: server, cache, logs } = await app(t, store, (app) => {
      const page = async (request: FastifyRequest): Promise<string> => { runs++; return `page of ${request.headers.cookie ?? request.headers.authorization ?? 'nobody'}` }
      app.get('/page', { config: { cache: { ttl: 60, maxAge: 60 } } }, page)
      app.get('/shared', { config: { cache: { ttl: 60, maxAge: 60, credentials: 'shared' } } }, async () => 'the same for all')
      app.get('/mine', { config: { cache: { ttl: 60, credentials: 'per-user', key: (req) => ['mine', String(req.headers.cookie)] } } }, page)
    })
    const alice = await server.inject({ url: '/page', headers: { cookie: 'sid=alice' } })
    t.equal(alice.body, 'page of sid=alice')
    t.equal(alice.headers['x-cache'], 'BYPASS')
    t.equal(alice.headers['cache-status'], 'fastify-redis-cache; fwd=request; detail=cookie')
    t.equal((await server.inject({ url: '/page', headers: { cookie: 'sid=bob' } })).body, 'page of sid=bob', 'Bob never gets Alice\'s page')
    t.equal((await server.inject('/page')).body, 'page of nobody', 'nor does an anonymous client')
    t.equal((await server.inject({ url: '/page', headers: { authorization: 'Bearer alice' } })).headers['x-cache'], 'BYPASS')
    t.equal((await server.inject('/page')).headers['x-cache'], 'HIT', 'anonymous clients share the entry')
    t.equal(runs, 4)

    const withCookie = await server.inject({ url: '/shared', headers: { cookie: 'tracking=1' } })
    t.equal(withCookie.headers['cache-control'], 'private, max-age=60', 'never public for a request with credentials')
    t.equal((await server.inject('/shared')).headers['x-cache'], 'HIT', 'credentials: shared shares the entry')
    t.equal((await server.inject('/page')).headers['cache-control'], 'public, max-age=60')

    await server.inject({ url: '/mine', headers: { cookie: 'sid=alice' } })
    const bob = await server.inject({ url: '/mine', headers: { cookie: 'sid=bob' } })
    t.equal(bob.headers['x-cache'], 'MISS', 'per-user: an entry per user')
    t.equal(bob.body, 'page of sid=bob')
    t.equal(await cache.exists(['mine:sid=alice', 'mine:sid=bob']), 2)
    t.match(logs.find('opted out of the safe defaults'), [{ routes: ['GET /shared (credentials: shared)', 'GET /mine (credentials: per-user)'] }])
  })

  t.test(`3. the host and the route's constraints are part of the default key (${store})`, async (t) => {
    const { app: server, cache } = await app(t, store, (app) => {
      app.get('/home', { config: { cache: { ttl: 60 } } }, async (request) => ({ link: `https://${request.host}/next` }))
      app.get('/api', { constraints: { version: '1.0.0' }, config: { cache: { ttl: 60 } } }, async () => 'v1')
      app.get('/api', { constraints: { version: '2.0.0' }, config: { cache: { ttl: 60 } } }, async () => 'v2')
    })
    await server.inject({ url: '/home', headers: { host: 'evil.example' } })
    const www = await server.inject({ url: '/home', headers: { host: 'www.example' } })
    t.equal(www.headers['x-cache'], 'MISS', 'another host, another entry')
    t.same(www.json(), { link: 'https://www.example/next' }, 'never poisoned by another Host')
    t.equal((await server.inject({ url: '/home', headers: { host: 'WWW.example' } })).headers['x-cache'], 'HIT', 'host names are case-insensitive')
    t.equal(await cache.exists('www.example/home'), 1, 'the default key is host, path and query')
    const sneaky = await server.inject({ url: '/home', headers: { host: 'www.example/home?x=' } })
    t.equal(sneaky.headers['x-cache'], 'BYPASS', 'a Host that could pass for a path is not cached')
    t.equal(sneaky.headers['cache-status'], 'fastify-redis-cache; fwd=request; detail=host')

    t.equal((await server.inject({ url: '/api', headers: { 'accept-version': '1.0.0' } })).body, 'v1')
    const v2 = await server.inject({ url: '/api', headers: { 'accept-version': '2.0.0' } })
    t.equal(v2.body, 'v2', 'routes picked by a constraint never share an entry')
    t.equal(v2.headers['x-cache'], 'MISS')
    t.equal((await server.inject({ url: '/api', headers: { 'accept-version': '1.0.0' } })).body, 'v1')
  })

  t.test(`3b. keys made of parts cannot collide (${store})`, async (t) => {
    const { app: server, cache } = await app(t, store, (app) => {
      app.get('/r/:a/:b', { config: { cache: { ttl: 60, key: (req) => { const { a, b } = req.params as { a: string, b: string }; return [a, b] } } } }, async (req) => req.url)
    })
    t.equal((await server.inject('/r/item%3A5/reviews')).headers['x-cache'], 'MISS')
    t.equal((await server.inject('/r/item/5%3Areviews')).headers['x-cache'], 'MISS', 'item:5 + reviews is not item + 5:reviews')
    t.equal(await cache.exists(['item\\:5:reviews', 'item:5\\:reviews']), 2)
  })

  t.test(`4. the background refresh runs as the client, with exactly its headers (${store})`, async (t) => {
    const seen: Array<{ ip: string, headers: Record<string, unknown> }> = []
    const { app: server, cache } = await app(t, store, (app) => {
      app.get('/who', { config: { cache: { ttl: 1, staleWhileRevalidate: 600 } } }, async (request) => {
        seen.push({ ip: request.ip, headers: { ...request.headers } })
        return 'fresh'
      })
    })
    await plantStale(cache, 'localhost:80/who', 'stale')
    const stale = await server.inject({ url: '/who', remoteAddress: '10.0.0.7', headers: { 'x-client': 'c1', 'if-none-match': '"x"' } })
    t.equal(stale.headers['x-cache'], 'STALE')
    await until(() => seen.length === 1, 2000, 'the refresh')
    t.equal(seen[0].ip, '10.0.0.7', 'the handler sees the client\'s address, not the loopback')
    t.equal(seen[0].headers['x-client'], 'c1')
    t.equal(seen[0].headers['if-none-match'], undefined, 'only the validators are left out')
    t.same(Object.keys(seen[0].headers).filter((name) => name.includes('fastify-redis-cache')), [], 'no header of the cache\'s own')
    await until(async () => (await server.inject('/who')).headers['x-cache'] === 'HIT', 2000, 'the refreshed entry')

    const forged = await server.inject({ url: '/who', headers: { 'x-fastify-redis-cache-refresh': 'anything' } })
    t.equal(forged.headers['x-cache'], 'HIT', 'no header a client sends skips the cache')
    t.equal(seen.length, 1)
  })

  t.test(`4b. a client whose connection is gone gets no refresh from the loopback (${store})`, async (t) => {
    let runs = 0
    const { app: server, cache } = await app(t, store, (app) => {
      // As a closed socket does: it no longer has an address.
      app.addHook('preValidation', async (request) => {
        if (request.headers['x-gone'] !== undefined) Object.defineProperty(request.socket, 'remoteAddress', { value: undefined })
      })
      app.get('/gone', { config: { cache: { ttl: 1, staleWhileRevalidate: 600 } } }, async () => { runs++; return 'fresh' })
    })
    // A refresh is started at once, inside the stale answer, as an inject carrying its own
    // Request class: counting those tells, without waiting, whether one was started.
    const inject = server.inject.bind(server) as (opts: { Request?: unknown }) => unknown
    let refreshes = 0
    server.inject = ((opts: { Request?: unknown }) => {
      if (opts?.Request !== undefined) refreshes++
      return inject(opts)
    }) as unknown as typeof server.inject
    await plantStale(cache, 'localhost:80/gone', 'stale')
    t.equal((await server.inject({ url: '/gone', headers: { 'x-gone': '1' } })).headers['x-cache'], 'STALE')
    t.equal(refreshes, 0, 'no refresh for the request whose socket is gone')
    t.equal((await server.inject('/gone')).headers['x-cache'], 'STALE')
    t.equal(refreshes, 1, 'the next one refreshes')
    await until(() => runs === 1, 2000, 'the refresh of the second')
  })

  t.test(`7. 206 is never stored, nor headers a shared cache must not keep (${store})`, async (t) => {
    await t.rejects(app(t, store, (app) => {
      app.get('/ranged', { config: { cache: { ttl: 60, statuses: [200, 206] } } }, async () => 'x')
    }), /statuses cannot include 206/)
    const { app: server } = await app(t, store, (app) => {
      app.get('/file', { config: { cache: { ttl: 60 } } }, async (request, reply) => {
        if (request.headers.range !== undefined) return reply.code(206).header('content-range', 'bytes 0-1/10').send('01')
        return reply
          .header('proxy-authentication-info', 'nextnonce="abc"')
          .header('connection', 'x-per-hop')
          .header('x-per-hop', 'secret')
          .send('0123456789')
      })
    })
    const partial = await server.inject({ url: '/file', headers: { range: 'bytes=0-1' } })
    t.equal(partial.statusCode, 206)
    const plain = await server.inject('/file')
    t.equal(plain.statusCode, 200, 'a plain GET never gets the 206')
    t.equal(plain.headers['x-cache'], 'MISS')
    const hit = await server.inject('/file')
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.body, '0123456789')
    t.equal(hit.headers['proxy-authentication-info'], undefined)
    t.equal(hit.headers['x-per-hop'], undefined, 'a header the Connection header names is hop-by-hop')
  })

  t.test(`8. a body over maxEntrySize costs no compression; a large one is stored gzipped (${store})`, async (t) => {
    const big = JSON.stringify({ data: 'x'.repeat(300_000) })
    const { app: server, cache } = await app(t, store, (app) => {
      app.get('/huge', { config: { cache: { ttl: 60 } } }, async (_request, reply) => reply.type('application/json').send(big))
      app.get('/large', { config: { cache: { ttl: 60, compress: true } } }, async (_request, reply) => reply.type('application/json').send(big.slice(0, 150_000)))
    }, { maxEntrySize: 200_000 })
    for (let i = 0; i < 3; i++) t.equal((await server.inject('/huge')).headers['x-cache'], 'MISS')
    t.equal(cache.getStatistics().compressedBytesIn, 0, 'never gzipped')
    t.equal(cache.getStatistics().oversized, 3)
    const first = await server.inject('/large')
    t.equal(first.headers.vary, 'accept-encoding')
    await until(async () => (await server.inject({ url: '/large', headers: { 'accept-encoding': 'gzip' } })).headers['x-cache'] === 'HIT', 2000, 'the entry')
    t.ok(cache.getStatistics().compressedBytesOut < 10_000, 'stored gzipped')
    t.equal((await server.inject('/large')).body.length, 150_000, 'and gunzipped for clients that do not take gzip')
  })
}

t.test('9. a warning a client can cause on every request is logged once in a while', async (t) => {
  const { app: server, logs } = await app(t, 'memory', (app) => {
    app.get('/k', { config: { cache: { ttl: 60, key: (req) => String((req.query as { k: string }).k) } } }, async () => 'ok')
  })
  for (let i = 0; i < 20; i++) t.equal((await server.inject(`/k?k=${'x'.repeat(2000)}`)).headers['x-cache'], 'BYPASS')
  t.equal(logs.find('cannot build the cache key').length, 1)
})

t.test('routeDefaults.credentials sets every route\'s default; per-user needs a key function', async (t) => {
  const { app: server } = await app(t, 'memory', (app) => {
    app.get('/d', { config: { cache: { ttl: 60 } } }, async () => 'same')
  }, { routeDefaults: { credentials: 'shared' } })
  await server.inject({ url: '/d', headers: { cookie: 'a=1' } })
  t.equal((await server.inject({ url: '/d', headers: { cookie: 'a=2' } })).headers['x-cache'], 'HIT')
  await t.rejects(app(t, 'memory', (app) => {
    app.get('/u', { config: { cache: { ttl: 60, credentials: 'per-user' } } }, async () => 'u')
  }), /credentials: 'per-user' needs a key function/)
  await t.rejects(app(t, 'memory', (app) => {
    app.get('/u', { config: { cache: { ttl: 60, credentials: 'everyone' as 'shared' } } }, async () => 'u')
  }), /credentials must be one of bypass, shared, per-user/)
  const legacy = await app(t, 'memory', (app) => {
    app.get('/l', { config: { cache: { ttl: 60, allowAuthorization: true, key: (req) => String(req.headers.authorization) } } }, async () => 'l')
  })
  await legacy.app.inject({ url: '/l', headers: { authorization: 'Bearer a' } })
  t.equal((await legacy.app.inject({ url: '/l', headers: { authorization: 'Bearer a' } })).headers['x-cache'], 'HIT', 'allowAuthorization: true is per-user')
})

t.test('the default key without a Host (HTTP/1.0), and past the memo of hosts', async (t) => {
  const { app: server, cache } = await app(t, 'memory', (app) => {
    app.get('/h', { config: { cache: { ttl: 60 } } }, async (request) => `host ${request.host ?? 'none'}`)
  })
  const base = await listen(server)
  const { port } = new URL(base)
  const http10 = async (): Promise<string> => await new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.end('GET /h HTTP/1.0\r\n\r\n'))
    let text = ''
    socket.on('data', (chunk) => { text += chunk.toString() })
    socket.on('end', () => resolve(text))
    socket.on('error', reject)
  })
  t.match(await http10(), /x-cache: MISS/i)
  t.match(await http10(), /x-cache: HIT/i, 'no Host is a host of its own')
  t.equal(await cache.exists('/h'), 1)
  // More hosts than the per-route memo keeps: each still gets its own entry.
  for (let i = 0; i < 20; i++) {
    const res = await server.inject({ url: '/h', headers: { host: `tenant${i}.example` } })
    t.equal(res.body, `host tenant${i}.example`)
  }
  t.equal((await server.inject({ url: '/h', headers: { host: 'tenant0.example' } })).headers['x-cache'], 'HIT')
})

t.test('a large body whose gzip fails off the event loop: answered, not stored, counted', async (t) => {
  const body = 'z'.repeat(100_000)
  const { app: server, cache } = await app(t, 'memory', (app) => {
    app.get('/big', { config: { cache: { ttl: 60, compress: true } } }, async () => body)
  })
  // A gzip level zlib refuses: the compression fails as it would on a broken zlib.
  ;(cache.core.codec as unknown as { compression: { level: number } }).compression.level = 42
  const res = await server.inject('/big')
  t.equal(res.statusCode, 200)
  t.equal(res.body, body, 'the client gets the whole body')
  await until(() => cache.getStatistics().errors === 1, 2000, 'the failure to be counted')
  t.equal((await server.inject('/big')).headers['x-cache'], 'MISS', 'nothing was stored')
})

for (const store of STORES) {
  t.test(`a hit is never followed by the handler, whatever the onSend hooks (${store})`, async (t) => {
    let runs = 0
    const { app: server } = await app(t, store, (app) => {
      // Async onSend hooks: the reply is not yet `sent` when the lookup settles.
      app.addHook('onSend', async (_request, _reply, payload) => { await new Promise((resolve) => setImmediate(resolve)); return payload })
      app.get('/once', { config: { cache: { ttl: 60 } } }, async () => `run ${++runs}`)
    })
    for (let i = 0; i < 3; i++) t.equal((await server.inject('/once')).body, 'run 1')
    t.equal(runs, 1)
  })

  t.test(`an entry filled anonymously is private to a client with credentials (${store})`, async (t) => {
    const { app: server } = await app(t, store, (app) => {
      app.get('/open', { config: { cache: { ttl: 60, maxAge: 30, credentials: 'shared' } } }, async () => 'open')
      app.get('/own', { config: { cache: { ttl: 60 } } }, async (_request, reply) => reply.header('cache-control', 'public, max-age=5').send('own'))
    })
    t.equal((await server.inject('/open')).headers['cache-control'], 'public, max-age=30')
    const hit = await server.inject({ url: '/open', headers: { authorization: 'Bearer a' } })
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.headers['cache-control'], 'private, max-age=30')
    t.equal((await server.inject({ url: '/own', headers: { cookie: 'a=1' } })).headers['cache-control'], 'private, max-age=5', 'the handler\'s own header too')
  })

  t.test(`a write gzipped off the event loop is dropped when an invalidation overtakes it (${store})`, async (t) => {
    const big = 'y'.repeat(100_000)
    const { app: server, cache } = await app(t, store, (app) => {
      app.get('/big', { config: { cache: { ttl: 60, compress: true, key: 'big' } } }, async () => big)
    })
    const setting = cache.set('value', big)
    await cache.delete('value')
    t.equal(await setting, false, 'a set whose value was still being gzipped when the delete came')
    t.equal(await cache.get('value'), null)

    const gzipped = cache.getStatistics().compressedBytesIn
    t.equal((await server.inject('/big')).headers['x-cache'], 'MISS')
    // Busted as soon as the response is in, while its entry is still being gzipped.
    await cache.delete('big')
    // The gzip is counted just before its write is stored or dropped.
    await until(() => cache.getStatistics().compressedBytesIn > gzipped, 2000, 'the gzip to finish')
    t.equal((await server.inject('/big')).headers['x-cache'], 'MISS', 'the old answer was not stored after the bust')
    await until(async () => (await server.inject('/big')).headers['x-cache'] === 'HIT', 2000, 'a later answer to be stored')
  })
}

t.test('constraints of any shape make distinct keys', async (t) => {
  t.equal(constraintKey(undefined), '')
  t.not(constraintKey({ host: /a\.example/ }), constraintKey({ host: /b\.example/ }))
  t.not(constraintKey({ custom: { a: 1 } }), constraintKey({ custom: { a: 2 } }), 'objects are not all [object Object]')
  t.not(constraintKey({ x: '1 y=2' }), constraintKey({ x: '1', y: '2' }))
  t.equal(constraintKey({ b: '1', a: '2' }), constraintKey({ a: '2', b: '1' }), 'in name order')
})
