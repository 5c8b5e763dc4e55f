// Route caching across a mutation and across instances: bust.keys / bust.namespace / bust.tags,
// busts only after a 2xx and awaited before the response, failed busts, and two app instances
// sharing one Redis, over real HTTP as well as inject.
import { Readable } from 'node:stream'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { RedisConnectionError } from '../lib/errors'
import { LEVEL, rawClient, uniquePrefix, until } from './helpers/app'
import { startRedis } from './helpers/redis-server'
import { listen, onRedis, rawRequest, type RouteApp, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)

interface Params { id: string }

/** An items API: cached reads in namespace `items`, writes that bust them. */
function itemsApi (store: Map<string, string>, runs: { list: number, item: number }) {
  return (app: FastifyInstance): void => {
    app.get('/items', { config: { cache: { ttl: 600, namespace: 'items', key: 'list', tags: ['items'] } } }, async () => {
      runs.list++
      return [...store.entries()]
    })
    app.get<{ Params: Params }>('/items/:id', {
      config: { cache: { ttl: 600, namespace: 'items', key: (req) => `item:${req.params.id}`, tags: (req) => ['items', `item:${req.params.id}`] } }
    }, async (req, reply) => {
      runs.item++
      const value = store.get(req.params.id)
      if (value === undefined) return reply.code(404).send({ error: 'missing' })
      return { id: req.params.id, value }
    })
    app.post<{ Body: { id: string, value: string } }>('/items', {
      config: { cache: { bust: { namespace: 'items', keys: ['list'] } } }
    }, async (req, reply) => {
      store.set(req.body.id, req.body.value)
      return reply.code(201).send({ created: req.body.id })
    })
    app.put<{ Params: Params, Body: { value: string } }>('/items/:id', {
      config: { cache: { bust: { namespace: 'items', keys: (req) => ['list', `item:${req.params.id}`] } } }
    }, async (req) => {
      store.set(req.params.id, req.body.value)
      return { updated: req.params.id }
    })
    app.delete('/items', { config: { cache: { bust: { namespace: 'items' } } } }, async (_req, reply) => {
      store.clear()
      return reply.code(204).send()
    })
    app.post<{ Params: Params }>('/items/:id/touch', {
      config: { cache: { bust: { tags: (req) => [`item:${req.params.id}`] } } }
    }, async () => ({ touched: true }))
    app.post('/items/reindex', { config: { cache: { bust: { tags: ['items'] } } } }, async () => ({ reindexed: true }))
  }
}

t.test('bust.keys: after a mutation the next read is fresh (real HTTP)', async (t) => {
  const server = await redis()
  const store = new Map([['1', 'one']])
  const runs = { list: 0, item: 0 }
  const { app } = await routeApp(t, onRedis(server), itemsApi(store, runs))
  const base = await listen(app)

  const first = await fetch(`${base}/items`)
  t.equal(first.headers.get('x-cache'), 'MISS')
  const second = await fetch(`${base}/items`)
  t.equal(second.headers.get('x-cache'), 'HIT')
  t.same(await second.json(), [['1', 'one']])

  const created = await fetch(`${base}/items`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: '2', value: 'two' }) })
  t.equal(created.status, 201)
  t.equal(created.headers.get('x-cache'), null, 'a mutation is not a cached route')
  const after = await fetch(`${base}/items`)
  t.equal(after.headers.get('x-cache'), 'MISS', 'the old list is gone')
  t.same(await after.json(), [['1', 'one'], ['2', 'two']])
  t.equal(runs.list, 2)
})

t.test('the bust is awaited: the response waits for Redis to drop the entry', async (t) => {
  const server = await redis()
  const store = new Map([['1', 'one']])
  const { app, cache } = await routeApp(t, onRedis(server, { commandTimeout: 2000 }), itemsApi(store, { list: 0, item: 0 }))
  await app.inject('/items')
  const raw = rawClient(t, server.url)
  const key = cache.redisKey('list', 'items')
  t.equal(await raw.exists(key), 1)
  // Writes wait 500 ms in Redis: a bust that is not awaited would answer at once.
  await raw.call('CLIENT', 'PAUSE', '500', 'WRITE')
  const started = Date.now()
  const res = await app.inject({ method: 'POST', url: '/items', payload: { id: '2', value: 'two' } })
  const took = Date.now() - started
  t.equal(res.statusCode, 201)
  t.ok(took >= 300, `the response waited for the bust (${took} ms)`)
  t.equal(await raw.exists(key), 0, 'and the entry was gone when it left')
})

