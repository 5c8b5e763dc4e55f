// The error handler: a CacheError thrown from a route registered after the plugin becomes
// { statusCode, code, error, message } with its status (and Retry-After for RateLimitError);
// every other error is answered exactly as it would be without the plugin: by the app's own
// handler (root or child context, set before or after the plugin) or Fastify's default.
import t, { type Test } from 'tap'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyRequest, type LightMyRequestResponse } from 'fastify'
import fastifyRedisCache from '../index'
import { cacheErrorHandler, cacheErrorReply } from '../lib/error-handler'
import {
  CacheCompressionError,
  CacheDecompressionError,
  CacheDeserializationError,
  CacheError,
  CacheKeyError,
  CacheSerializationError,
  CacheTimeoutError,
  RateLimitError,
  RedisConnectionError
} from '../lib/errors'
import { captureLogs, LEVEL, type Logs } from './helpers/app'
import type { CacheOptions } from '../types'

class TeapotCacheError extends CacheError {
  override readonly code = 'CACHE_TEAPOT'
  override readonly statusCode = 599
}

interface Setup {
  /** Runs before the plugin is registered. */
  before?: (app: FastifyInstance) => void
  /** Runs after the plugin is registered (routes usually go here). */
  after?: (app: FastifyInstance) => void
  options?: CacheOptions | false
  logs?: Logs
}

async function make (t: Test, setup: Setup): Promise<FastifyInstance> {
  const app = Fastify(setup.logs === undefined ? {} : { logger: { level: 'info', stream: setup.logs.stream } })
  t.teardown(() => app.close())
  setup.before?.(app)
  if (setup.options !== false) await app.register(fastifyRedisCache, { redis: false, routes: false, ...setup.options })
  setup.after?.(app)
  await app.ready()
  return app
}

/** The same app with and without the plugin answers `url` the same way. */
async function sameAsWithout (t: Test, setup: Setup, url: string): Promise<LightMyRequestResponse> {
  const withPlugin = await (await make(t, setup)).inject(url)
  const without = await (await make(t, { ...setup, options: false })).inject(url)
  t.equal(withPlugin.statusCode, without.statusCode, `${url}: same status with and without the plugin`)
  t.equal(withPlugin.body, without.body, `${url}: same body with and without the plugin`)
  t.equal(withPlugin.headers['content-type'], without.headers['content-type'], `${url}: same content type`)
  return withPlugin
}

const cacheErrors: Array<[string, () => CacheError, number, string, string]> = [
  ['RedisConnectionError', () => new RedisConnectionError('redis down'), 503, 'CACHE_REDIS_CONNECTION', 'Service Unavailable'],
  ['CacheKeyError', () => new CacheKeyError('bad key'), 400, 'CACHE_KEY_INVALID', 'Bad Request'],
  ['CacheSerializationError', () => new CacheSerializationError('cannot serialize'), 500, 'CACHE_SERIALIZATION', 'Internal Server Error'],
  ['CacheDeserializationError', () => new CacheDeserializationError('cannot read'), 500, 'CACHE_DESERIALIZATION', 'Internal Server Error'],
  ['CacheCompressionError', () => new CacheCompressionError('gzip failed'), 500, 'CACHE_COMPRESSION', 'Internal Server Error'],
  ['CacheDecompressionError', () => new CacheDecompressionError('gunzip failed'), 500, 'CACHE_DECOMPRESSION', 'Internal Server Error'],
  ['RateLimitError', () => new RateLimitError('slow down', 7, 10), 429, 'CACHE_RATE_LIMITED', 'Too Many Requests'],
  ['CacheTimeoutError', () => new CacheTimeoutError('callback too slow', 2000), 504, 'CACHE_TIMEOUT', 'Gateway Timeout'],
  ['CacheError', () => new CacheError('generic'), 500, 'CACHE_ERROR', 'Internal Server Error'],
  ['a subclass with an unnamed status', () => new TeapotCacheError('odd'), 599, 'CACHE_TEAPOT', 'Error']
]

