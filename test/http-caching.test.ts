// `freshness: 'response'`: the route cache read as a shared HTTP cache (RFC 9111), section by
// section, on the memory store and on a real redis-server. Responses are made stale without
// waiting: an Age equal to their max-age leaves them no freshness.
import { get } from 'node:http'
import { PassThrough, Readable } from 'node:stream'
import t from 'tap'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { RouteCacheOptions } from '../types'
import { rawClient, type Scope, until } from './helpers/app'
import { gate, listen, onRedis, routeApp, sharedRedis } from './helpers/route-app'

const redis = sharedRedis(t)

type Handler = (request: FastifyRequest, reply: FastifyReply) => unknown
type Store = 'memory' | 'redis'
const STORES: Store[] = ['memory', 'redis']

/** A catch-all route with `freshness: 'response'` whose answer each test sets. */
async function gateway (t: Scope, store: Store, options: RouteCacheOptions = {}) {
  let handler: Handler = () => 'body'
  const seen: Array<FastifyRequest['headers']> = []
  const cacheOptions = store === 'redis' ? onRedis(await redis()) : { redis: false as const }
  const { app, cache } = await routeApp(t, cacheOptions, (app) => {
    app.all('/*', { config: { cache: { freshness: 'response', ttl: 3600, ...options } } }, async (request, reply) => {
      seen.push({ ...request.headers })
      return handler(request, reply)
    })
  })
  return {
    app,
    cache,
    seen,
    answer: (next: Handler) => { handler = next },
    get: (url: string, headers: Record<string, string> = {}) => app.inject({ url, headers })
  }
}

/** A handler that sends `body` with these headers (and status). */
function respond (headers: Record<string, string | string[]>, body = 'body', status = 200): Handler {
  return (_request, reply) => reply.code(status).headers(headers).send(body)
}