t.test('bust.keys as a function of the request, bust.namespace, bust.tags', async (t) => {
  const server = await redis()
  const store = new Map([['1', 'one'], ['2', 'two']])
  const runs = { list: 0, item: 0 }
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    itemsApi(store, runs)(app)
    app.get('/elsewhere', { config: { cache: { ttl: 600, namespace: 'other' } } }, async () => 'other')
  })
  const warm = async (): Promise<void> => {
    for (const url of ['/items', '/items/1', '/items/2', '/elsewhere']) await app.inject(url)
  }
  const outcomes = async (): Promise<string[]> => {
    const out: string[] = []
    for (const url of ['/items', '/items/1', '/items/2', '/elsewhere']) out.push(String((await app.inject(url)).headers['x-cache']))
    return out
  }

  await warm()
  t.same(await outcomes(), ['HIT', 'HIT', 'HIT', 'HIT'])
  const put = await app.inject({ method: 'PUT', url: '/items/1', payload: { value: 'uno' } })
  t.equal(put.statusCode, 200)
  t.same(await outcomes(), ['MISS', 'MISS', 'HIT', 'HIT'], 'PUT /items/1 busts the list and item 1')
  t.same((await app.inject('/items/1')).json(), { id: '1', value: 'uno' })

  await app.inject({ method: 'POST', url: '/items/2/touch' })
  t.same(await outcomes(), ['HIT', 'HIT', 'MISS', 'HIT'], 'tags from a function: only item 2')

  await app.inject({ method: 'POST', url: '/items/reindex' })
  t.same(await outcomes(), ['MISS', 'MISS', 'MISS', 'HIT'], 'tag "items" reaches every item entry')

  const cleared = await app.inject({ method: 'DELETE', url: '/items' })
  t.equal(cleared.statusCode, 204)
  t.equal(await cache.exists(['list', 'item:1', 'item:2'], { namespace: 'items' }), 0, 'a namespace alone clears it')
  t.equal(await cache.exists('localhost:80/elsewhere', { namespace: 'other' }), 1, 'and only it')
})

t.test('busts run only after a 2xx', async (t) => {
  const server = await redis()
  let status = 200
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/list', { config: { cache: { ttl: 600, key: 'list' } } }, async () => 'list')
    app.post('/mutate', { config: { cache: { bust: { keys: ['list'] } } } }, async (_req, reply) => {
      if (status === 500) throw new Error('failed')
      if (status === 302) return reply.redirect('/list')
      return reply.code(status).send({ status })
    })
  })
  for (const code of [400, 404, 409, 500, 302]) {
    await app.inject('/list')
    status = code
    const res = await app.inject({ method: 'POST', url: '/mutate' })
    t.equal(res.statusCode, code)
    t.equal(await cache.exists('list'), 1, `no bust after a ${code}`)
  }
  for (const code of [200, 201, 202, 204]) {
    await app.inject('/list')
    t.equal(await cache.exists('list'), 1)
    status = code
    const res = await app.inject({ method: 'POST', url: '/mutate' })
    t.equal(res.statusCode, code)
    t.equal(await cache.exists('list'), 0, `busted after a ${code}`)
  }
})

t.test('a failing bust is counted and logged; the response still goes out', async (t) => {
  const server = await redis()
  const { app, cache, logs } = await routeApp(t, onRedis(server), (app) => {
    app.get('/list', { config: { cache: { ttl: 600, key: 'list' } } }, async () => 'list')
    app.post('/throws', { config: { cache: { bust: { keys: () => { throw new Error('no keys today') } } } } }, async () => ({ ok: 1 }))
    app.post('/bad-key', { config: { cache: { bust: { keys: () => [''] } } } }, async () => ({ ok: 2 }))
    app.post('/bad-tag', { config: { cache: { bust: { tags: () => [''] } } } }, async () => ({ ok: 3 }))
  })
  await app.inject('/list')
  let expected = 0
  for (const url of ['/throws', '/bad-key', '/bad-tag']) {
    const res = await app.inject({ method: 'POST', url })
    t.equal(res.statusCode, 200, url)
    t.same(Object.keys(res.json()), ['ok'])
    expected++
    t.equal(cache.getStatistics().errors, expected, 'counted once')
  }
  t.equal(logs.find('cache bust failed; the response is sent anyway', LEVEL.error).length, 3)
  t.equal(await cache.exists('list'), 1)
})

