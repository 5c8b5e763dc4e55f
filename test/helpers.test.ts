import t from 'tap'
import Redis from 'ioredis'
import { startRedis, startCluster, freePort, type RedisServer, type RedisCluster } from './helpers/redis-server'
import { browserTestOptions } from './helpers/browser'

const started: Array<RedisServer | RedisCluster> = []
t.teardown(async () => {
  await Promise.all(started.map(async s => await s.stop()))
})

async function track<T extends RedisServer | RedisCluster> (p: Promise<T>): Promise<T> {
  const s = await p
  started.push(s)
  return s
}

t.test('freePort gives a usable port, never 6379', async t => {
  const port = await freePort()
  t.ok(Number.isInteger(port) && port > 1024 && port < 55000, `port ${port} in range`)
  t.not(port, 6379)
  t.not(await freePort(), port, 'never hands out the same port twice')
})

t.test('standalone server: ping, set/get via ioredis, stop', async t => {
  const server = await track(startRedis())
  t.equal(server.host, '127.0.0.1')
  t.not(server.port, 6379)
  t.equal(server.url, `redis://127.0.0.1:${server.port}`)
  t.type(server.pid, 'number')
  t.equal(await server.cli('ping'), 'PONG')
  t.equal(await server.cli('config', 'get', 'save'), 'save', 'persistence disabled (save is empty)')

  const client = new Redis(server.url)
  t.teardown(() => client.disconnect())
  t.equal(await client.set('k', 'v'), 'OK')
  t.equal(await client.get('k'), 'v')
  t.equal(await server.cli('get', 'k'), 'v')
  await client.quit()

  await server.stop()
  t.equal(server.pid, undefined, 'no pid once stopped')
  await server.stop() // idempotent
  await t.rejects(server.cli('ping'), 'nothing answers after stop')
})

t.test('extra args are passed to redis-server', async t => {
  const server = await track(startRedis({ args: ['--maxmemory', '1mb'] }))
  t.equal(await server.cli('config', 'get', 'maxmemory'), 'maxmemory\n1048576')
  await server.stop()
})

t.test('password server rejects unauthenticated clients', async t => {
  const server = await track(startRedis({ password: 's3cr3t p@ss' }))
  t.equal(server.url, `redis://:${encodeURIComponent('s3cr3t p@ss')}@127.0.0.1:${server.port}`)
  t.equal(await server.cli('ping'), 'PONG', 'cli authenticates')

  const anon = new Redis({ host: server.host, port: server.port, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null })
  t.teardown(() => anon.disconnect())
  anon.on('error', () => {}) // the connection-level NOAUTH (HELLO) is emitted too
  await t.rejects(anon.ping(), /NOAUTH/)
  anon.disconnect()

  const authed = new Redis(server.url)
  t.teardown(() => authed.disconnect())
  t.equal(await authed.set('pk', '1'), 'OK')
  t.equal(await authed.get('pk'), '1')
  await authed.quit()
  await server.stop()
})

t.test('kill() then restart() answers on the same port; ioredis reconnects', async t => {
  const server = await track(startRedis())
  const { port } = server
  const pid1 = server.pid
  const client = new Redis(server.url, { maxRetriesPerRequest: null })
  t.teardown(() => client.disconnect())
  client.on('error', () => {}) // ECONNREFUSED while down
  t.equal(await client.ping(), 'PONG')

  await server.kill()
  t.equal(server.pid, undefined)
  await t.rejects(server.cli('ping'), 'down after kill')

  await server.restart()
  t.equal(server.port, port, 'same port')
  t.type(server.pid, 'number')
  t.not(server.pid, pid1, 'new process')
  t.equal(await server.cli('ping'), 'PONG')
  t.equal(await client.ping(), 'PONG', 'ioredis reconnected to the restarted server')
  await client.quit()

  // stop() + restart() works too
  await server.stop()
  await server.restart()
  t.equal(await server.cli('ping'), 'PONG')
  await server.stop()
})

t.test('pause() hangs the server, resume() brings it back', async t => {
  const server = await track(startRedis())
  const client = new Redis(server.url, { commandTimeout: 300 })
  t.teardown(() => client.disconnect())
  t.equal(await client.ping(), 'PONG')

  server.pause()
  await t.rejects(client.ping(), /timed out/i, 'PING times out while paused')
  server.resume()
  t.equal(await client.ping(), 'PONG', 'answers again after resume')
  await client.quit()

  server.pause()
  await server.stop() // a paused server can still be stopped promptly
  t.equal(server.pid, undefined)
})

t.test('cluster: 3 masters, ioredis Cluster set/get across slots', async t => {
  const cluster = await track(startCluster())
  t.equal(cluster.nodes.length, 3)
  t.same(cluster.startupNodes, cluster.nodes.map(n => ({ host: '127.0.0.1', port: n.port })))
  for (const node of cluster.nodes) {
    t.match(await node.cli('cluster', 'info'), /cluster_state:ok/)
    t.equal(await node.cli('role').then(r => r.split('\n')[0]), 'master')
  }

  const keys = ['{a}x', '{b}y', '{c}z']
  const slots = await Promise.all(keys.map(async k => await cluster.nodes[0]!.cli('cluster', 'keyslot', k)))
  t.equal(new Set(slots).size, 3, `keys hash to different slots (${slots.join(', ')})`)

  const client = new Redis.Cluster(cluster.startupNodes)
  t.teardown(() => client.disconnect())
  for (const k of keys) t.equal(await client.set(k, `v-${k}`), 'OK')
  for (const k of keys) t.equal(await client.get(k), `v-${k}`)

  // keys really are spread over more than one node
  const owners = await Promise.all(cluster.nodes.map(async n => Number(await n.cli('dbsize'))))
  t.equal(owners.reduce((a, b) => a + b, 0), 3)
  t.ok(owners.filter(c => c > 0).length >= 2, `keys on several nodes (${owners.join(', ')})`)
  await client.quit()

  await cluster.stop()
  await cluster.stop() // idempotent
  t.ok(cluster.nodes.every(n => n.pid === undefined), 'all nodes stopped')
})

t.test('browser tests: skipped with a notice without Chromium, except in CI', async t => {
  t.same(browserTestOptions(process.execPath, {}), {}, 'an executable is there: run')
  const missing = browserTestOptions('/nonexistent/chromium', {})
  t.match(missing.skip, /no Chromium at \/nonexistent\/chromium: install Debian's chromium/, 'missing: skipped, saying how to get it')
  t.same(browserTestOptions('/nonexistent/chromium', { CI: 'true' }), {}, 'missing in CI: run, and fail')
})
