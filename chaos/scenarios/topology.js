'use strict'
// More than one server or instance: a failover behind one endpoint (group 4), and two instances
// with the local tier (group 5).
const { closeApp, createDatabase } = require('../app')
const { startProxy } = require('../proxy')
const { HOST, sleep, startRedis, infoField } = require('../redis')
const { ALL_MODES, startApps } = require('./common')

const LOCAL = { maxEntries: 10000 }

async function waitFor (what, check, ms = 5000) {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** Primary A, replica B, the app on a proxy in front of A. */
async function failoverSetup (scenario) {
  // No 5 s wait before the first full sync.
  const redis = await startRedis(['--repl-diskless-sync-delay', '0'])
  const replica = await startRedis(['--replicaof', HOST, String(redis.port)])
  const replicaAdmin = replica.admin()
  await waitFor('the replica to sync', async () => (await infoField(replicaAdmin, 'replication', 'master_link_status')) === 'up')
  const proxy = await startProxy(redis.port)
  const db = createDatabase()
  const apps = await startApps([proxy.url], db, scenario.app)
  return {
    redis,
    replica,
    proxy,
    db,
    apps,
    mutateOn: [0],
    async cleanup () {
      for (const app of apps) await closeApp(app)
      await proxy.close()
      await replica.stop()
      await redis.stop()
    }
  }
}

/** One Redis; instance 0 on it directly, instance 1 through a proxy; mutations on instance 0. */
async function frozenSetup (scenario) {
  const redis = await startRedis()
  const proxy = await startProxy(redis.port)
  const db = createDatabase()
  const apps = await startApps([redis.url, proxy.url], db, scenario.app)
  await waitFor('the subscriber of instance 1', () => [...proxy.pairs].some((pair) => pair.subscriber))
  return {
    redis,
    proxy,
    db,
    apps,
    mutateOn: [0],
    async cleanup () {
      for (const app of apps) await closeApp(app)
      await proxy.close()
      await redis.stop()
    }
  }
}

module.exports = (opts) => [
  {
    name: '4. failover behind one endpoint: promote B, demote A, proxy switched',
    modes: ALL_MODES,
    setup: failoverSetup,
    async fault ({ redis, replica, proxy }) {
      const a = redis.admin()
      const b = replica.admin()
      await b.call('REPLICAOF', 'NO', 'ONE')
      await sleep(opts.hangMs / 4)
      await a.call('REPLICAOF', HOST, String(replica.port))
      await sleep(opts.hangMs / 4)
      await proxy.switchTo(replica.port)
    }
  },
  {
    name: '5a. two instances, local tier: Redis hung (SIGSTOP), mutations on one',
    hang: true,
    instances: 2,
    app: { local: LOCAL },
    modes: ALL_MODES,
    async fault ({ redis }) {
      redis.pause()
      await sleep(opts.hangMs)
      redis.resume()
    }
  },
  {
    name: "5b. two instances, local tier: second instance's subscriber frozen",
    redisUp: true,
    instances: 2,
    app: { local: LOCAL },
    modes: ALL_MODES,
    setup: frozenSetup,
    async fault ({ proxy }) {
      const frozen = proxy.freeze((pair) => pair.subscriber)
      if (frozen !== 1) throw new Error(`expected to freeze one subscriber connection, froze ${frozen}`)
      await sleep(opts.hangMs)
    }
  }
]