t.test('Redis down during a bust: the mutation answers, the failure is counted and logged', async (t) => {
  const server = await startRedis()
  t.teardown(() => server.stop())
  const options = onRedis(server, { circuitBreaker: false })
  const lenient = await routeApp(t, options, (app) => {
    app.post('/m', { config: { cache: { bust: { keys: ['a'], tags: ['b'] } } } }, async () => ({ ok: true }))
    app.post('/clear', { config: { cache: { bust: { namespace: 'ns' } } } }, async () => ({ ok: true }))
  })
  const strict = await routeApp(t, { ...options, throwOnError: true }, (app) => {
    app.post('/m', { config: { cache: { bust: { keys: ['a'] } } } }, async () => ({ ok: true }))
  })
  await server.kill()

  for (const url of ['/m', '/clear']) {
    const res = await lenient.app.inject({ method: 'POST', url })
    t.equal(res.statusCode, 200, `${url}: the response goes out`)
    t.same(res.json(), { ok: true })
  }
  t.equal(lenient.cache.getStatistics().errors, 3, 'delete, invalidateTags and clear each counted')
  t.ok(lenient.logs.find(/delete failed|invalidateTags failed|clear failed/).length >= 1, 'logged')

  const res = await strict.app.inject({ method: 'POST', url: '/m' })
  t.equal(res.statusCode, 200, 'with throwOnError too')
  t.equal(strict.cache.getStatistics().errors, 1, 'counted once, where it happened')
  const logged = strict.logs.find('cache bust failed', LEVEL.error)
  t.equal(logged.length, 1)
  t.equal((logged[0].err as { type: string }).type, RedisConnectionError.name)
})

t.test('two instances sharing Redis: a miss on A is a hit on B; a bust on B empties A', async (t) => {
  const server = await redis()
  const prefix = uniquePrefix('two')
  const store = new Map([['1', 'one']])
  const runsA = { list: 0, item: 0 }
  const runsB = { list: 0, item: 0 }
  const a = await routeApp(t, onRedis(server, { prefix }), itemsApi(store, runsA))
  const b = await routeApp(t, onRedis(server, { prefix }), itemsApi(store, runsB))
  const baseA = await listen(a.app)
  const baseB = await listen(b.app)

  const missA = await fetch(`${baseA}/items/1`)
  t.equal(missA.headers.get('x-cache'), 'MISS')
  const hitB = await fetch(`${baseB}/items/1`)
  t.equal(hitB.headers.get('x-cache'), 'HIT', 'B answers from what A stored')
  t.equal(hitB.headers.get('etag'), missA.headers.get('etag'))
  t.same(await hitB.json(), await missA.json())
  t.equal(runsB.item, 0, 'B never ran its handler')

  await fetch(`${baseA}/items`)
  t.equal((await fetch(`${baseB}/items`)).headers.get('x-cache'), 'HIT')
  const put = await fetch(`${baseB}/items/1`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value: 'uno' }) })
  t.equal(put.status, 200)
  const freshA = await fetch(`${baseA}/items/1`)
  t.equal(freshA.headers.get('x-cache'), 'MISS', 'B\'s bust removed A\'s entry')
  t.same(await freshA.json(), { id: '1', value: 'uno' })
  t.equal((await fetch(`${baseA}/items`)).headers.get('x-cache'), 'MISS')

  // Tags filed by B, invalidated through A.
  await fetch(`${baseB}/items/1`)
  t.equal((await fetch(`${baseA}/items/1`)).headers.get('x-cache'), 'HIT')
  t.equal(await a.cache.invalidateTags('item:1'), 1)
  t.equal((await fetch(`${baseB}/items/1`)).headers.get('x-cache'), 'MISS')
  t.equal((await fetch(`${baseB}/items`)).headers.get('x-cache'), 'HIT', 'other entries stay')
})

