// The demo: a small items API whose reads are cached per route and whose writes bust them.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fastifyRedisCache, { type CacheOptions } from '../index'

interface Item { id: number, name: string }
interface ItemParams { id: string }

export async function buildApp (cacheOptions: CacheOptions = {}, serverOptions: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const app = Fastify(serverOptions)
  await app.register(fastifyRedisCache, cacheOptions)

  // Stands in for a database.
  const items = new Map<number, Item>([[1, { id: 1, name: 'apple' }], [2, { id: 2, name: 'pear' }]])
  let nextId = 3

  const itemParams = { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9]+$' } }, required: ['id'] } as const
  const itemBody = { type: 'object', properties: { name: { type: 'string', minLength: 1 } }, required: ['name'], additionalProperties: false } as const

  app.get('/items', {
    config: { cache: { ttl: 60, namespace: 'items', key: 'list', tags: ['items'], maxAge: 10 } }
  }, async () => [...items.values()])

  app.get<{ Params: ItemParams }>('/items/:id', {
    schema: { params: itemParams },
    config: {
      cache: {
        ttl: 300,
        namespace: 'items',
        key: (request) => `item:${request.params.id}`,
        tags: (request) => [`item:${request.params.id}`],
        staleWhileRevalidate: 30
      }
    }
  }, async (request, reply) => {
    const item = items.get(Number(request.params.id))
    if (item === undefined) return reply.code(404).send({ error: 'not found' })
    return item
  })

  app.post<{ Body: { name: string } }>('/items', {
    schema: { body: itemBody },
    config: { cache: { bust: { namespace: 'items', keys: ['list'] } } }
  }, async (request, reply) => {
    const item = { id: nextId++, name: request.body.name }
    items.set(item.id, item)
    return reply.code(201).send(item)
  })

  app.put<{ Params: ItemParams, Body: { name: string } }>('/items/:id', {
    schema: { params: itemParams, body: itemBody },
    config: { cache: { bust: { namespace: 'items', keys: (request) => ['list', `item:${request.params.id}`] } } }
  }, async (request, reply) => {
    const id = Number(request.params.id)
    if (!items.has(id)) return reply.code(404).send({ error: 'not found' })
    const item = { id, name: request.body.name }
    items.set(id, item)
    return item
  })

  app.delete<{ Params: ItemParams }>('/items/:id', {
    schema: { params: itemParams },
    config: { cache: { bust: { tags: (request) => ['items', `item:${request.params.id}`] } } }
  }, async (request, reply) => {
    const existed = items.delete(Number(request.params.id))
    return reply.code(existed ? 204 : 404).send()
  })

  // A computed value cached with getOrSet, and a rate limit per client address.
  app.get('/stats/expensive', async (request, reply) => {
    const limit = await app.cache.rateLimit(`expensive:${request.ip}`, { max: 5, window: 60 })
    reply.header('x-ratelimit-limit', limit.limit)
    reply.header('x-ratelimit-remaining', limit.remaining)
    reply.header('x-ratelimit-reset', limit.reset)
    return app.cache.getOrSet('expensive', async () => ({ count: items.size, computedAt: new Date().toISOString() }), { ttl: 30 })
  })

  return app
}

export interface ServerSettings {
  port: number
  host: string
  logLevel: string
}

/** What `npm start` takes from the environment: PORT (3000), HOST (127.0.0.1), LOG_LEVEL (info). */
export function serverSettings (env: NodeJS.ProcessEnv): ServerSettings {
  return { port: Number(env.PORT ?? 3000), host: env.HOST ?? '127.0.0.1', logLevel: env.LOG_LEVEL ?? 'info' }
}

/** The line the demo logs at start: where it listens and which store the cache runs on. */
export function startupMessage (app: FastifyInstance, settings: ServerSettings, env: NodeJS.ProcessEnv): string {
  const store = app.cache.getStatistics().store === 'redis'
    ? `Redis (${env.REDIS_URL ?? env.REDIS_HOST})`
    : 'in-process memory (set REDIS_URL to use Redis)'
  return `demo items API on http://${settings.host}:${settings.port}/items, cache store: ${store}`
}
