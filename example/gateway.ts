// A caching gateway: @fastify/reply-from in front of another service, cached the way a shared
// HTTP cache would (`freshness: 'response'`): the origin's Cache-Control, ETag and Cache-Tag
// decide, and writes through the gateway invalidate what they change.
import replyFrom from '@fastify/reply-from'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache, { type CacheOptions } from '../index'

interface Product { id: number, name: string, version: number }
interface ProductParams { id: string }

/** The service behind the gateway: it knows nothing of the cache, only HTTP. */
export function buildOrigin (): FastifyInstance & { fullResponses: () => number } {
  const app = Fastify()
  const products = new Map<number, Product>([[1, { id: 1, name: 'kettle', version: 1 }], [2, { id: 2, name: 'teapot', version: 1 }]])
  let full = 0

  app.get<{ Params: ProductParams }>('/products/:id', async (request, reply) => {
    const product = products.get(Number(request.params.id))
    if (product === undefined) return reply.code(404).header('cache-control', 'public, max-age=10').send({ error: 'not found' })
    const etag = `"p${product.id}v${product.version}"`
    reply.headers({ 'cache-control': 'public, s-maxage=60, stale-if-error=300', etag, 'cache-tag': `product-${product.id} products` })
    if (request.headers['if-none-match'] === etag) return reply.code(304).send()
    full++
    return product
  })

  // Always revalidated: cheap 304s instead of full answers.
  app.get('/news', async (request, reply) => {
    reply.headers({ 'cache-control': 'no-cache', etag: '"news-1"' })
    if (request.headers['if-none-match'] === '"news-1"') return reply.code(304).send()
    full++
    return { headline: 'gateway caches' }
  })

  app.put<{ Params: ProductParams, Body: { name: string } }>('/products/:id', async (request, reply) => {
    const product = products.get(Number(request.params.id))
    if (product === undefined) return reply.code(404).send({ error: 'not found' })
    products.set(product.id, { ...product, name: request.body.name, version: product.version + 1 })
    return reply.code(204).send()
  })

  return Object.assign(app, { fullResponses: () => full })
}

/** The gateway: every request proxied to `origin`, GETs cached as the origin's headers say. */
export async function buildGateway (origin: string, cacheOptions: CacheOptions = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(fastifyRedisCache, cacheOptions)
  await app.register(replyFrom, { base: origin })
  // Request bodies are passed on as they came.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload))
  app.all('/*', { config: { cache: { freshness: 'response', ttl: 3600 } } }, (request, reply) => {
    // A 503 goes to the client (and to stale-if-error) as the origin sent it, not retried.
    return reply.from(request.url, { retryDelay: () => null })
  })
  return app
}
