// The example gateway (example/gateway.ts): @fastify/reply-from in front of a real origin over
// HTTP, cached with `freshness: 'response'`, on the memory store and on a real redis-server.
import t from 'tap'
import { buildGateway, buildOrigin } from '../example/gateway'
import { startRedis } from './helpers/redis-server'
import { listen, rawRequest } from './helpers/route-app'

for (const store of ['memory', 'redis'] as const) {
  t.test(`a caching gateway in front of an origin (${store})`, async (t) => {
    const redis = store === 'redis' ? await startRedis() : undefined
    const origin = buildOrigin()
    const gateway = await buildGateway(await listen(origin), redis === undefined ? { redis: false, routes: false } : { redis: { url: redis.url }, routes: false })
    t.teardown(async () => {
      await gateway.close()
      await origin.close()
      await redis?.stop()
    })
    const base = await listen(gateway)

    const miss = await rawRequest(`${base}/products/1`)
    t.equal(miss.headers['x-cache'], 'MISS')
    t.same(JSON.parse(miss.body.toString()), { id: 1, name: 'kettle', version: 1 })
    const hit = await rawRequest(`${base}/products/1`)
    t.equal(hit.headers['x-cache'], 'HIT', 's-maxage from the origin makes it fresh')
    t.equal(hit.headers.etag, '"p1v1"', 'the origin\'s ETag is kept')
    t.equal(hit.body.toString(), miss.body.toString())
    t.equal(origin.fullResponses(), 1)

    const part = await rawRequest(`${base}/products/1`, { headers: { range: 'bytes=0-5' } })
    t.equal(part.status, 206, 'a Range is answered from the stored response')
    t.equal(part.body.toString(), '{"id":')

    const put = await rawRequest(`${base}/products/1`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"name":"kettle 2"}' })
    t.equal(put.status, 204)
    const afterWrite = await rawRequest(`${base}/products/1`)
    t.equal(afterWrite.headers['x-cache'], 'MISS', 'a write through the gateway invalidates the URI (RFC 9111 §4.4)')
    t.equal(JSON.parse(afterWrite.body.toString()).name, 'kettle 2')

    await rawRequest(`${base}/products/2`)
    t.equal((await rawRequest(`${base}/products/2`)).headers['x-cache'], 'HIT')
    await gateway.cache.invalidateTags(['product-2'])
    t.equal((await rawRequest(`${base}/products/2`)).headers['x-cache'], 'MISS', 'the origin\'s Cache-Tag reaches invalidateTags')
    await gateway.cache.invalidateTags(['products'])
    const conditional = await rawRequest(`${base}/products/2`, { headers: { 'if-none-match': '"p2v1"' } })
    t.equal(conditional.status, 304, 'a client\'s own conditional on a miss goes to the origin, and its 304 back')
    t.equal(conditional.headers['x-cache'], 'MISS')

    const missing = await rawRequest(`${base}/products/9`)
    t.equal(missing.status, 404)
    t.equal((await rawRequest(`${base}/products/9`)).headers['x-cache'], 'HIT', 'a 404 with explicit freshness is stored')
    t.equal((await rawRequest(`${base}/products/9`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"name":"x"}' })).status, 404)

    const before = origin.fullResponses()
    const news = await rawRequest(`${base}/news`)
    const again = await rawRequest(`${base}/news`)
    t.equal(again.status, 200, 'no-cache: revalidated every time, the client gets the stored body')
    t.equal(again.body.toString(), news.body.toString())
    t.match(again.headers['cache-status'], 'fwd-status=304')
    t.equal(origin.fullResponses(), before + 1, 'the origin answered the revalidation with a 304')
  })
}
