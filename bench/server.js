// One benchmark server: `node server.js <variant> <port> <redisUrl>`.
//
// Every variant answers GET /data (the memory variant GET /item/:id) and keeps its Redis keys
// under `bench.<variant>:`, which it deletes again when it shuts down. Our plugin is loaded
// from the built package (../dist/cjs.js, made by `npm run build` at the repository root),
// with Fastify and ioredis 6 from the repository's own node_modules; bentocache and
// async-cache-dedupe come from bench/node_modules with the ioredis 5 that bentocache wants.
//
// Started by run.js with an IPC channel: it reports `{ ready: true }` once it listens and its
// cache is primed, shuts down on the message 'shutdown', on SIGTERM/SIGINT, and by itself when
// the runner goes away. Started by hand, it prints `ready <port>` instead.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import v8 from 'node:v8'
import { makeDocument, SIZES } from './payloads.js'

const rootRequire = createRequire(new URL('../package.json', import.meta.url))
const Fastify = rootRequire('fastify')
const RootRedis = rootRequire('ioredis').default ?? rootRequire('ioredis')

export const VARIANTS = {
  static: 'pre-serialized 2 KB JSON constant (ceiling)',
  object: 'the 2 KB document as an object constant, serialized by Fastify per request (the ceiling of any getOrSet route)',
  ioredis: 'hand-written route: one ioredis GET, send the string',
  'route-redis': 'our route cache, hit from Redis',
  'route-local': 'our route cache, hit from the local tier',
  'route-response': "our route cache with freshness: 'response' (Cache-Control: max-age from the handler), hit from Redis",
  'getorset-ours': 'our cache.getOrSet, Redis',
  'getorset-ours-local': 'our cache.getOrSet, local tier + Redis',
  'getorset-bentocache': 'bentocache getOrSet, Redis driver',
  'getorset-bentocache-tiered': 'bentocache getOrSet, memory L1 + Redis L2 + bus',
  'getorset-async-cache-dedupe': 'async-cache-dedupe, Redis storage',
  'gzip-20k': 'our route cache, 20 KB compressible JSON, hit from Redis',
  memory: 'our route cache with a local tier of 200k entries / 64 MiB, distinct small entries',
  'memory-control': 'the memory variant without a local tier: what the same load costs by itself'
}

/** Local tier of the memory step. */
export const MEMORY_LOCAL = { maxEntries: 200_000, maxBytes: 64 * 1024 * 1024 }
const LOCAL = { maxEntries: 10_000 }
const TTL = 3600