t.test('the ETag is the same on every instance for the same bytes', async (t) => {
  const server = await redis()
  const apps: RouteApp[] = []
  for (let i = 0; i < 2; i++) {
    // Separate prefixes: each instance computes it on its own.
    apps.push(await routeApp(t, onRedis(server), (app) => {
      app.get('/doc', { config: { cache: { ttl: 60 } } }, async () => ({ same: 'bytes', list: [1, 2, 3] }))
    }))
  }
  const [one, two] = await Promise.all(apps.map(async ({ app }) => await app.inject('/doc')))
  t.equal(one.headers['x-cache'], 'MISS')
  t.equal(two.headers['x-cache'], 'MISS')
  t.match(one.headers.etag, /^"[A-Za-z0-9_-]{27}"$/)
  t.equal(one.headers.etag, two.headers.etag)
  const conditional = await apps[1].app.inject({ url: '/doc', headers: { 'if-none-match': one.headers.etag as string } })
  t.equal(conditional.statusCode, 304)
})

t.test('every rule over real HTTP, across two instances sharing Redis', async (t) => {
  const server = await redis()
  const prefix = uniquePrefix('rules')
  const runs = new Map<string, number>()
  const declare = (app: FastifyInstance): void => {
    app.addHook('onRequest', async (req) => { runs.set(req.routeOptions.url ?? '', (runs.get(req.routeOptions.url ?? '') ?? 0) + 1) })
    const config = { cache: { ttl: 60, namespace: 'rules' } }
    app.get('/ok', { config }, async () => ({ ok: true }))
    app.get('/cookie', { config }, async (_req, reply) => reply.header('set-cookie', 'sid=1').send('mine'))
    app.get('/auth', { config }, async (req) => ({ user: req.headers.authorization }))
    app.get('/no-store', { config }, async (_req, reply) => reply.header('cache-control', 'no-store').send('x'))
    app.get('/404', { config }, async (_req, reply) => reply.code(404).send({ error: 'missing' }))
    app.get('/500', { config }, async () => { throw new Error('boom') })
    app.get('/stream', { config }, async (_req, reply) => reply.type('text/plain').send(Readable.from(['a', 'b'])))
    app.get('/q', { config }, async (req) => ({ url: req.url }))
    app.post('/ok', { config }, async () => ({ posted: true }))
  }
  const a = await routeApp(t, onRedis(server, { prefix }), declare)
  const b = await routeApp(t, onRedis(server, { prefix }), declare)
  const [baseA, baseB] = [await listen(a.app), await listen(b.app)]
  // Both instances behind one name, as behind a load balancer: the host is part of the key.
  const fetch = async (url: string, init: { method?: string, headers?: Record<string, string> } = {}): Promise<{ status: number, headers: Headers, json: () => unknown, arrayBuffer: () => Promise<void> }> => {
    const res = await rawRequest(url, { method: init.method, headers: { host: 'shop.example', ...init.headers } })
    const headers = new Headers(Object.entries(res.headers).map(([name, value]) => [name, String(value)]))
    return { status: res.status, headers, json: () => JSON.parse(res.body.toString()), arrayBuffer: async () => {} }
  }

  const happyA = await fetch(`${baseA}/ok`)
  const happyB = await fetch(`${baseB}/ok`)
  t.same([happyA.headers.get('x-cache'), happyB.headers.get('x-cache')], ['MISS', 'HIT'])
  t.equal(runs.get('/ok'), 2, 'B answered from A\'s entry (both counted the request, one ran the handler)')
  const hostile = '/q?*=1&a[b]=%0D%0A&x=a:b'
  await fetch(`${baseA}${hostile}`)
  t.equal((await fetch(`${baseB}${hostile}`)).headers.get('x-cache'), 'HIT')
  t.equal(await b.cache.exists(`shop.example${hostile}`, { namespace: 'rules' }), 1)

  const unhappy: Array<[string, { method?: string, headers?: Record<string, string> }, number, string]> = [
    ['/cookie', {}, 200, 'MISS'],
    ['/auth', { headers: { authorization: 'Bearer x' } }, 200, 'BYPASS'],
    ['/no-store', {}, 200, 'MISS'],
    ['/404', {}, 404, 'MISS'],
    ['/500', {}, 500, 'MISS'],
    ['/stream', {}, 200, 'MISS'],
    ['/ok', { method: 'POST' }, 200, '']
  ]
  for (const [url, init, status, outcome] of unhappy) {
    for (const base of [baseA, baseB, baseA]) {
      const res = await fetch(`${base}${url}`, init)
      t.equal(res.status, status, `${init.method ?? 'GET'} ${url}`)
      t.equal(res.headers.get('x-cache') ?? '', outcome)
      await res.arrayBuffer()
    }
    if (init.method === 'POST') continue
    t.equal(await a.cache.exists(`shop.example${url}`, { namespace: 'rules' }), 0, `${url}: nothing stored`)
  }
  const get = await fetch(`${baseB}/ok`)
  t.equal(get.headers.get('x-cache'), 'HIT')
  t.same(await get.json(), { ok: true }, 'the POSTs neither read nor replaced the GET entry')
  t.same(a.cache.getStatistics().sets + b.cache.getStatistics().sets, 2, 'only /ok and the hostile query were stored')
})