for (const store of STORES) {
  t.test(`RFC 9111 §4.2.1 freshness lifetime: s-maxage, then max-age, then Expires minus Date (${store})`, async (t) => {
    const g = await gateway(t, store)
    g.answer(respond({ 'cache-control': 'max-age=0, s-maxage=60' }))
    await g.get('/s-maxage')
    t.equal((await g.get('/s-maxage')).headers['x-cache'], 'HIT', 's-maxage wins over max-age=0')
    g.answer(respond({ 'cache-control': 's-maxage=0, max-age=60' }))
    await g.get('/short-s-maxage')
    t.equal((await g.get('/short-s-maxage')).headers['x-cache'], 'MISS', 'a short s-maxage wins over a long max-age')
    g.answer(respond({ 'cache-control': 'max-age=60' }))
    await g.get('/max-age')
    const hit = await g.get('/max-age')
    t.equal(hit.headers['x-cache'], 'HIT')
    t.match(hit.headers['cache-status'], /hit; ttl=(59|60)/)
    const date = new Date(Date.now() - 1000).toUTCString()
    g.answer(respond({ expires: new Date(Date.now() + 61_000).toUTCString(), date }))
    await g.get('/expires')
    const byExpires = await g.get('/expires')
    t.equal(byExpires.headers['x-cache'], 'HIT', 'Expires minus Date')
    t.equal(byExpires.headers.date, date, 'the stored Date is sent as stored (RFC 9111 §4)')
    g.answer(respond({ expires: new Date(Date.now() + 61_000).toUTCString() }))
    await g.get('/expires-no-date')
    t.equal((await g.get('/expires-no-date')).headers['x-cache'], 'HIT', 'Expires without a Date counts from now')
    g.answer(respond({ expires: '0', date }))
    await g.get('/bad-expires')
    t.equal((await g.get('/bad-expires')).headers['x-cache'], 'MISS', 'an invalid Expires is in the past (§5.3)')
    g.answer(respond({ 'cache-control': 'max-age=\'60\'' }))
    await g.get('/quoted')
    t.equal((await g.get('/quoted')).headers['x-cache'], 'MISS', 'a max-age that is no number is stale')
    g.answer(respond({ 'cache-control': 'max-age=86400' }))
    await g.get('/ceiling')
    t.match((await g.get('/ceiling')).headers['cache-status'], /ttl=(3599|3600)$/, 'the route ttl is the ceiling')
  })

  t.test(`RFC 9111 §4.2.3 Age adds the age the response carried (${store})`, async (t) => {
    const g = await gateway(t, store)
    g.answer(respond({ 'cache-control': 'max-age=600', age: '30' }))
    await g.get('/aged')
    const hit = await g.get('/aged')
    t.equal(hit.headers['x-cache'], 'HIT')
    t.ok(Number(hit.headers.age) >= 30, 'the carried Age is kept')
    t.match(hit.headers['cache-status'], /ttl=(569|570)$/, 'and counts against the freshness lifetime')
    g.answer(respond({ 'cache-control': 'max-age=600', age: '600' }))
    await g.get('/too-old')
    t.equal((await g.get('/too-old')).headers['x-cache'], 'MISS', 'an Age as large as max-age leaves it stale')
    g.answer(respond({ 'cache-control': 'max-age=600', age: 'abc' }))
    await g.get('/bad-age')
    t.equal((await g.get('/bad-age')).headers.age, '0', 'an Age that is no number is ignored')
  })

  t.test(`RFC 9111 §3 what a shared cache stores (${store})`, async (t) => {
    const g = await gateway(t, store)
    const cases: Array<[string, Handler, string]> = [
      ['no-store', respond({ 'cache-control': 'max-age=60, no-store' }), 'cache-control'],
      ['private', respond({ 'cache-control': 'max-age=60, private' }), 'cache-control'],
      ['set-cookie', respond({ 'cache-control': 'max-age=60', 'set-cookie': 'a=1' }), 'set-cookie'],
      ['vary-star', respond({ 'cache-control': 'max-age=60', vary: 'Foo, *' }), 'vary'],
      ['created', respond({ 'last-modified': new Date(0).toUTCString() }, 'made', 201), 'status'],
      ['no-freshness', respond({}), 'freshness'],
      ['partial', respond({ 'cache-control': 'max-age=60', 'content-range': 'bytes 0-1/10' }, '01', 206), 'status']
    ]
    for (const [path, handler, detail] of cases) {
      g.answer(handler)
      const first = await g.get(`/${path}`)
      t.match(first.headers['cache-status'], `detail=${detail}`, path)
      t.equal((await g.get(`/${path}`)).headers['x-cache'], 'MISS', `${path} is not stored`)
    }
    g.answer(respond({ 'cache-control': 'max-age=60' }, 'gone', 404))
    await g.get('/missing')
    const missing = await g.get('/missing')
    t.equal(missing.statusCode, 404)
    t.equal(missing.headers['x-cache'], 'HIT', 'any final status with explicit freshness is stored')
    g.answer(respond({ 'cache-control': 'max-age=60' }, 'oops', 500))
    await g.get('/error')
    t.equal((await g.get('/error')).statusCode, 500)
    g.answer(respond({ 'last-modified': new Date(Date.now() - 100_000_000).toUTCString() }))
    await g.get('/heuristic')
    t.match((await g.get('/heuristic')).headers['cache-status'], /hit; ttl=\d+/, '§4.2.2 heuristic freshness from Last-Modified')
    g.answer(respond({ 'cache-control': 'max-age=60' }))
    const head = await g.app.inject({ method: 'HEAD', url: '/head-only' })
    t.equal(head.headers['x-cache'], 'MISS', 'HEAD fills nothing')
  })

  t.test(`RFC 9111 §4.1 Vary from the response selects the stored variant (${store})`, async (t) => {
    const g = await gateway(t, store)
    let n = 0
    g.answer((request, reply) => reply.headers({ 'cache-control': 'max-age=60', vary: 'Accept-Language' }).send(`${String(request.headers['accept-language'])} ${++n}`))
    await g.get('/page', { 'accept-language': 'en' })
    const en = await g.get('/page', { 'accept-language': 'en' })
    t.equal(en.headers['x-cache'], 'HIT')
    t.equal(en.body, 'en 1')
    const fr = await g.get('/page', { 'accept-language': 'fr' })
    t.equal(fr.headers['x-cache'], 'MISS', 'another value is another variant')
    t.equal(fr.body, 'fr 2')
    const none = await g.get('/page')
    t.equal(none.body, 'undefined 3', 'an absent header is a value of its own')
    g.answer((_request, reply) => reply.headers({ 'cache-control': 'max-age=60', vary: ['X-A, , x-a', 'X-B'] }).send('two'))
    await g.get('/two', { 'x-a': '1', 'x-b': '2' })
    t.equal((await g.get('/two', { 'x-a': '1', 'x-b': '2' })).headers['x-cache'], 'HIT', 'Vary on several lines')
    t.equal((await g.get('/two', { 'x-a': '1', 'x-b': '3' })).headers['x-cache'], 'MISS')
  })
}