t.test('every CacheError maps to its status and { statusCode, code, error, message }', async (t) => {
  const logs = captureLogs()
  const app = await make(t, {
    logs,
    after (app) {
      cacheErrors.forEach(([, create], i) => {
        app.get(`/sync/${i}`, () => { throw create() })
        app.get(`/async/${i}`, async () => { throw create() })
        app.get(`/send/${i}`, (_request, reply) => { reply.send(create()) })
      })
    }
  })
  for (const [i, [name, create, statusCode, code, error]] of cacheErrors.entries()) {
    for (const style of ['sync', 'async', 'send']) {
      const res = await app.inject(`/${style}/${i}`)
      t.equal(res.statusCode, statusCode, `${name} (${style}): ${statusCode}`)
      t.match(res.headers['content-type'], /^application\/json/)
      t.same(res.json(), { statusCode, code, error, message: create().message }, `${name} (${style}): body`)
      if (name === 'RateLimitError') t.equal(res.headers['retry-after'], '7', 'Retry-After in seconds')
      else t.notOk('retry-after' in res.headers, 'no Retry-After')
    }
  }
  t.ok(logs.find('redis down', LEVEL.error).length > 0, '5xx cache errors are logged as errors')
  t.ok(logs.find('bad key', LEVEL.info).length > 0, '4xx cache errors are logged at info')
  t.equal(logs.find('bad key', LEVEL.error).length, 0)
})

t.test('cacheErrorReply and cacheErrorHandler', async (t) => {
  t.same(cacheErrorReply(new RateLimitError('x', 3, 1)), { statusCode: 429, code: 'CACHE_RATE_LIMITED', error: 'Too Many Requests', message: 'x' })
  const other = new Error('not mine')
  t.throws(() => cacheErrorHandler(other, undefined as never, undefined as never), other, 'other errors are rethrown untouched')
})

t.test('rateLimit used in a preHandler hook: 429 with Retry-After once max is passed', async (t) => {
  const app = await make(t, {
    after (app) {
      app.get('/limited', {
        preHandler: async (request) => { await app.cache.rateLimit(`ip:${request.ip}`, { max: 2, window: 60 }) }
      }, async () => ({ ok: true }))
    }
  })
  t.equal((await app.inject('/limited')).statusCode, 200)
  t.equal((await app.inject('/limited')).statusCode, 200)
  const res = await app.inject('/limited')
  t.equal(res.statusCode, 429)
  t.equal(res.json().code, 'CACHE_RATE_LIMITED')
  const retryAfter = Number(res.headers['retry-after'])
  t.ok(retryAfter >= 1 && retryAfter <= 60, `Retry-After ${retryAfter} within the window`)
})

t.test('HEAD routes Fastify adds for GET routes map cache errors too', async (t) => {
  const app = await make(t, { after (app) { app.get('/h', async () => { throw new RateLimitError('slow', 4, 1) }) } })
  const res = await app.inject({ method: 'HEAD', url: '/h' })
  t.equal(res.statusCode, 429)
  t.equal(res.headers['retry-after'], '4')
})

