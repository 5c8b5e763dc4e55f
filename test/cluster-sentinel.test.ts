// Sentinel through ioredis's options (`redis: { sentinels, name }`): a real master, a replica
// and a redis-server in sentinel mode. The cache works through Sentinel, and a failover
// (SENTINEL FAILOVER: the replica is promoted, the old master demoted) under load loses no
// request: writes come back on the new master, hits resume.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { captureLogs, sleep, uniquePrefix, until } from './helpers/app'
import { freePort, startRedis, type RedisServer } from './helpers/redis-server'

const HOST = '127.0.0.1'
const NAME = 'cachemaster'

function cli (port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: 5000 }, (err, stdout) => resolve(err === null ? stdout.trim() : ''))
  })
}

interface Sentinel {
  port: number
  stop: () => void
}

async function startSentinel (t: tap.Test, master: RedisServer): Promise<Sentinel> {
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'redis-sentinel-'))
  const conf = join(dir, 'sentinel.conf')
  writeFileSync(conf, [
    `port ${port}`,
    `bind ${HOST}`,
    `dir ${dir}`,
    `sentinel monitor ${NAME} ${HOST} ${master.port} 1`,
    `sentinel down-after-milliseconds ${NAME} 2000`,
    `sentinel failover-timeout ${NAME} 10000`,
    ''
  ].join('\n'))
  const child: ChildProcess = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' })
  const kill = (): void => { child.kill('SIGKILL') }
  process.once('exit', kill)
  const stop = (): void => {
    kill()
    process.off('exit', kill)
    rmSync(dir, { recursive: true, force: true })
  }
  t.teardown(stop)
  await until(async () => (await cli(port, 'sentinel', 'get-master-addr-by-name', NAME)).endsWith(String(master.port)), 30_000, 'the sentinel')
  return { port, stop }
}

interface Setup {
  master: RedisServer
  replica: RedisServer
  sentinel: Sentinel
}

async function setup (t: tap.Test): Promise<Setup> {
  // Replication starts at once (the default waits 5 s for more replicas to share a sync).
  const fast = ['--repl-diskless-sync-delay', '0']
  const master = await startRedis({ args: fast })
  t.teardown(() => master.stop())
  const replica = await startRedis({ args: [...fast, '--replicaof', HOST, String(master.port)] })
  t.teardown(() => replica.stop())
  await until(async () => (await replica.cli('info', 'replication')).includes('master_link_status:up'), 30_000, 'the replica to sync')
  const sentinel = await startSentinel(t, master)
  await until(async () => (await cli(sentinel.port, 'sentinel', 'replicas', NAME)).includes(String(replica.port)), 30_000, 'the sentinel to know the replica')
  return { master, replica, sentinel }
}

async function app (t: tap.Test, sentinelPort: number): Promise<{ app: FastifyInstance, cache: CacheManager, runs: () => number }> {
  const logs = captureLogs()
  const instance = Fastify({ logger: { level: 'warn', stream: logs.stream } })
  t.teardown(async () => {
    await instance.close()
    // ioredis leaves the failover detector's Sentinel subscriptions open after QUIT (only
    // disconnect() cleans them up): without this they keep reconnecting and the process alive.
    instance.redis.cache.disconnect()
  })
  await instance.register(fastifyRedisCache, {
    // The plugin turns on ioredis's failoverDetector for Sentinel: the client follows
    // +switch-master at once; without it, it stays on the demoted master until Sentinel
    // reconfigures that one (about 10 s here).
    redis: { sentinels: [{ host: HOST, port: sentinelPort }], name: NAME },
    prefix: uniquePrefix('sentinel'),
    routes: false,
    commandTimeout: 300,
    circuitBreaker: { failureThreshold: 3, resetTimeout: 300 }
  })
  let runs = 0
  instance.get('/item', { config: { cache: { ttl: 60 } } }, async () => { runs++; return { item: true } })
  await instance.ready()
  return { app: instance, cache: instance.cache as CacheManager, runs: () => runs }
}

t.test('the cache through Sentinel, and a failover under load', async (t) => {
  const { master, replica, sentinel } = await setup(t)
  const { app: instance, cache } = await app(t, sentinel.port)
  t.equal(await cache.set('k', 'v'), true)
  t.equal(await cache.get('k'), 'v')
  t.equal(await master.cli('exists', cache.redisKey('k')), '1', 'written to the master Sentinel named')
  t.equal((await instance.inject('/item')).headers['x-cache'], 'MISS')
  await until(async () => (await instance.inject('/item')).headers['x-cache'] === 'HIT', 30_000, 'a hit')
  t.match(await cache.info(), { store: 'redis', redisVersion: /^\d/ })

  // Load while Sentinel promotes the replica and demotes the master.
  const results: Array<{ status: number, cache: string | undefined, at: number }> = []
  const flag = { running: true }
  const workers = Array.from({ length: 4 }, async () => {
    while (flag.running) {
      const res = await instance.inject('/item')
      results.push({ status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, at: Date.now() })
      await sleep(5)
    }
  })
  t.equal(await cli(sentinel.port, 'sentinel', 'failover', NAME), 'OK')
  await until(async () => (await cli(sentinel.port, 'sentinel', 'get-master-addr-by-name', NAME)).endsWith(String(replica.port)), 30_000, 'the promotion')
  const switchedAt = Date.now()
  await until(async () => (await replica.cli('role')).startsWith('master'), 30_000, 'the replica to be master')
  // Writes land on the new master once the client has followed Sentinel.
  await until(async () => (await cache.set('after', 'failover')) && (await replica.cli('exists', cache.redisKey('after'))) === '1', 30_000, 'writes on the new master')
  await cache.delete('/item')
  const deletedAt = Date.now()
  await until(() => results.some((r) => r.at > deletedAt && r.cache === 'HIT'), 30_000, 'hits on the new master')
  const recovered = Date.now() - switchedAt
  flag.running = false
  await Promise.all(workers)

  t.equal(results.filter((r) => r.status !== 200).length, 0, `no failed request out of ${results.length}`)
  t.comment(`hits again ${recovered} ms after the switch`)
  t.equal(await cache.get('after'), 'failover')
  t.equal(cache.getStatistics().circuit, 'closed')
})