t.test('RFC 9111 §3.5 a request with Authorization only gets a response that allows it', async (t) => {
  const g = await gateway(t, 'memory', { credentials: 'shared' })
  const auth = { authorization: 'Bearer x' }
  g.answer(respond({ 'cache-control': 'max-age=60' }))
  t.match((await g.get('/plain', auth)).headers['cache-status'], 'detail=authorization')
  t.equal((await g.get('/plain', auth)).headers['x-cache'], 'MISS')
  g.answer(respond({ 'cache-control': 'public, max-age=60' }))
  await g.get('/public', auth)
  t.equal((await g.get('/public', auth)).headers['x-cache'], 'HIT', 'public allows it')
  g.answer(respond({ 'cache-control': 's-maxage=60' }))
  await g.get('/s-maxage', auth)
  t.equal((await g.get('/s-maxage', auth)).headers['x-cache'], 'HIT', 's-maxage allows it')
})

t.test('RFC 9111 §4.2.4 stale-while-revalidate and stale-if-error from the response', async (t) => {
  const g = await gateway(t, 'memory')
  let n = 0
  g.answer((_request, reply) => reply.headers({ 'cache-control': 'max-age=5, stale-while-revalidate=60', age: '5' }).send(`v${++n}`))
  await g.get('/swr')
  const stale = await g.get('/swr')
  t.equal(stale.headers['x-cache'], 'STALE', 'served stale while it is refreshed')
  t.equal(stale.body, 'v1')
  g.answer((_request, reply) => reply.headers({ 'cache-control': 'max-age=5, stale-if-error=60', age: '5' }).send('good'))
  await g.get('/sie')
  g.answer(respond({}, 'down', 503))
  const rescued = await g.get('/sie')
  t.equal(rescued.statusCode, 200, 'the stale entry answers for a failed handler')
  t.equal(rescued.body, 'good')
  t.match(rescued.headers['cache-status'], 'detail=error')
  for (const directive of ['must-revalidate', 'proxy-revalidate', 'no-cache', 's-maxage=5']) {
    const path = `/strict-${directive}`
    g.answer(respond({ 'cache-control': `max-age=5, stale-if-error=60, ${directive}`, age: '5', etag: '"e"' }, 'good'))
    await g.get(path)
    g.answer(respond({}, 'down', 503))
    t.equal((await g.get(path)).statusCode, 503, `${directive} forbids serving it stale (§5.2.2)`)
  }
})

