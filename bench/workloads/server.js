// One workload server: `node workloads/server.js <variant> <port> <redisUrl|none>`.
//
// Every variant serves the same items API over the simulated database of items.js:
//   GET  /items/:id   the item's 2 KB JSON document, carrying its version
//   POST /items/:id   bumps the item's version and answers `{"id":..,"version":..}`
// and differs only in how GET is cached. Started by workloads/main.js with an IPC channel: it
// reports `{ ready: true }` once it listens, answers `{ type: 'stats' }` with its counters
// (database reads and writes, garbage collections by kind), and stops on 'shutdown', on
// SIGTERM/SIGINT, or when the runner goes away. Keys live under `bench.w.<variant>:` in the
// runner's throwaway Redis, which the runner flushes between workloads.
import { createRequire } from 'node:module'
import { constants, PerformanceObserver } from 'node:perf_hooks'
import { pathToFileURL } from 'node:url'
import { createDatabase, itemDocument } from './items.js'

const rootRequire = createRequire(new URL('../../package.json', import.meta.url))
const Fastify = rootRequire('fastify')
const RootRedis = rootRequire('ioredis').default ?? rootRequire('ioredis')

export const SERVER_VARIANTS = {
  static: 'a pre-serialized 2 KB JSON constant for every item (load generator check only)',
  'static-hit': 'the same constant with the five headers a cache hit carries (load generator check only)',
  uncached: 'no cache: every GET waits 2 ms on the database',
  handwritten: 'hand-written ioredis cache-aside: GET, on a miss read the database and SET EX; POST DELs',
  'ours-redis': 'our route cache, Redis; POST busts the item',
  'ours-local': 'our route cache, local tier (maxEntries 50000) + Redis; POST busts the item',
  'ours-memory': 'our route cache, in-process memory store (no Redis); POST busts the item'
}

const TTL = 600
// The in-process layers are sized to hold every item with room to spare: at the default 64 MiB,
// 20,000 entries of 2.4 KB plus their per-entry overhead sit at the bound, and the evictions
// (and the garbage they make) measured the sizing, not the cache.
const IN_PROCESS_BYTES = 128 * 1024 * 1024
const LOCAL = { maxEntries: 50_000, maxBytes: IN_PROCESS_BYTES }
const JSON_TYPE = 'application/json; charset=utf-8'

/**
 * Counts the commands this process sends to Redis, whichever client sends them: a script call or
 * an MGET counts once, however many keys or commands it covers (Redis's own INFO commandstats
 * counts the commands inside a script too). Each is a request of a round trip, though commands
 * sent together share one.
 */
function countRedisCommands () {
  const counter = { sent: 0 }
  const send = RootRedis.prototype.sendCommand
  RootRedis.prototype.sendCommand = function (...args) {
    counter.sent++
    return send.apply(this, args)
  }
  return counter
}

/**
 * Garbage collections by kind, and the longest pause of any since the runner last asked (it asks
 * before and after each run, so the pause is the run's).
 */
function countCollections () {
  const gc = { major: 0, minor: 0, incremental: 0, weak: 0, longestMs: 0 }
  const kinds = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak'
  }
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = kinds[entry.detail?.kind ?? entry.kind]
      if (kind) gc[kind]++
      gc.longestMs = Math.max(gc.longestMs, entry.duration)
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  return gc
}

/** The routes of one variant; returns what to close on shutdown. */
async function addRoutes (app, variant, redisUrl, db) {
  const closers = []
  const id = (request) => Number(request.params.id)
  const post = async (request) => ({ id: id(request), version: await db.write(id(request)) })
  switch (variant) {
    case 'static': {
      const json = JSON.stringify(itemDocument(1, 1))
      app.get('/items/:id', (request, reply) => { reply.header('content-type', JSON_TYPE).send(json) })
      app.post('/items/:id', post)
      break
    }
    case 'static-hit': {
      // The floor of any cache hit through Fastify: the constant, with the headers that the
      // public contract requires of a hit (set one by one, as a cached route does).
      const json = JSON.stringify(itemDocument(1, 1))
      const date = new Date().toUTCString()
      app.get('/items/:id', (request, reply) => {
        reply.header('content-type', JSON_TYPE).header('etag', '"seP9jZ9UcMOwKwWA6-Rxpjw08qw"').header('date', date)
        reply.header('x-cache', 'HIT').header('cache-status', 'fastify-redis-cache; hit; ttl=599').header('age', '1').send(json)
      })
      app.post('/items/:id', post)
      break
    }
    case 'uncached':
      app.get('/items/:id', (request) => db.read(id(request)))
      app.post('/items/:id', post)
      break
    case 'handwritten': {
      const redis = new RootRedis(redisUrl)
      closers.push(() => redis.quit())
      const prefix = `bench.w.${variant}:item:`
      app.get('/items/:id', async (request, reply) => {
        const key = prefix + request.params.id
        reply.header('content-type', JSON_TYPE)
        const cached = await redis.get(key)
        if (cached !== null) return cached
        const json = JSON.stringify(await db.read(id(request)))
        await redis.set(key, json, 'EX', TTL)
        return json
      })
      app.post('/items/:id', async (request) => {
        const answer = await post(request)
        await redis.del(prefix + request.params.id)
        return answer
      })
      break
    }
    default: {
      const plugin = rootRequire('./dist/cjs.js')
      await app.register(plugin, {
        redis: variant === 'ours-memory' ? false : { url: redisUrl },
        ...(variant === 'ours-memory' ? { memory: { maxBytes: IN_PROCESS_BYTES } } : {}),
        prefix: `bench.w.${variant}`,
        routes: false,
        ...(variant === 'ours-local' ? { local: LOCAL } : {})
      })
      const key = (request) => ['item', request.params.id]
      app.get('/items/:id', { config: { cache: { ttl: TTL, namespace: 'items', key } } }, (request) => db.read(id(request)))
      app.post('/items/:id', { config: { cache: { bust: { namespace: 'items', keys: (request) => [key(request)] } } } }, post)
    }
  }
  return closers
}

async function main () {
  const [variant, portArg, redisUrl] = process.argv.slice(2)
  if (!(variant in SERVER_VARIANTS) || !portArg || !redisUrl) {
    console.error(`usage: node workloads/server.js <variant> <port> <redisUrl|none>\nvariants: ${Object.keys(SERVER_VARIANTS).join(', ')}`)
    process.exit(2)
  }
  const gc = countCollections()
  const redisCommands = countRedisCommands()
  const db = createDatabase()
  const app = Fastify({ logger: false })
  const closers = await addRoutes(app, variant, redisUrl, db)
  const port = await app.listen({ port: Number(portArg), host: '127.0.0.1' }).then(() => Number(portArg))

  let closing = false
  async function shutdown (reason) {
    if (closing) return
    closing = true
    if (reason !== 'shutdown message') console.error(`${variant}: shutting down on ${reason}`)
    setTimeout(() => process.exit(0), 5000).unref()
    try {
      await app.close()
      for (const close of closers) await close()
    } catch (err) {
      console.error(`${variant}: shutdown:`, err)
    }
    process.exit(0)
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  process.on('disconnect', () => shutdown('the runner going away'))
  process.on('message', (message) => {
    if (message === 'shutdown') shutdown('shutdown message')
    else if (message?.type === 'stats') {
      process.send({ stats: { ...db.counts(), redisSent: redisCommands.sent, gc: { ...gc } } })
      gc.longestMs = 0
    }
  })
  if (process.send) process.send({ ready: true, port })
  else console.log(`ready ${port}`)
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
