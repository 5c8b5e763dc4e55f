// Compiled by `npm run test:types`, never run: the callbacks of `config.cache` see a typed
// request under `strict`, with route generics, with RouteConfig for exact types, and with the
// TypeBox type provider.
import Fastify, { type FastifyRequest } from 'fastify'
import { Type, type Static, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { routeCache, type RouteCacheOptions } from '../../index'

function expectType<T> (value: T): T {
  return value
}

const app = Fastify()

// Route generics: path parameters are strings, as Fastify parses them without a schema.
app.get<{ Params: { id: string } }>('/items/:id', {
  config: {
    cache: {
      namespace: 'items',
      key: (req) => `item:${req.params.id}`,
      tags: (req) => [`item:${req.params.id}`, req.url]
    }
  }
}, async (req) => ({ id: req.params.id }))
app.put<{ Params: { id: string } }>('/items/:id', {
  config: { cache: { bust: { namespace: 'items', keys: (req, reply) => [`item:${req.params.id}`, String(reply.statusCode)], tags: (req) => [`item:${req.params.id}`] } } }
}, async () => ({}))

// Exact types: routeCache carries the route's generic to the callbacks.
interface ItemRoute { Params: { id: number }, Querystring: { page?: number } }
app.get<ItemRoute>('/exact/:id', {
  config: {
    cache: routeCache<ItemRoute>({
      key: (req) => `item:${expectType<number>(req.params.id)}`,
      tags: (req) => [`page:${expectType<number | undefined>(req.query.page)}`],
      bust: { keys: (req, reply) => [`${req.params.id}`, String(reply.statusCode)] }
    })
  }
}, async () => ({}))
const exact: RouteCacheOptions<ItemRoute> = {
  key: (req) => [String(expectType<number>(req.params.id))],
  // @ts-expect-error the exact type says id is a number
  tags: (req) => [expectType<string>(req.params.id)]
}
app.get<ItemRoute>('/exact2/:id', { config: { cache: routeCache(exact) } }, async () => ({}))
// An option object for string parameters needs no helper.
const stringParams: RouteCacheOptions<{ Params: { id: string } }> = { key: (req) => req.params.id }
app.get('/exact3/:id', { config: { cache: stringParams } }, async () => ({}))

// A function written for the route's own request type fits too.
function itemKey (req: FastifyRequest<{ Params: { id: string } }>): string {
  return `item:${req.params.id}`
}
app.get<{ Params: { id: string } }>('/named/:id', { config: { cache: { key: itemKey } } }, async () => ({}))

// The TypeBox type provider.
const typed = app.withTypeProvider<TypeBoxTypeProvider>()
typed.get('/tb/:id', {
  schema: { params: Type.Object({ id: Type.String() }) },
  config: { cache: { key: (req) => `item:${req.params.id}`, bust: { tags: (req) => [req.params.id] } } }
}, async (req) => ({ id: expectType<string>(req.params.id) }))
const TbParams = Type.Object({ id: Type.Integer() })
typed.get('/tb2/:id', {
  schema: { params: TbParams },
  config: { cache: routeCache<{ Params: Static<typeof TbParams> }>({ key: (req) => `item:${expectType<number>(req.params.id)}` }) }
}, async (req) => expectType<number>(req.params.id))

// Wrong uses still fail.
// @ts-expect-error a key function returns a key
app.get<{ Params: { id: string } }>('/bad/:id', { config: { cache: { key: (req) => req.params } } }, async () => ({}))
// @ts-expect-error tags are strings
app.get('/bad2', { config: { cache: { tags: () => [1] } } }, async () => ({}))

// config.rateLimit, in @fastify/rate-limit's shape.
app.get<{ Params: { id: string } }>('/limited/:id', { config: { rateLimit: { max: 10, timeWindow: '1 minute', keyGenerator: (req) => req.params.id } } }, async () => ({}))
app.get('/limited2', { config: { rateLimit: { max: 10, timeWindow: 60_000, keyGenerator: async (req) => req.ip, failClosed: true } } }, async () => ({}))
app.get('/unlimited', { config: { rateLimit: false } }, async () => ({}))
// @ts-expect-error max is required
app.get('/bad3', { config: { rateLimit: { timeWindow: 1000 } } }, async () => ({}))
