// Misspelled option names fail registration: the plugin's options and a route's `config.cache`
// are checked against their schemas, unknown names included, and the error names the route,
// the option and the closest valid name.
import t from 'tap'
import Fastify, { type RouteOptions } from 'fastify'
import './helpers/app'
import fastifyRedisCache, { CacheConfigError, routeCache } from '../index'
import { resolveConfig } from '../lib/config'
import { closest, editDistance } from '../lib/suggest'
import type { CacheOptions } from '../types'

t.test('the closest name, by edit distance ignoring case', async (t) => {
  t.equal(editDistance('kitten', 'sitting'), 3)
  t.equal(editDistance('', 'abc'), 3)
  t.equal(closest('ttll', ['ttl', 'tags', 'key']), 'ttl')
  t.equal(closest('defaultTTL', ['defaultTtl', 'maxTtl']), 'defaultTtl')
  t.equal(closest('namspace', ['namespace', 'key']), 'namespace')
  t.equal(closest('zzzzqqq', ['ttl', 'namespace']), undefined, 'nothing close: no guess')
})

t.test('plugin options: unknown names fail with the closest valid one', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ defaultTTL: 60 }, /unknown option defaultTTL \(did you mean defaultTtl\?\)/],
    [{ compression: { threshhold: 10 } }, /unknown option compression\.threshhold \(did you mean threshold\?\)/],
    [{ routes: { tokn: 'x' } }, /unknown option routes\.tokn \(did you mean token\?\)/],
    [{ local: { maxentries: 5 } }, /unknown option local\.maxentries \(did you mean maxEntries\?\)/],
    [{ circuitBreaker: { resetTimout: 5 } }, /unknown option circuitBreaker\.resetTimout \(did you mean resetTimeout\?\)/],
    [{ zzzzqqq: 1 }, /unknown option zzzzqqq \(valid: decorator, prefix, defaultTtl, .*redis, serializer\)/],
    [{ compression: 'yes' }, /option compression expected union value \(got "yes"\)/]
  ]
  for (const [options, message] of cases) {
    t.throws(() => resolveConfig(options as CacheOptions, {}), { name: 'CacheConfigError', code: 'CACHE_CONFIG', message }, JSON.stringify(options))
  }
  t.ok(resolveConfig({ routes: { preHandler: async () => {}, prefix: '/x' }, redis: false, serializer: undefined }, {}), 'options typed by hand are known')
  t.ok(resolveConfig({ logLevel: 'warn', logSerializers: {} } as CacheOptions, {}), "Fastify's register options are accepted")

  const app = Fastify()
  t.teardown(() => app.close())
  app.register(fastifyRedisCache, { defaultTTL: 60 } as CacheOptions)
  await t.rejects(async () => { await app.ready() }, { name: 'CacheConfigError', message: /did you mean defaultTtl\?/ })
})

/** The error registering a route with `cache` as its config.cache throws. */
async function routeError (cache: unknown, method: RouteOptions['method'] = 'GET'): Promise<Error | undefined> {
  const app = Fastify()
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  try {
    app.route({ method, url: '/items/:id', config: { cache } as RouteOptions['config'], handler: async () => 'x' })
    await app.ready()
    return undefined
  } catch (err) {
    return err as Error
  } finally {
    await app.close()
  }
}

t.test('config.cache: unknown names and wrong types name the route, the option and the fix', async (t) => {
  const cases: Array<[unknown, RegExp, RouteOptions['method']?]> = [
    [{ ttll: 5 }, /GET \/items\/:id: unknown option config\.cache\.ttll \(did you mean ttl\?\)/],
    [{ ttl: 5, namspace: 'x' }, /unknown option config\.cache\.namspace \(did you mean namespace\?\)/],
    [{ ttl: 'x', ttll: 5 }, /unknown option config\.cache\.ttll/, 'GET'],
    [{ bust: { kyes: ['list'] } }, /POST \/items\/:id: unknown option config\.cache\.bust\.kyes \(did you mean keys\?\)/, 'POST'],
    [{ bust: { tags: ['t'], extra: 1 } }, /unknown option config\.cache\.bust\.extra \(valid: namespace, keys, tags\)/, 'POST'],
    [{ compress: 'yes' }, /GET \/items\/:id: option config\.cache\.compress expected boolean \(got "yes"\)/],
    [{ skipHooksOnHit: 1 }, /option config\.cache\.skipHooksOnHit expected boolean/],
    [{ key: 5 }, /Cache key must be/],
    [{ statuses: [200], maxAge: 5, vary: [] as string[], allowAuthorization: 'yes' }, /option config\.cache\.allowAuthorization expected boolean/],
    [{ credentials: 'everyone' }, /credentials must be one of/]
  ]
  for (const [cache, message, method] of cases) {
    const err = await routeError(cache, method)
    t.type(err, CacheConfigError, JSON.stringify(cache))
    t.match(err?.message, message)
  }
  t.equal(await routeError({ ttl: 5, namespace: 'x', key: () => 'k', tags: ['t'], vary: ['accept'], maxAge: false, bust: { keys: [['a', 'b']] } }), undefined, 'valid options pass')
})

t.test('routeCache: the options as given, typed for the route', async (t) => {
  const options = { ttl: 5, key: (req: { params: { id: number } }) => `item:${req.params.id}` }
  t.equal(routeCache<{ Params: { id: number } }>(options), options)
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: false, routes: false })
  let runs = 0
  app.get<{ Params: { id: number } }>('/n/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'integer' } } } },
    config: { cache: routeCache<{ Params: { id: number } }>({ key: (req) => `n:${req.params.id + 1}` }) }
  }, async (req) => ({ id: req.params.id, runs: ++runs }))
  t.same((await app.inject('/n/1')).json(), { id: 1, runs: 1 })
  t.same((await app.inject('/n/1')).json(), { id: 1, runs: 1 }, 'a hit')
  t.equal(await app.cache.exists('n:2'), 1, 'under the key the callback made from the number')
})
