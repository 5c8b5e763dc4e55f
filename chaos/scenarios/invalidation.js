'use strict'
// Invalidation without an outage: the cache-aside race (group 2), tags under memory pressure
// (group 3), and a Redis that refuses scripting (group 6).
const { HOST, sleep, infoField } = require('../redis')
const { ALL_MODES } = require('./common')

const TAG_MODES = ['tags', 'invalidate']
const ACL_USER = 'cache'
const ACL_PASSWORD = 'chaos-not-a-secret'

function memoryPressure (opts, policy, letter) {
  return {
    name: `3${letter}. tags under memory pressure (maxmemory ${opts.maxmemory}, ${policy})`,
    redisUp: true,
    items: opts.manyItems,
    modes: TAG_MODES,
    redisConfig: ['--maxmemory', opts.maxmemory, '--maxmemory-policy', policy],
    async fault () { await sleep(opts.hangMs) },
    async after ({ redis }) {
      const admin = redis.admin()
      const evicted = await infoField(admin, 'stats', 'evicted_keys')
      const used = await infoField(admin, 'memory', 'used_memory_human')
      return [`Redis evicted ${evicted} keys (used memory at the end: ${used})`]
    }
  }
}

module.exports = (opts) => [
  {
    name: '2a. cache-aside race: route cache, 50 ms handler, mutations during it',
    redisUp: true,
    modes: ALL_MODES,
    app: { handlerDelay: 50 },
    burst: 2,
    burstGap: 20,
    async fault () { await sleep(opts.hangMs) }
  },
  {
    name: '2b. cache-aside race: getOrSet, 50 ms callback, mutations during it',
    redisUp: true,
    modes: ALL_MODES,
    app: { handlerDelay: 50, reads: 'getOrSet' },
    burst: 2,
    burstGap: 20,
    async fault () { await sleep(opts.hangMs) }
  },
  memoryPressure(opts, 'allkeys-lru', 'a'),
  memoryPressure(opts, 'volatile-lru', 'b'),
  {
    name: '6. locked-down Redis: ACL user without @scripting',
    redisUp: true,
    modes: ALL_MODES,
    checkRateLimit: true,
    redisConfig: ['--user', ACL_USER, 'on', `>${ACL_PASSWORD}`, '~*', '&*', '+@all', '-@scripting'],
    appUrl: (redis) => `redis://${ACL_USER}:${ACL_PASSWORD}@${HOST}:${redis.port}`,
    async fault () { await sleep(opts.hangMs) }
  }
]
