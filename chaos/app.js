'use strict'
// The app under test: an items API over an in-process "database" (a version counter per item),
// cached by the plugin. Reads answer the version they saw; mutations bump it and invalidate.
//
//   GET  /items/:id             cached (namespace `items`, key `item:<id>`, tag `item:<id>`)
//   POST /items/:id             bumps the version; bust: { namespace: 'items', keys: ['item:<id>'] }
//   POST /items/:id/tags        bumps the version; bust: { tags: ['item:<id>'] }
//   POST /items/:id/delete      bumps the version; awaits fastify.cache.delete('item:<id>', { namespace: 'items' })
//   POST /items/:id/invalidate  bumps the version; awaits fastify.cache.invalidateTags(['item:<id>'])
//   GET  /limited               fastify.cache.rateLimit('limited', { max: 5, window: 60 }) in a preHandler
const Fastify = require('fastify')
const fastifyRedisCache = require('../dist/cjs.js')
const { HOST, sleep } = require('./redis')

/** The ways a mutation invalidates, by the path suffix of its route. */
const MUTATIONS = {
  keys: '',
  tags: '/tags',
  delete: '/delete',
  invalidate: '/invalidate'
}

const RATE_LIMIT = { max: 5, window: 60 }
// Every instance started and not closed yet.
const started = new Set()

/** The "database": one version counter per item, shared by every instance of a scenario. */
function createDatabase () {
  const versions = new Map()
  return {
    version: (id) => versions.get(id) ?? 0,
    bump (id) {
      const next = (versions.get(id) ?? 0) + 1
      versions.set(id, next)
      return next
    }
  }
}

const BODY_PADDING = 'x'.repeat(384)

/**
 * Starts one instance. `options.reads`: 'route' (route caching) or 'getOrSet' (the handler reads
 * through fastify.cache.getOrSet at the same key); `options.handlerDelay`: milliseconds the read
 * handler spends after reading the database; `options.local`: the plugin's local tier option.
 */
async function startApp (redisUrl, db, options = {}) {
  const handlerDelay = options.handlerDelay ?? 5
  const app = Fastify({ logger: false })
  await app.register(fastifyRedisCache, {
    redis: { url: redisUrl },
    prefix: 'chaos',
    routes: false,
    commandTimeout: 200,
    circuitBreaker: { failureThreshold: 3, resetTimeout: 500 },
    ...(options.local === undefined ? {} : { local: options.local })
  })
  const load = async (id) => {
    const version = db.version(id)
    await sleep(handlerDelay)
    return { id, version, body: BODY_PADDING }
  }
  const tags = (request) => [`item:${request.params.id}`]
  if (options.reads === 'getOrSet') {
    app.get('/items/:id', async (request, reply) => {
      let ran = false
      const id = request.params.id
      const value = await app.cache.getOrSet(`item:${id}`, () => { ran = true; return load(id) }, { ttl: 300, namespace: 'items', tags: [`item:${id}`] })
      reply.header('x-cache', ran ? 'MISS' : 'HIT')
      return value
    })
  } else {
    const cache = { ttl: 300, namespace: 'items', key: (request) => `item:${request.params.id}`, tags }
    app.get('/items/:id', { config: { cache } }, (request) => load(request.params.id))
  }
  addMutations(app, db)
  app.get('/limited', { preHandler: async () => { await app.cache.rateLimit('limited', RATE_LIMIT) } }, async () => ({ ok: true }))
  await app.listen({ port: 0, host: HOST })
  const instance = { app, port: app.server.address().port }
  started.add(instance)
  return instance
}

function addMutations (app, db) {
  const bump = (request) => ({ id: request.params.id, version: db.bump(request.params.id) })
  const keys = (request) => [`item:${request.params.id}`]
  const tags = (request) => [`item:${request.params.id}`]
  app.post('/items/:id', { config: { cache: { bust: { namespace: 'items', keys } } } }, async (request) => bump(request))
  app.post('/items/:id/tags', { config: { cache: { bust: { tags } } } }, async (request) => bump(request))
  app.post('/items/:id/delete', async (request) => {
    const result = bump(request)
    await app.cache.delete(`item:${request.params.id}`, { namespace: 'items' })
    return result
  })
  app.post('/items/:id/invalidate', async (request) => {
    const result = bump(request)
    await app.cache.invalidateTags([`item:${request.params.id}`])
    return result
  })
}

/** Closes an instance, without waiting forever on a connection a scenario left frozen. */
async function closeApp (instance) {
  started.delete(instance)
  await Promise.race([instance.app.close(), sleep(3000)])
}

async function closeAllApps () {
  for (const instance of [...started]) await closeApp(instance)
}

module.exports = { MUTATIONS, RATE_LIMIT, createDatabase, startApp, closeApp, closeAllApps }