t.test('non-cache errors keep Fastify\'s default handling', async (t) => {
  const setup: Setup = {
    after (app) {
      app.get('/boom', async () => { throw new Error('boom') })
      app.get('/teapot', async () => { throw Object.assign(new Error('short and stout'), { statusCode: 418, code: 'TEAPOT' }) })
      app.get('/headers', async () => { throw Object.assign(new Error('moved'), { statusCode: 409, headers: { 'x-reason': 'conflict' } }) })
      app.get('/valid', { schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] } } }, async () => 'ok')
      app.post('/body', { schema: { body: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] } } }, async () => 'ok')
    }
  }
  const boom = await sameAsWithout(t, setup, '/boom')
  t.equal(boom.statusCode, 500)
  t.same(boom.json(), { statusCode: 500, error: 'Internal Server Error', message: 'boom' })
  const teapot = await sameAsWithout(t, setup, '/teapot')
  t.same(teapot.json(), { statusCode: 418, code: 'TEAPOT', error: 'I\'m a Teapot', message: 'short and stout' })
  const headers = await sameAsWithout(t, setup, '/headers')
  t.equal(headers.headers['x-reason'], 'conflict', 'error headers kept')
  const validation = await sameAsWithout(t, setup, '/valid?n=abc')
  t.equal(validation.statusCode, 400)
  t.match(validation.json(), { statusCode: 400, code: 'FST_ERR_VALIDATION', error: 'Bad Request', message: /querystring\/n must be integer/ })
  const notFound = await sameAsWithout(t, setup, '/nowhere')
  t.equal(notFound.statusCode, 404)
  t.same(notFound.json(), { message: 'Route GET:/nowhere not found', error: 'Not Found', statusCode: 404 })

  // A body that fails validation, and a body that is not JSON.
  for (const payload of ['{}', '{not json']) {
    const withPlugin = await (await make(t, setup)).inject({ method: 'POST', url: '/body', payload, headers: { 'content-type': 'application/json' } })
    const without = await (await make(t, { ...setup, options: false })).inject({ method: 'POST', url: '/body', payload, headers: { 'content-type': 'application/json' } })
    t.equal(withPlugin.statusCode, 400)
    t.equal(withPlugin.body, without.body, `body ${payload}: same answer`)
  }
})

const ownHandler = (tag: string) => function (this: FastifyInstance, err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  reply.code(418).send({ handledBy: tag, message: err.message })
}

t.test('the app\'s own root error handler still handles non-cache errors', async (t) => {
  const routes = (app: FastifyInstance): void => {
    app.get('/boom', async () => { throw new Error('boom') })
    app.get('/limited', async () => { throw new RateLimitError('slow', 2, 1) })
    app.get('/valid', { schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } } } } }, async () => 'ok')
  }

  t.test('set before the plugin', async (t) => {
    const setup: Setup = { before: (app) => { app.setErrorHandler(ownHandler('root')) }, after: routes }
    t.same((await sameAsWithout(t, setup, '/boom')).json(), { handledBy: 'root', message: 'boom' })
    t.same((await sameAsWithout(t, setup, '/valid?n=x')).json(), { handledBy: 'root', message: 'querystring/n must be integer' })
    const app = await make(t, setup)
    const limited = await app.inject('/limited')
    t.equal(limited.statusCode, 429, 'a cache error is still mapped')
    t.equal(limited.json().code, 'CACHE_RATE_LIMITED')
  })

  t.test('set after the plugin and after the routes', async (t) => {
    const setup: Setup = { after: (app) => { routes(app); app.setErrorHandler(ownHandler('late')) } }
    t.same((await sameAsWithout(t, setup, '/boom')).json(), { handledBy: 'late', message: 'boom' })
    t.equal((await (await make(t, setup)).inject('/limited')).statusCode, 429)
  })

  t.test('an async handler that returns its answer', async (t) => {
    const setup: Setup = {
      before (app) {
        app.setErrorHandler(async (err: Error) => ({ asyncHandler: true, message: err.message }))
      },
      after: routes
    }
    t.same((await sameAsWithout(t, setup, '/boom')).json(), { asyncHandler: true, message: 'boom' })
  })
})