t.test('RFC 9111 §4.3 a stale entry is revalidated with its validators', async (t) => {
  const g = await gateway(t, 'redis')
  const lastModified = new Date(Date.now() - 3_600_000).toUTCString()
  g.answer(respond({ 'cache-control': 'max-age=10', age: '10', etag: '"v1"', 'last-modified': lastModified, 'x-version': '1' }, 'stored body'))
  await g.get('/doc')
  g.answer((request, reply) => {
    if (request.headers['if-none-match'] === '"v1"') return reply.code(304).headers({ 'cache-control': 'max-age=60', etag: '"v1"', 'x-version': '2' }).send()
    return reply.send('refetched')
  })
  const fresh = await g.get('/doc')
  t.equal(fresh.statusCode, 200, 'a client without a conditional never sees the handler\'s 304')
  t.equal(fresh.body, 'stored body', 'it gets the stored body')
  t.equal(fresh.headers['x-version'], '2', 'with the headers of the 304 (§4.3.4)')
  t.equal(fresh.headers['content-length'], String('stored body'.length))
  t.match(fresh.headers['cache-status'], 'fwd-status=304')
  const sent = g.seen[g.seen.length - 1]
  t.equal(sent['if-none-match'], '"v1"', 'the handler saw the stored ETag')
  t.equal(sent['if-modified-since'], lastModified, 'and the stored Last-Modified')
  const hit = await g.get('/doc')
  t.equal(hit.headers['x-cache'], 'HIT', 'the freshened entry is stored again')
  t.equal(hit.headers['x-version'], '2')
  t.equal(hit.body, 'stored body')

  g.answer(respond({ 'cache-control': 'max-age=10', age: '10', etag: '"a"' }, 'A'))
  await g.get('/client-conditional')
  g.answer((request, reply) => request.headers['if-none-match'] === '"a"' ? reply.code(304).header('cache-control', 'max-age=10').send() : reply.send('changed'))
  const own = await g.get('/client-conditional', { 'if-none-match': '"a"' })
  t.equal(own.statusCode, 304, 'a client whose own validator matches gets a 304')
  t.equal(own.headers.etag, '"a"', 'with the ETag (RFC 9110 §15.4.5)')
  t.equal(own.headers['cache-control'], 'max-age=10')

  g.answer(respond({ 'cache-control': 'max-age=10', age: '10', etag: '"b"' }, 'B'))
  await g.get('/changed')
  g.answer(respond({ 'cache-control': 'max-age=60', etag: '"c"' }, 'C'))
  const other = await g.get('/changed', { 'if-none-match': '"x"' })
  t.equal(other.statusCode, 200, 'a changed resource is sent whole')
  t.equal(other.body, 'C')
  t.equal(g.seen[g.seen.length - 1]['if-none-match'], '"b"')
  t.equal((await g.get('/changed', { 'if-none-match': '"c"' })).statusCode, 304, 'and stored')

  g.answer(respond({ 'cache-control': 'max-age=10', age: '10' }, 'no validator'))
  await g.get('/plain')
  g.answer(respond({ 'cache-control': 'max-age=10' }, 'again'))
  await g.get('/plain', { 'if-none-match': '"mine"' })
  t.equal(g.seen[g.seen.length - 1]['if-none-match'], '"mine"', 'an entry without the handler\'s validators is not revalidated')
})

t.test('RFC 9111 §4.3.2 If-Modified-Since is answered on hits, in both modes', async (t) => {
  for (const freshness of ['route', 'response'] as const) {
    const g = await gateway(t, 'memory', { freshness })
    const lastModified = new Date(Date.now() - 60_000).toUTCString()
    g.answer(respond({ 'cache-control': 'max-age=60', 'last-modified': lastModified }))
    await g.get('/lm')
    const notModified = await g.get('/lm', { 'if-modified-since': new Date().toUTCString() })
    t.equal(notModified.statusCode, 304, freshness)
    t.equal(notModified.headers['last-modified'], lastModified)
    t.equal((await g.get('/lm', { 'if-modified-since': new Date(Date.now() - 120_000).toUTCString() })).statusCode, 200, 'modified since')
    t.equal((await g.get('/lm', { 'if-modified-since': 'yesterday' })).statusCode, 200, 'an invalid date is ignored')
    t.equal((await g.get('/lm', { 'if-modified-since': new Date(Date.now() + 86_400_000).toUTCString() })).statusCode, 200, 'so is a date in the future (RFC 9110 §13.1.3)')
    t.equal((await g.get('/lm', { 'if-modified-since': new Date().toUTCString(), 'if-none-match': '"other"' })).statusCode, 200, 'If-None-Match takes precedence')
    g.answer(respond({ 'cache-control': 'max-age=60', date: new Date(Date.now() - 60_000).toUTCString() }))
    await g.get('/date')
    t.equal((await g.get('/date', { 'if-modified-since': new Date().toUTCString() })).statusCode, 304, 'without Last-Modified, the Date')
  }
})