for (const store of ['redis', 'memory'] as const) {
  t.test(`the variants of a route with vary live under its key, which delete, exists and bust.keys reach (${store})`, async (t) => {
    const server = store === 'redis' ? await redis() : undefined
    const { app, cache } = await routeApp(t, server === undefined ? { redis: false } : onRedis(server), (app) => {
      app.get('/greet', { config: { cache: { ttl: 60, key: 'greet', vary: ['accept-language'] } } }, async (req) => ({ lang: req.headers['accept-language'] }))
      app.post('/greet', { config: { cache: { bust: { keys: ['greet'] } } } }, async () => ({ ok: true }))
    })
    const greet = (lang: string) => app.inject({ url: '/greet', headers: { 'accept-language': lang } })
    t.equal((await greet('en')).headers['x-cache'], 'MISS')
    t.equal((await greet('fr')).headers['x-cache'], 'MISS')
    t.same((await greet('en')).json(), { lang: 'en' })
    t.same((await greet('fr')).json(), { lang: 'fr' })
    t.equal((await greet('fr')).headers['x-cache'], 'HIT')
    t.equal(await cache.exists('greet'), 1, 'both variants are one entry at the route\'s key')

    await app.inject({ method: 'POST', url: '/greet' })
    t.equal(await cache.exists('greet'), 0)
    t.equal((await greet('en')).headers['x-cache'], 'MISS', 'the bust reached the en variant')
    t.equal((await greet('fr')).headers['x-cache'], 'MISS', 'and the fr one')

    t.equal(await cache.delete('greet'), 1)
    t.equal((await greet('en')).headers['x-cache'], 'MISS', 'delete reaches the variants too')
  })
}

t.test('a key stored with the other shape (vary added to a route) is dropped and stored anew', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.get('/shape', { config: { cache: { ttl: 60, key: 'shape', vary: ['accept-language'] } } }, async () => ({ ok: true }))
  })
  await cache.set('shape', 'a plain value')
  const first = await app.inject('/shape')
  t.equal(first.statusCode, 200)
  t.equal(first.headers['x-cache'], 'BYPASS', 'the read failed on the plain value')
  await until(async () => (await cache.exists('shape')) === 0, 30_000, 'the plain value to be dropped')
  t.equal((await app.inject('/shape')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/shape')).headers['x-cache'], 'HIT')
})

t.test('reads never bust, even on a route that also takes writes', async (t) => {
  const server = await redis()
  const { app, cache } = await routeApp(t, onRedis(server), (app) => {
    app.route({ method: ['GET', 'POST'], url: '/both', config: { cache: { namespace: 'both', bust: { namespace: 'both', keys: ['kept'] } } }, handler: async () => 'ok' })
  })
  await cache.set('kept', 'v', { namespace: 'both' })
  t.equal((await app.inject('/both')).statusCode, 200)
  t.equal((await app.inject({ method: 'HEAD', url: '/both' })).statusCode, 200)
  t.equal(await cache.exists('kept', { namespace: 'both' }), 1, 'GET and HEAD leave it')
  t.equal((await app.inject({ method: 'POST', url: '/both' })).statusCode, 200)
  t.equal(await cache.exists('kept', { namespace: 'both' }), 0, 'a POST busts it')
})