t.test('error handlers of child contexts still handle their routes\' non-cache errors', async (t) => {
  const child: FastifyPluginAsync = async (child) => {
    child.setErrorHandler(ownHandler('child'))
    child.get('/boom', async () => { throw new Error('child boom') })
    child.get('/limited', async () => { throw new RateLimitError('slow', 5, 1) })
    child.get('/valid', { schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } } } } }, async () => 'ok')
  }
  // The child handler rethrows what it does not want; the root handler gets it.
  const rethrowing: FastifyPluginAsync = async (child) => {
    child.setErrorHandler((err: Error) => {
      if (err.message === 'mine') return { handledBy: 'rethrowing-child' }
      throw err
    })
    child.get('/mine', async () => { throw new Error('mine') })
    child.get('/theirs', async () => { throw new Error('theirs') })
  }
  const setup: Setup = {
    before: (app) => { app.setErrorHandler(ownHandler('root')) },
    after (app) {
      app.register(child, { prefix: '/child' })
      app.register(rethrowing, { prefix: '/re' })
    }
  }
  t.same((await sameAsWithout(t, setup, '/child/boom')).json(), { handledBy: 'child', message: 'child boom' })
  t.same((await sameAsWithout(t, setup, '/child/valid?n=x')).json(), { handledBy: 'child', message: 'querystring/n must be integer' })
  t.same((await sameAsWithout(t, setup, '/re/mine')).json(), { handledBy: 'rethrowing-child' })
  t.same((await sameAsWithout(t, setup, '/re/theirs')).json(), { handledBy: 'root', message: 'theirs' })
  const limited = await (await make(t, setup)).inject('/child/limited')
  t.equal(limited.statusCode, 429)
  t.equal(limited.headers['retry-after'], '5')

  // A child context registered (with its handler) before the plugin: its routes come later.
  const early: Setup = {
    before: (app) => { app.register(child, { prefix: '/early' }) }
  }
  t.same((await sameAsWithout(t, early, '/early/boom')).json(), { handledBy: 'child', message: 'child boom' })
})

t.test('a route with its own errorHandler keeps it, cache errors included', async (t) => {
  const app = await make(t, {
    after (app) {
      app.get('/own', {
        errorHandler (err, _request, reply) { reply.code(409).send({ routeHandler: err.message }) }
      }, async () => { throw new RateLimitError('route decides', 1, 1) })
    }
  })
  const res = await app.inject('/own')
  t.equal(res.statusCode, 409)
  t.same(res.json(), { routeHandler: 'route decides' })
  t.notOk('retry-after' in res.headers)
})

t.test('routes registered before the plugin are not mapped (onRoute only sees later ones)', async (t) => {
  const app = await make(t, {
    before (app) {
      app.get('/early', async () => { throw new RateLimitError('early', 3, 1) })
    }
  })
  const res = await app.inject('/early')
  t.equal(res.statusCode, 429, 'Fastify\'s default uses the error\'s statusCode')
  t.notOk('retry-after' in res.headers, 'but no Retry-After')
})

t.test('errorHandler: false leaves every route alone', async (t) => {
  const app = await make(t, {
    options: { errorHandler: false },
    after (app) {
      app.get('/limited', async () => { throw new RateLimitError('limited', 3, 1) })
    }
  })
  const res = await app.inject('/limited')
  t.equal(res.statusCode, 429)
  t.notOk('retry-after' in res.headers)
  t.same(res.json(), { statusCode: 429, code: 'CACHE_RATE_LIMITED', error: 'Too Many Requests', message: 'limited' })

  const withOwn = await make(t, {
    options: { errorHandler: false },
    before: (app) => { app.setErrorHandler(ownHandler('root')) },
    after (app) {
      app.get('/limited', async () => { throw new RateLimitError('limited', 3, 1) })
    }
  })
  t.same((await withOwn.inject('/limited')).json(), { handledBy: 'root', message: 'limited' }, 'the app\'s handler gets cache errors too')
})

t.test('onError hooks run once per error, cache errors and others alike', async (t) => {
  const seen: string[] = []
  const app = await make(t, {
    before: (app) => { app.addHook('onError', async (_request, _reply, err) => { seen.push(err.message) }) },
    after (app) {
      app.get('/boom', async () => { throw new Error('boom') })
      app.get('/limited', async () => { throw new RateLimitError('limited', 3, 1) })
    }
  })
  t.equal((await app.inject('/boom')).statusCode, 500)
  t.equal((await app.inject('/limited')).statusCode, 429)
  t.same(seen, ['boom', 'limited'])
})

t.test('errors thrown by the app\'s own handler go on to Fastify\'s default', async (t) => {
  const setup: Setup = {
    before: (app) => { app.setErrorHandler(() => { throw new Error('handler broke') }) },
    after: (app) => { app.get('/boom', async () => { throw new Error('boom') }) }
  }
  const res = await sameAsWithout(t, setup, '/boom')
  t.equal(res.statusCode, 500)
  t.match(res.json(), { message: 'handler broke' })
})