t.test('RFC 9111 §4.4 a successful unsafe method invalidates the target and same-origin locations', async (t) => {
  const g = await gateway(t, 'redis')
  let n = 0
  g.answer((request, reply) => {
    if (request.method === 'GET') return reply.header('cache-control', 'max-age=600').send(`${request.url} ${++n}`)
    if (request.url === '/fail') return reply.code(500).send('no')
    return reply.code(201).headers({ location: '/created', 'content-location': 'http://elsewhere.example/other' }).send('ok')
  })
  for (const path of ['/items', '/created', '/other', '/fail']) await g.get(path)
  await g.app.inject({ method: 'POST', url: '/items', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal((await g.get('/items')).headers['x-cache'], 'MISS', 'the target URI')
  t.equal((await g.get('/created')).headers['x-cache'], 'MISS', 'the same-origin Location')
  t.equal((await g.get('/other')).headers['x-cache'], 'HIT', 'not another origin\'s Content-Location')
  await g.app.inject({ method: 'POST', url: '/fail', payload: 'x', headers: { 'content-type': 'text/plain' } })
  t.equal((await g.get('/fail')).headers['x-cache'], 'HIT', 'a failed method invalidates nothing')
  await g.app.inject({ method: 'OPTIONS', url: '/items' })
  t.equal((await g.get('/items')).headers['x-cache'], 'HIT', 'a safe method invalidates nothing')
  for (const method of ['PUT', 'PATCH', 'DELETE'] as const) {
    await g.app.inject({ method, url: '/items', payload: 'x', headers: { 'content-type': 'text/plain' } })
    t.equal((await g.get('/items')).headers['x-cache'], 'MISS', method)
  }
})

t.test('RFC 9110 §14 a Range request is answered from the stored 200', async (t) => {
  const g = await gateway(t, 'memory', { compress: true })
  g.answer(respond({ 'cache-control': 'max-age=60' }, '0123456789'))
  const first = await g.get('/bytes', { range: 'bytes=2-4' })
  t.equal(first.statusCode, 206, 'on a miss, from the whole response fetched')
  t.equal(first.body, '234')
  t.equal(first.headers['content-range'], 'bytes 2-4/10')
  t.equal(g.seen[0].range, undefined, 'the handler is asked for the whole response')
  const cases: Array<[string, number, string, string | undefined]> = [
    ['bytes=2-4', 206, '234', 'bytes 2-4/10'],
    ['bytes=-3', 206, '789', 'bytes 7-9/10'],
    ['bytes=8-', 206, '89', 'bytes 8-9/10'],
    ['bytes=5-100', 206, '56789', 'bytes 5-9/10'],
    ['bytes=10-', 416, '', 'bytes */10'],
    ['bytes=-0', 416, '', 'bytes */10'],
    ['bytes=0-1,3-4', 200, '0123456789', undefined],
    ['bytes=4-2', 200, '0123456789', undefined],
    ['lines=1-2', 200, '0123456789', undefined]
  ]
  for (const [range, status, body, contentRange] of cases) {
    const res = await g.get('/bytes', { range, 'accept-encoding': 'gzip' })
    t.equal(res.headers['x-cache'], 'HIT', range)
    t.equal(res.statusCode, status, range)
    t.equal(res.body, body, range)
    t.equal(res.headers['content-range'], contentRange, range)
  }
  const ifRange = await g.get('/bytes', { range: 'bytes=0-1', 'if-range': '"other"' })
  t.equal(ifRange.statusCode, 200, 'with If-Range the whole response')
  g.answer(respond({ 'cache-control': 'no-store' }, '0123456789'))
  const unstored = await g.get('/unstored', { range: 'bytes=1-2' })
  t.equal(unstored.statusCode, 206, 'a response that is not stored is cut too')
  t.equal(unstored.body, '12')
  g.answer((_request, reply) => reply.header('cache-control', 'no-store').send(Buffer.from('0123456789')))
  t.equal((await g.get('/unstored-bytes', { range: 'bytes=-2' })).body, '89', 'a Buffer body too')
  g.answer(respond({ 'cache-control': 'no-store' }, '', 204))
  t.equal((await g.get('/empty', { range: 'bytes=1-2' })).statusCode, 204, 'only a 200 is cut')
})

t.test('stream bodies are stored up to maxEntrySize, larger ones passed on unstored', async (t) => {
  const { app } = await routeApp(t, { redis: false, maxEntrySize: 2048 }, (app) => {
    app.get('/stream/:size', { config: { cache: { freshness: 'response' } } }, async (request, reply) => {
      const size = Number((request.params as { size: string }).size)
      reply.header('cache-control', 'max-age=60')
      return reply.send(Readable.from([Buffer.alloc(size / 2, 'a'), 'b'.repeat(size / 2)]))
    })
    app.get('/broken', { config: { cache: { freshness: 'response' } } }, async (_request, reply) => {
      const body = new Readable({ read () { this.destroy(new Error('origin went away')) } })
      return reply.header('cache-control', 'max-age=60').send(body)
    })
  })
  await app.inject('/stream/1000')
  const small = await app.inject('/stream/1000')
  t.equal(small.headers['x-cache'], 'HIT')
  t.equal(small.body, 'a'.repeat(500) + 'b'.repeat(500))
  const big = await app.inject('/stream/8000')
  t.equal(big.body.length, 8000, 'a larger one is sent whole')
  t.match(big.headers['cache-status'], 'detail=size')
  t.equal((await app.inject('/stream/8000')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/broken')).statusCode, 500, 'a stream that fails fails the response as it would uncached')
  const bypassed = await app.inject({ url: '/stream/100', headers: { cookie: 'a=1' } })
  t.equal(bypassed.body.length, 100, 'a stream to a request that bypasses the cache is passed on')
  t.equal(bypassed.headers['x-cache'], 'BYPASS')
  t.equal((await app.inject({ method: 'HEAD', url: '/stream/200' })).statusCode, 200, 'and to a HEAD')
})

t.test('bytes a serializer makes (a Uint8Array) are stored and replayed', async (t) => {
  const { app } = await routeApp(t, { redis: false }, (app) => {
    app.get('/bytes', { config: { cache: { freshness: 'response' } } }, async (_request, reply) => {
      reply.header('cache-control', 'max-age=60').header('content-type', 'application/octet-stream')
      return reply.serializer(() => new Uint8Array([1, 2, 3]) as unknown as string).send({ any: 'thing' })
    })
  })
  const miss = await app.inject('/bytes')
  t.equal(miss.statusCode, 200)
  t.same([...miss.rawPayload], [1, 2, 3])
  const hit = await app.inject('/bytes')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same([...hit.rawPayload], [1, 2, 3])
})

t.test('tags from a response header reach invalidateTags', async (t) => {
  const g = await gateway(t, 'redis')
  g.answer(respond({ 'cache-control': 'max-age=600', 'cache-tag': 'product-1, catalog' }))
  await g.get('/p1')
  t.equal((await g.get('/p1')).headers['x-cache'], 'HIT')
  await g.app.cache.invalidateTags(['product-1'])
  t.equal((await g.get('/p1')).headers['x-cache'], 'MISS')
  const surrogate = await gateway(t, 'memory', { tagHeader: 'Surrogate-Key' })
  surrogate.answer(respond({ 'cache-control': 'max-age=600', 'surrogate-key': 'a b', 'cache-tag': 'ignored' }))
  await surrogate.get('/s')
  await surrogate.app.cache.invalidateTags(['ignored'])
  t.equal((await surrogate.get('/s')).headers['x-cache'], 'HIT', 'only the configured header counts')
  await surrogate.app.cache.invalidateTags(['b'])
  t.equal((await surrogate.get('/s')).headers['x-cache'], 'MISS')
  surrogate.answer(respond({ 'cache-control': 'max-age=600', 'surrogate-key': ['c', 'd e'] }))
  await surrogate.get('/lines')
  await surrogate.app.cache.invalidateTags(['e'])
  t.equal((await surrogate.get('/lines')).headers['x-cache'], 'MISS', 'a tag header on several lines')
  const off = await gateway(t, 'memory', { tagHeader: false })
  off.answer(respond({ 'cache-control': 'max-age=600', 'cache-tag': 'x' }))
  await off.get('/o')
  await off.app.cache.invalidateTags(['x'])
  t.equal((await off.get('/o')).headers['x-cache'], 'HIT', 'tagHeader: false reads none')
})

t.test('RFC 9213 CDN-Cache-Control wins over Cache-Control', async (t) => {
  const g = await gateway(t, 'memory')
  const cases: Array<[Record<string, string>, string]> = [
    [{ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=600' }, 'HIT'],
    [{ 'cache-control': 'max-age=600', 'cdn-cache-control': 'no-store' }, 'MISS'],
    [{ 'cache-control': 'max-age=600', 'cdn-cache-control': 'private' }, 'MISS'],
    [{ 'cache-control': 'max-age=600', 'cdn-cache-control': 'max-age=0' }, 'MISS'],
    [{ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age="600"' }, 'MISS'],
    [{ 'cache-control': 'no-store', 'cdn-cache-control': 'max-age=600, &&' }, 'MISS'],
    [{ expires: new Date(0).toUTCString(), 'cdn-cache-control': 'foo, max-age=600, bar="x,y";p=1' }, 'HIT'],
    [{ expires: new Date(Date.now() + 600_000).toUTCString(), 'cdn-cache-control': 'public' }, 'MISS']
  ]
  let i = 0
  for (const [headers, expected] of cases) {
    g.answer(respond(headers))
    await g.get(`/cdn-${++i}`)
    t.equal((await g.get(`/cdn-${i}`)).headers['x-cache'], expected, JSON.stringify(headers))
  }
})

t.test('in the default mode: Age carried, Date as stored, handler validators revalidate', async (t) => {
  const g = await gateway(t, 'memory', { freshness: 'route', ttl: 1, staleIfError: 60 })
  g.answer(respond({ age: '40', date: 'Tue, 01 Jan 2030 00:00:00 GMT', etag: '"mine"' }))
  await g.get('/route')
  const hit = await g.get('/route')
  t.ok(Number(hit.headers.age) >= 40, 'RFC 9111 §4.2.3 Age adds the age the response carried')
  t.equal(hit.headers.date, 'Tue, 01 Jan 2030 00:00:00 GMT', 'RFC 9111 §4 the stored Date is sent as stored')
  g.answer(respond({ 'cache-control': 'no-store' }))
  await g.get('/no-store')
  t.equal((await g.get('/no-store')).headers['x-cache'], 'MISS', 'no-store is still never stored')
})

t.test('freshness and tagHeader are validated', async (t) => {
  for (const [options, message] of [
    [{ freshness: 'origin' }, /freshness must be 'route' or 'response'/],
    [{ tagHeader: 'bad header' }, /tagHeader must be a header name or false/],
    [{ tagHeader: 3 }, /tagHeader must be a header name or false/]
  ] as const) {
    await t.rejects(routeApp(t, { redis: false }, (app) => {
      app.get('/x', { config: { cache: options as unknown as RouteCacheOptions } }, async () => 'x')
    }), { message }, JSON.stringify(options))
  }
})

t.test('RFC 9111 §4.3.4 a 304 sent as a stream is let go; an unreadable stale entry is a 500, never a 304', async (t) => {
  const server = await redis()
  let handler: Handler = () => ''
  const { app, cache } = await routeApp(t, onRedis(server, { compression: { threshold: 10 } }), (app) => {
    app.get('/*', { config: { cache: { freshness: 'response', compress: true } } }, async (request, reply) => handler(request, reply))
  })
  const body = 'z'.repeat(200)
  handler = respond({ 'cache-control': 'max-age=10', age: '10', etag: '"z"' }, body)
  await app.inject('/s')
  handler = (_request, reply) => reply.code(304).send(Readable.from(['ignored']))
  const freshened = await app.inject('/s')
  t.equal(freshened.statusCode, 200)
  t.equal(freshened.body, body)

  handler = respond({ 'cache-control': 'max-age=10', age: '10', etag: '"c"' }, body)
  await app.inject('/c')
  const raw = rawClient(t, server.url)
  const key = cache.redisKey('localhost:80/c')
  const stored = await raw.getBuffer(key) as Buffer
  stored.fill(0, stored.length - 8)
  await raw.set(key, stored, 'EX', 60)
  handler = (_request, reply) => reply.code(304).send()
  const failed = await app.inject('/c')
  t.equal(failed.statusCode, 500)
})

t.test('RFC 9111 §4.4 invalidation: keys it cannot make, foreign locations, and failures', async (t) => {
  const g = await gateway(t, 'memory')
  g.answer((request, reply) => request.method === 'GET'
    ? reply.header('cache-control', 'max-age=600').send('x')
    : reply.code(204).header('location', 'http://[broken').send())
  await g.get('/a')
  await g.app.inject({ method: 'DELETE', url: '/a' })
  t.equal((await g.get('/a')).headers['x-cache'], 'MISS', 'the target, though the Location is no URL')
  await g.get('/a')
  g.app.cache.delete = async () => { throw new Error('store down') }
  const sent = await g.app.inject({ method: 'DELETE', url: '/a' })
  t.equal(sent.statusCode, 204, 'a failed invalidation does not fail the response')

  let keyed = 0
  const { app } = await routeApp(t, { redis: false }, (app) => {
    app.all('/k/:id', {
      config: {
        cache: {
          freshness: 'response',
          key: (request) => {
            if (request.headers['x-no-key'] !== undefined) throw new Error('no key')
            return `k:${(request.params as { id: string }).id}`
          }
        }
      }
    }, async (request, reply) => request.method === 'GET'
      ? reply.header('cache-control', 'max-age=600').send(String(++keyed))
      : reply.code(200).header('location', '/k/2').send())
  })
  await app.inject('/k/1')
  await app.inject('/k/2')
  await app.inject({ method: 'DELETE', url: '/k/1', headers: { 'x-no-key': '1' } })
  t.equal((await app.inject('/k/1')).headers['x-cache'], 'HIT', 'a key function that fails invalidates nothing')
  await app.inject({ method: 'DELETE', url: '/k/1' })
  t.equal((await app.inject('/k/1')).headers['x-cache'], 'MISS', 'the target by the route\'s key')
  t.equal((await app.inject('/k/2')).headers['x-cache'], 'HIT', 'a Location has no key with a key function')
})

t.test('RFC 9111 §4.3 a request collapsed onto a revalidation gets the body, never the validators\' 304', async (t) => {
  const g = await gateway(t, 'memory')
  g.answer(respond({ 'cache-control': 'max-age=10', age: '10', etag: '"v"' }, 'kept'))
  await g.get('/r')
  const { promise, open } = gate()
  g.answer(async (_request, reply) => {
    await promise
    return reply.code(304).headers({ 'cache-control': 'max-age=60', etag: '"v"' }).send()
  })
  const first = g.get('/r')
  await until(() => g.seen.length === 2, 5000, 'the revalidation to reach the handler')
  const second = g.get('/r')
  // Its miss is counted just before it joins the first one's flight.
  await until(() => g.app.cache.getStatistics().misses === 3, 5000, 'the second request to miss')
  open()
  for (const res of await Promise.all([first, second])) {
    t.equal(res.statusCode, 200)
    t.equal(res.body, 'kept')
  }
  t.equal(g.seen.length, 2, 'one revalidation for both')
})

t.test('RFC 9111 §3: a stream the response forbids storing goes out as it comes, not read whole first', async (t) => {
  const events = new PassThrough()
  const { app } = await routeApp(t, { redis: false }, (app) => {
    app.get('/events', { config: { cache: { ttl: 60, freshness: 'response' } } }, (_request, reply) => {
      reply.header('cache-control', 'no-store').header('content-type', 'text/event-stream').send(events)
    })
  })
  const base = await listen(app)
  events.write('data: first\n\n')
  // The stream stays open: only a response sent as it comes delivers its first event.
  const first = await new Promise<string>((resolve, reject) => {
    get(`${base}/events`, (response) => response.once('data', (chunk) => {
      resolve(String(chunk))
      response.destroy()
    })).on('error', reject)
  })
  t.equal(first, 'data: first\n\n')
  events.end()
})