async function main () {
  const [variant, portArg, redisUrl] = process.argv.slice(2)
  if (!(variant in VARIANTS) || !portArg || !redisUrl) {
    console.error(`usage: node server.js <variant> <port> <redisUrl>\nvariants: ${Object.keys(VARIANTS).join(', ')}`)
    process.exit(2)
  }
  const port = Number(portArg)
  const keyPrefix = `bench.${variant}`
  const app = Fastify({ logger: false })
  const closers = []

  const doc = makeDocument(variant === 'gzip-20k' ? SIZES.large : SIZES.main)
  const json = JSON.stringify(doc)

  switch (variant) {
    case 'static':
      app.get('/data', (request, reply) => {
        reply.header('content-type', 'application/json; charset=utf-8').send(json)
      })
      break

    case 'object':
      app.get('/data', async () => doc)
      break

    case 'ioredis': {
      const redis = new RootRedis(redisUrl)
      closers.push(() => redis.quit())
      const key = `${keyPrefix}:data`
      await redis.set(key, json, 'EX', TTL)
      app.get('/data', async (request, reply) => {
        const value = await redis.get(key)
        reply.header('content-type', 'application/json; charset=utf-8')
        return value
      })
      break
    }

    case 'route-redis':
    case 'route-local':
    case 'route-response':
    case 'gzip-20k':
    case 'memory':
    case 'memory-control':
    case 'getorset-ours':
    case 'getorset-ours-local': {
      const plugin = rootRequire('./dist/cjs.js')
      const local = variant === 'memory' ? MEMORY_LOCAL : variant.endsWith('-local') ? LOCAL : undefined
      await app.register(plugin, {
        redis: { url: redisUrl },
        prefix: keyPrefix,
        routes: false,
        ...(local === undefined ? {} : { local })
      })
      if (variant.startsWith('getorset')) {
        const compute = () => doc
        app.get('/data', () => app.cache.getOrSet('k', compute, { ttl: TTL }))
      } else if (variant.startsWith('memory')) {
        app.get('/item/:id', { config: { cache: { ttl: TTL } } }, async (request) => makeDocument(SIZES.small, Number(request.params.id)))
        app.get('/__bench/memory', async () => {
          // After a full collection V8's helper threads still free the dead ArrayBuffers and
          // release pages for a while: let them finish before reading the RSS.
          globalThis.gc?.()
          globalThis.gc?.()
          await new Promise((resolve) => setTimeout(resolve, 500))
          globalThis.gc?.()
          return { memory: process.memoryUsage(), statistics: app.cache.getStatistics(), gc: typeof globalThis.gc === 'function', tier: inspectLocalTier(app.cache), where: whereMemoryIs() }
        })
      } else if (variant === 'route-response') {
        // The response decides freshness: its Cache-Control is read once, when it is stored.
        app.get('/data', { config: { cache: { ttl: TTL, freshness: 'response' } } }, async (request, reply) => {
          reply.header('cache-control', `public, max-age=${TTL}`)
          return doc
        })
      } else {
        // The gzip variants measure a gzipped entry for both kinds of client: stored gzipped
        // whatever its clients (by default a route stores what most of them take).
        app.get('/data', { config: { cache: { ttl: TTL, ...(variant === 'gzip-20k' ? { compress: true } : {}) } } }, async () => doc)
      }
      break
    }

    case 'getorset-bentocache':
    case 'getorset-bentocache-tiered': {
      const { BentoCache, bentostore } = await import('bentocache')
      const { redisDriver, redisBusDriver } = await import('bentocache/drivers/redis')
      const { memoryDriver } = await import('bentocache/drivers/memory')
      const connection = redisOptions(redisUrl)
      let store = bentostore()
      if (variant === 'getorset-bentocache-tiered') {
        store = store
          .useL1Layer(memoryDriver({ maxItems: LOCAL.maxEntries }))
          .useL2Layer(redisDriver({ connection }))
          .useBus(redisBusDriver({ connection }))
      } else {
        store = store.useL2Layer(redisDriver({ connection }))
      }
      const bento = new BentoCache({ default: 'cache', prefix: keyPrefix, stores: { cache: store } })
      closers.push(() => bento.disconnectAll())
      const options = { key: 'k', factory: () => doc, ttl: '1h' }
      app.get('/data', () => bento.getOrSet(options))
      break
    }

    case 'getorset-async-cache-dedupe': {
      const { createCache } = await import('async-cache-dedupe')
      const { Redis } = await import('ioredis')
      const client = new Redis(redisUrl, { keyPrefix: `${keyPrefix}:` })
      closers.push(() => client.quit())
      const cache = createCache({ ttl: TTL, storage: { type: 'redis', options: { client } } })
      cache.define('data', async () => doc)
      app.get('/data', () => cache.data('k'))
      break
    }
  }

  // Prime the cache (and the JIT a little) so every benchmark request is a hit: with the Host the
  // load generator sends, which is part of a route's default key.
  const primePath = variant.startsWith('memory') ? '/item/0' : '/data'
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ method: 'GET', url: primePath, headers: { host: `127.0.0.1:${port}` } })
    if (res.statusCode !== 200) throw new Error(`${variant}: priming ${primePath} answered ${res.statusCode}: ${res.body.slice(0, 200)}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  await app.listen({ port, host: '127.0.0.1' })

  let closing = false
  async function shutdown (reason, code = 0) {
    if (closing) return
    closing = true
    // Said on stderr, which run.js shows when a server stops in the middle of a run.
    if (reason !== 'shutdown message') console.error(`${variant}: shutting down on ${reason}`)
    const timer = setTimeout(() => process.exit(code), 5000)
    timer.unref()
    try {
      await deleteKeys(redisUrl, `${keyPrefix}:*`)
      await app.close()
      for (const close of closers) await close()
    } catch (err) {
      console.error(`${variant}: shutdown:`, err)
    }
    process.exit(code)
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  process.on('message', (message) => { if (message === 'shutdown') shutdown('shutdown message') })
  process.on('disconnect', () => shutdown('the runner going away'))

  if (process.send) process.send({ ready: true, port, bytes: Buffer.byteLength(json) })
  else console.log(`ready ${port}`)
}

/** Deletes the keys this server made, and nothing else. */
async function deleteKeys (redisUrl, pattern) {
  const redis = new RootRedis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 })
  try {
    await redis.connect()
    let cursor = '0'
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await redis.unlink(...keys)
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}

/**
 * Diagnostic for the memory step, reading the local tier's internals when they look as
 * expected (views of the entries' bytes by slot on `cache.core.stack.local.views`, their segments on
 * `.homes`), else null: what the entries' views hold against the segments (ArrayBuffers) they
 * keep alive, and how many of those segments had a view handed out by a hit.
 */
function inspectLocalTier (cache) {
  const local = cache?.core?.stack?.local
  if (!Array.isArray(local?.views) || !Array.isArray(local?.homes)) return null
  let entries = 0
  let bufferBytes = 0
  let backingBytes = 0
  const seen = new Set()
  const exposed = new Set()
  local.views.forEach((view, slot) => {
    if (!Buffer.isBuffer(view) || view.length === 0) return
    entries++
    bufferBytes += view.length
    if (!seen.has(view.buffer)) {
      seen.add(view.buffer)
      backingBytes += view.buffer.byteLength
    }
    if (local.homes[slot]?.exposed) exposed.add(view.buffer)
  })
  return { entries, bufferBytes, backingBytes, segments: local.segments, exposedSegments: exposed.size }
}

/**
 * Diagnostic for the memory step: where the RSS is. V8's heap spaces as committed (new space
 * grows with the survival rate of young objects; large objects hold big tables such as a Map's),
 * and on Linux the resident memory of the malloc heap (`[heap]`, the brk area: small and mid-size
 * allocations) against anonymous mappings (V8's pages, large allocations, other threads' malloc
 * arenas), read from /proc/self/smaps; null where that file is missing.
 */
function whereMemoryIs () {
  const spaces = {}
  for (const space of v8.getHeapSpaceStatistics()) {
    const name = space.space_name.replace(/_space$/, '')
    if (space.space_size > 0) spaces[name] = space.space_size
  }
  let maps = null
  try {
    maps = { heap: 0, anonymous: 0, other: 0 }
    let kind = 'other'
    for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
      // The rest (other): files mapped, the node binary's code among them, and stacks.
      const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+ *(.*)$/.exec(line)
      if (mapping) {
        kind = mapping[1] === '[heap]' ? 'heap' : mapping[1] === '' ? 'anonymous' : 'other'
        continue
      }
      const rss = /^Rss: +(\d+) kB/.exec(line)
      if (rss) maps[kind] += Number(rss[1]) * 1024
    }
  } catch {
    maps = null
  }
  return { spaces, maps }
}

function redisOptions (url) {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: Number(parsed.port || 6379) }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}
