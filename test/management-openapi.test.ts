// Every management route shows in @fastify/swagger's OpenAPI output with its query parameters
// and its documented responses.
import fastifySwagger from '@fastify/swagger'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import fastifyRedisCache from '../index'

interface OpenApiParameter { name: string, in: string, required?: boolean, schema?: { type?: string, pattern?: string, maxLength?: number } }
interface OpenApiResponse { description?: string, content?: Record<string, { schema?: Record<string, unknown> }> }
interface OpenApiOperation {
  tags?: string[]
  summary?: string
  parameters?: OpenApiParameter[]
  responses: Record<string, OpenApiResponse>
}
interface OpenApiDocument {
  openapi: string
  paths: Record<string, Record<string, OpenApiOperation>>
}

async function spec (t: Test, prefix?: string): Promise<OpenApiDocument> {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySwagger, { openapi: { info: { title: 'cache', version: '1.0.0' } } })
  await app.register(fastifyRedisCache, { redis: false, routes: { token: 'secret', ...(prefix === undefined ? {} : { prefix }) } })
  await app.ready()
  return app.swagger() as unknown as OpenApiDocument
}

function schemaOf (operation: OpenApiOperation, status: string, type = 'application/json'): Record<string, unknown> {
  const schema = operation.responses[status]?.content?.[type]?.schema
  if (schema === undefined) throw new Error(`no ${type} schema for ${status}`)
  return schema
}

t.test('the OpenAPI document lists every management route', async (t) => {
  const doc = await spec(t)
  t.match(doc.openapi, /^3\./)
  const expected: Record<string, string[]> = {
    '/cache/stats': ['get'],
    '/cache/ping': ['get'],
    '/cache/clear': ['delete'],
    '/cache/reset-stats': ['get', 'post'],
    '/cache/metrics': ['get']
  }
  for (const [path, methods] of Object.entries(expected)) {
    t.ok(doc.paths[path], `${path} documented`)
    for (const method of methods) {
      const operation = doc.paths[path]?.[method]
      t.ok(operation, `${method.toUpperCase()} ${path} documented`)
      t.same(operation?.tags, ['cache'])
      t.type(operation?.summary, 'string')
      t.ok(operation?.responses['200'], `${method.toUpperCase()} ${path}: 200 documented`)
      t.ok(operation?.responses['401'], `${method.toUpperCase()} ${path}: 401 documented`)
      t.ok(operation?.responses['403'], `${method.toUpperCase()} ${path}: 403 documented`)
      if (operation !== undefined) {
        for (const status of ['401', '403']) {
          t.match(schemaOf(operation, status), { type: 'object', properties: { statusCode: {}, code: {}, error: {}, message: {} } })
        }
      }
    }
  }
  t.ok(doc.paths['/cache/dashboard']?.get, 'the dashboard page is documented')
})

t.test('each route documents its query and response shapes', async (t) => {
  const { paths } = await spec(t)

  const stats = paths['/cache/stats'].get
  t.match(schemaOf(stats, '200'), {
    type: 'object',
    properties: {
      statistics: { type: 'object', properties: { hits: { type: 'integer' }, hitRate: { type: 'number' }, namespaces: { type: 'object' } } },
      redis: { type: 'object', properties: { redisVersion: {}, usedMemory: {}, connectedClients: {}, evictedKeys: {}, keyspaceHits: {}, keyspaceMisses: {}, connected: { type: 'boolean' }, status: { type: 'string' } } }
    }
  })

  const ping = paths['/cache/ping'].get
  t.match(schemaOf(ping, '200'), { properties: { status: { enum: ['ok'] }, latencyMs: { type: 'number' } } })
  t.match(schemaOf(ping, '503'), { properties: { status: { enum: ['error'] } } })

  const clear = paths['/cache/clear'].delete
  const namespace = clear.parameters?.find((p) => p.name === 'namespace')
  t.match(namespace, { in: 'query', required: false, schema: { type: 'string', pattern: '^[A-Za-z0-9_.-]+$', maxLength: 128 } })
  t.match(schemaOf(clear, '200'), { properties: { cleared: { type: 'integer' } } })
  t.ok(clear.responses['400'], '400 documented')
  t.ok(clear.responses['503'], '503 documented')

  for (const method of ['get', 'post']) {
    t.match(schemaOf(paths['/cache/reset-stats'][method], '200'), { properties: { reset: { enum: [true] } } })
  }

  const metrics = paths['/cache/metrics'].get
  t.match(schemaOf(metrics, '200', 'text/plain'), { type: 'string' })
  t.notOk(metrics.responses['200'].content?.['application/json'], 'metrics are not JSON')
})

t.test('a custom prefix shows in the paths', async (t) => {
  const { paths } = await spec(t, '/ops/cache')
  t.ok(paths['/ops/cache/stats'])
  t.ok(paths['/ops/cache/clear'])
  t.notOk(paths['/cache/stats'])
})

t.test('the documented routes still answer as documented with swagger registered', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifySwagger, { openapi: { info: { title: 'cache', version: '1.0.0' } } })
  await app.register(fastifyRedisCache, { redis: false, routes: {} })
  await app.ready()
  t.equal((await app.inject('/cache/metrics')).headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8')
  t.same((await app.inject({ method: 'POST', url: '/cache/reset-stats' })).json(), { reset: true })
})
