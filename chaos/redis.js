'use strict'
// Throwaway redis-server processes on free ports (never 6379), and an admin connection to them.
const { spawn } = require('node:child_process')
const { mkdtempSync, rmSync } = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const { join } = require('node:path')
const Redis = require('ioredis')

const HOST = '127.0.0.1'
// Every process started, so that none outlives the run whatever fails.
const running = new Set()
/** Commands slower than this (microseconds) count as slow: 100 ms. */
const SLOW_US = 100_000
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen({ port: 0, host: HOST }, () => {
      const { port } = srv.address()
      srv.close(() => port === 6379 ? resolve(freePort()) : resolve(port))
    })
  })
}

/** True when something on `port` answers PING (with +PONG or an auth error: it is up). */
function ping (port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: HOST })
    const done = (ok) => { clearTimeout(timer); socket.destroy(); resolve(ok) }
    const timer = setTimeout(done, 300, false)
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('*1\r\n$4\r\nPING\r\n'))
    socket.on('data', (chunk) => done(/^(\+PONG|-NOAUTH)/.test(chunk.toString())))
  })
}

class RedisProcess {
  /** `config`: extra redis-server arguments, e.g. ['--maxmemory', '2mb']. */
  constructor (port, config = []) {
    if (port === 6379) throw new Error('refusing to run a throwaway redis-server on 6379')
    this.port = port
    this.config = config
    this.dir = mkdtempSync(join(os.tmpdir(), 'chaos-redis-'))
    this.child = null
    this.admins = []
    running.add(this)
  }

  get url () { return `redis://${HOST}:${this.port}` }

  async start () {
    // Every command over SLOW_US is kept in the slowlog, for the report's "slow commands".
    const slowlog = ['--slowlog-log-slower-than', String(SLOW_US), '--slowlog-max-len', '1024']
    const args = ['--port', String(this.port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', this.dir, ...slowlog, ...this.config]
    const child = spawn('redis-server', args, { stdio: 'ignore' })
    this.child = child
    this.exited = new Promise((resolve) => child.once('exit', resolve))
    const deadline = Date.now() + 5000
    while (!(await ping(this.port))) {
      if (Date.now() > deadline) throw new Error(`redis-server on port ${this.port} did not start`)
      await sleep(20)
    }
  }

  async kill (signal = 'SIGKILL') {
    if (this.child === null) return
    this.child.kill('SIGCONT')
    this.child.kill(signal)
    await this.exited
    this.child = null
  }

  pause () { this.child.kill('SIGSTOP') }
  resume () { this.child.kill('SIGCONT') }

  async restart () {
    await this.kill('SIGTERM')
    await this.start()
  }

  /** A connection for the scenario itself (default user), closed with the process. */
  admin () {
    const client = new Redis({ host: HOST, port: this.port, lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => 200 })
    client.on('error', () => {})
    this.admins.push(client)
    return client
  }

  async stop () {
    running.delete(this)
    for (const client of this.admins) client.disconnect()
    await this.kill('SIGKILL')
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/**
 * The commands over SLOW_US that the running servers logged, but the scenario's own DEBUG SLEEP:
 * how many, and the slowest. A server restarted during the scenario forgot what it logged before.
 */
async function slowCommands () {
  let count = 0
  let slowest = null
  for (const redis of running) {
    if (redis.child === null) continue
    const entries = await redis.admin().call('SLOWLOG', 'GET', '1024').catch(() => [])
    for (const [, , micros, [command, ...rest]] of entries) {
      if (String(command).toUpperCase() === 'DEBUG') continue
      count++
      if (slowest === null || micros > slowest.micros) slowest = { micros, command: [command, ...rest.slice(0, 2)].join(' ') }
    }
  }
  return { count, slowest }
}

/** Stops whatever a scenario left running (its setup failed half-way, say). */
async function stopAll () {
  for (const redis of [...running]) await redis.stop()
}

async function startRedis (config = []) {
  const redis = new RedisProcess(await freePort(), config)
  await redis.start()
  return redis
}

/** A field of INFO, as a number when it is one. */
async function infoField (client, section, field) {
  const text = await client.info(section)
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(text)
  if (match === null) return null
  const value = match[1].trim()
  return Number.isNaN(Number(value)) ? value : Number(value)
}

function redisVersion () {
  return new Promise((resolve) => {
    const child = spawn('redis-server', ['--version'])
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.on('close', () => resolve((/v=(\S+)/.exec(out) ?? [])[1] ?? 'unknown'))
  })
}

module.exports = { HOST, sleep, freePort, ping, RedisProcess, startRedis, stopAll, infoField, redisVersion, slowCommands }
