// An empty environment variable counts as unset, read from the real process.env: compose files
// and CI systems write `NAME=` for a variable they mean to leave out.
import t from 'tap'
import Fastify from 'fastify'
import './helpers/app'
import type { Scope } from './helpers/app'
import fastifyRedisCache from '../index'
import { EnvironmentSchema, resolveConfig } from '../lib/config'

const EMPTY = ['REDIS_URL', 'REDIS_HOST', 'REDIS_PORT', 'REDIS_DB', 'REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_SSL',
  'REDIS_SOCKET_TIMEOUT', 'REDIS_CONNECT_TIMEOUT', 'CACHE_PREFIX', 'CACHE_DEFAULT_TTL', 'CACHE_MAX_TTL',
  'CACHE_COMPRESSION_ENABLED', 'CACHE_COMPRESSION_THRESHOLD', 'CACHE_ADMIN_TOKEN', 'ENVIRONMENT', 'DEBUG']

/** Sets every variable of the schema to '' in process.env for one test; restores it after. */
function emptyEnvironment (t: Scope): void {
  const saved = new Map<string, string | undefined>()
  for (const name of EMPTY) {
    saved.set(name, process.env[name])
    process.env[name] = ''
  }
  t.teardown(() => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  })
}

t.test('every variable of the schema is covered', async (t) => {
  t.same([...EMPTY, 'NODE_ENV'].sort(), Object.keys(EnvironmentSchema.properties).sort())
})

t.test('empty variables in process.env are unset: registration succeeds with the defaults', async (t) => {
  emptyEnvironment(t)
  const config = resolveConfig({})
  t.equal(config.redis.kind, 'memory', 'neither REDIS_URL nor REDIS_HOST counts as set')
  t.equal(config.defaultTtl, 3600)
  t.equal(config.prefix, 'cache')
  t.equal(config.routes === false ? undefined : config.routes.token, undefined, 'an empty CACHE_ADMIN_TOKEN is no token')

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache)
  await app.ready()
  t.equal(await app.cache.set('k', 'v'), true)
  t.equal(await app.cache.get('k'), 'v')
})

t.test('a set variable next to empty ones is still read from process.env', async (t) => {
  emptyEnvironment(t)
  process.env.CACHE_DEFAULT_TTL = '42'
  t.equal(resolveConfig({}).defaultTtl, 42)
  process.env.CACHE_DEFAULT_TTL = 'abc'
  t.throws(() => resolveConfig({}), { name: 'CacheConfigError', message: /CACHE_DEFAULT_TTL/ })
})
