'use strict'
// Redis gone or hanging under load, with mutations interleaved: the original fault scenarios
// (a fault of `--fault` seconds) and the invalidation ones (group 1, a hang of `--hang` seconds).
const { sleep } = require('../redis')
const { ALL_MODES } = require('./common')

module.exports = (opts) => [
  {
    name: 'no fault (baseline)',
    modes: ALL_MODES,
    checkRateLimit: true,
    async fault () { await sleep(opts.faultMs) }
  },
  {
    name: 'Redis killed (SIGKILL), restarted empty after the fault',
    modes: ALL_MODES,
    async fault ({ redis }) {
      await redis.kill()
      await sleep(opts.faultMs)
      await redis.start()
    }
  },
  {
    name: 'Redis hung (SIGSTOP), resumed (SIGCONT) after the fault',
    hang: true,
    modes: ALL_MODES,
    async fault ({ redis }) {
      redis.pause()
      await sleep(opts.faultMs)
      redis.resume()
    }
  },
  {
    name: 'Redis restarted empty (SIGTERM, start at once)',
    modes: ALL_MODES,
    async fault ({ redis }) { await redis.restart() }
  },
  {
    name: '1a. invalidations while Redis hangs: SIGSTOP, SIGCONT',
    hang: true,
    modes: ALL_MODES,
    async fault ({ redis }) {
      redis.pause()
      await sleep(opts.hangMs)
      redis.resume()
    }
  },
  {
    name: '1b. invalidations while Redis hangs: DEBUG SLEEP',
    hang: true,
    modes: ALL_MODES,
    redisConfig: ['--enable-debug-command', 'yes'],
    async fault ({ redis }) {
      const admin = redis.admin()
      await admin.ping()
      await admin.call('DEBUG', 'SLEEP', String(opts.hangMs / 1000))
    }
  },
  {
    name: '1c. invalidations while Redis refuses writes: CLIENT PAUSE WRITE',
    hang: true,
    modes: ALL_MODES,
    async fault ({ redis }) {
      const admin = redis.admin()
      await admin.call('CLIENT', 'PAUSE', String(opts.hangMs), 'WRITE')
      await sleep(opts.hangMs)
    }
  },
  {
    name: '1d. invalidations while Redis restarts (appendonly yes, SIGKILL, same port)',
    modes: ALL_MODES,
    redisConfig: ['--appendonly', 'yes', '--appendfsync', 'everysec'],
    async fault ({ redis }) {
      await redis.kill()
      await sleep(opts.hangMs)
      await redis.start()
    }
  }
]
