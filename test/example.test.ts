// The demo app: cached reads, busting writes, getOrSet and a rate limit, on the memory store and
// on a real Redis; and `npm start`'s entry point as a real process.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import t from 'tap'
import { buildApp, serverSettings, startupMessage } from '../example/app'
import { freePort, startRedis } from './helpers/redis-server'

for (const store of ['memory', 'redis'] as const) {
  t.test(`items API on the ${store} store`, async (t) => {
    const redis = store === 'redis' ? await startRedis() : undefined
    const app = await buildApp(redis === undefined ? { redis: false, routes: false } : { redis: { url: redis.url }, routes: false })
    t.teardown(async () => {
      await app.close()
      await redis?.stop()
    })
    t.equal(app.cache.getStatistics().store, store)
    const settings = serverSettings({})
    t.same(settings, { port: 3000, host: '127.0.0.1', logLevel: 'info' })
    t.equal(
      startupMessage(app, settings, { REDIS_URL: redis?.url }),
      `demo items API on http://127.0.0.1:3000/items, cache store: ${redis === undefined ? 'in-process memory (set REDIS_URL to use Redis)' : `Redis (${redis.url})`}`
    )
    t.same(serverSettings({ PORT: '8080', HOST: '0.0.0.0', LOG_LEVEL: 'warn' }), { port: 8080, host: '0.0.0.0', logLevel: 'warn' })
    if (redis !== undefined) t.match(startupMessage(app, settings, { REDIS_HOST: 'redis.internal' }), /cache store: Redis \(redis\.internal\)$/)

    const first = await app.inject('/items')
    t.equal(first.headers['x-cache'], 'MISS')
    t.equal(first.headers['cache-control'], 'public, max-age=10')
    const hit = await app.inject('/items')
    t.equal(hit.headers['x-cache'], 'HIT')
    t.equal(hit.body, first.body)
    t.equal((await app.inject({ url: '/items', headers: { 'if-none-match': String(first.headers.etag) } })).statusCode, 304)

    const created = await app.inject({ method: 'POST', url: '/items', payload: { name: 'kiwi' } })
    t.equal(created.statusCode, 201)
    const afterCreate = await app.inject('/items')
    t.equal(afterCreate.headers['x-cache'], 'MISS', 'the POST busted the list')
    t.match(afterCreate.json(), [{ name: 'apple' }, { name: 'pear' }, { name: 'kiwi' }])

    t.equal((await app.inject('/items/1')).headers['x-cache'], 'MISS')
    t.equal((await app.inject('/items/1')).headers['x-cache'], 'HIT')
    const updated = await app.inject({ method: 'PUT', url: '/items/1', payload: { name: 'green apple' } })
    t.same(updated.json(), { id: 1, name: 'green apple' })
    const reread = await app.inject('/items/1')
    t.equal(reread.headers['x-cache'], 'MISS', 'the PUT busted the item')
    t.same(reread.json(), { id: 1, name: 'green apple' })
    t.equal((await app.inject({ method: 'PUT', url: '/items/99', payload: { name: 'x' } })).statusCode, 404)

    t.equal((await app.inject('/items/2')).headers['x-cache'], 'MISS')
    t.equal((await app.inject({ method: 'DELETE', url: '/items/2' })).statusCode, 204)
    const gone = await app.inject('/items/2')
    t.equal(gone.statusCode, 404, 'the DELETE busted the item by tag')
    t.equal(gone.headers['x-cache'], 'MISS')
    t.equal((await app.inject({ method: 'DELETE', url: '/items/2' })).statusCode, 404)
    t.equal((await app.inject('/items')).headers['x-cache'], 'MISS', 'the DELETE busted the list by tag')

    const expensive = await app.inject('/stats/expensive')
    t.equal(expensive.headers['x-ratelimit-limit'], '5')
    t.equal(expensive.headers['x-ratelimit-remaining'], '4')
    t.equal((await app.inject('/stats/expensive')).json().computedAt, expensive.json().computedAt, 'getOrSet served the stored value')
    for (let i = 0; i < 3; i++) await app.inject('/stats/expensive')
    const limited = await app.inject('/stats/expensive')
    t.equal(limited.statusCode, 429)
    t.equal(limited.json().code, 'CACHE_RATE_LIMITED')
    t.ok(Number(limited.headers['retry-after']) > 0)
  })
}

t.test('npm start: the built entry point serves the demo and says which store it uses', async (t) => {
  const port = await freePort()
  const child = spawn(process.execPath, [join(__dirname, '..', 'dist', 'example', 'server.js')], {
    env: { PATH: process.env.PATH, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  t.teardown(() => { child.kill('SIGKILL') })
  const deadline = Date.now() + 10_000
  while (!output.includes('demo items API') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  t.match(output, /in-process memory \(set REDIS_URL to use Redis\)/)
  const res = await fetch(`http://127.0.0.1:${port}/items`)
  t.equal(res.status, 200)
  t.equal(res.headers.get('x-cache'), 'MISS')
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'SIGTERM closes the app and exits cleanly')
})

t.test('npm start: a bad PORT fails with a message and a non-zero exit', async (t) => {
  const child = spawn(process.execPath, [join(__dirname, '..', 'dist', 'example', 'server.js')], {
    env: { PATH: process.env.PATH, PORT: 'not-a-port' },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let errors = ''
  child.stderr.on('data', (chunk: Buffer) => { errors += chunk.toString() })
  const [code] = await once(child, 'exit')
  t.equal(code, 1)
  t.match(errors, /port/i)
})
