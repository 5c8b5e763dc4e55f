'use strict'
// What most scenarios start from: one throwaway redis-server (with the scenario's extra
// configuration) and the scenario's instances of the app on it, sharing one database.
const { createDatabase, startApp, closeApp } = require('../app')
const { startRedis } = require('../redis')

/** Every way of invalidating, taken in turn by the mutation loops. */
const ALL_MODES = ['keys', 'tags', 'delete', 'invalidate']

async function startApps (urls, db, appOptions) {
  const apps = []
  for (const url of urls) apps.push(await startApp(url, db, appOptions))
  return apps
}

/** The environment of a scenario without a setup of its own. */
async function standardSetup (scenario) {
  const redis = await startRedis(scenario.redisConfig ?? [])
  const db = createDatabase()
  const url = scenario.appUrl === undefined ? redis.url : scenario.appUrl(redis)
  const apps = await startApps(Array.from({ length: scenario.instances ?? 1 }, () => url), db, scenario.app)
  return {
    redis,
    db,
    apps,
    // Mutations are sent to these instances (by index); reads go to all of them.
    mutateOn: [0],
    async cleanup () {
      for (const app of apps) await closeApp(app)
      await redis.stop()
    }
  }
}

module.exports = { ALL_MODES, startApps, standardSetup }
