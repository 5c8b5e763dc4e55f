// Child processes of the workload runs and what is read about them: every process started here
// is tracked and killed on exit; CPU time and RSS come from /proc, Redis's command counts from
// INFO commandstats of the runner's own throwaway redis-server (never the one on 6379).
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import { fileURLToPath } from 'node:url'

const rootRequire = createRequire(new URL('../../package.json', import.meta.url))
export const Redis = rootRequire('ioredis').default ?? rootRequire('ioredis')
const here = fileURLToPath(new URL('.', import.meta.url))

export const SERVER_CPU = 0
export const RUNNER_CPU = 1
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
  } catch {
    return 100
  }
})()

const children = new Set()
let stopping = false
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

export function track (child, name) {
  children.add(child)
  child.tail = []
  const keep = (stream) => {
    stream?.setEncoding('utf8')
    stream?.on('data', (text) => {
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue
        child.tail.push(line)
        if (child.tail.length > 30) child.tail.shift()
        if (process.env.BENCH_VERBOSE) process.stderr.write(`[${name}] ${line}\n`)
      }
    })
  }
  keep(child.stdout)
  keep(child.stderr)
  child.once('exit', (code, signal) => {
    children.delete(child)
    child.exited = { code, signal }
    if (!stopping && !child.expectExit) process.stderr.write(`\n[${name}] exited unexpectedly (code ${code}, signal ${signal})\n${child.tail.join('\n')}\n`)
  })
  return child
}

export function killAllNow () {
  stopping = true
  for (const child of children) {
    try { child.kill('SIGKILL') } catch {}
  }
}
process.on('exit', killAllNow)

export async function stopChild (child, { message, signal = 'SIGTERM', timeoutMs = 5000 } = {}) {
  if (!child || child.exited) return
  child.expectExit = true
  const exited = once(child, 'exit')
  try {
    if (message && child.connected) child.send(message)
    else child.kill(signal)
  } catch {
    child.kill(signal)
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  await exited
  clearTimeout(timer)
}

export async function freePort () {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  await once(server, 'close')
  if (port === 6379) return freePort()
  return port
}

/** `taskset -c <cpu>` before a command when pinning, else the command itself. */
export function pinned (cpu, command, args, pin) {
  return pin ? ['taskset', ['-c', String(cpu), command, ...args]] : [command, args]
}

export function pinPid (pid, cpu) {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' })
}

export async function startRedis (pin) {
  const port = await freePort()
  const bin = process.env.REDIS_SERVER || 'redis-server'
  const [cmd, args] = pinned(RUNNER_CPU, bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], pin)
  const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }), 'redis-server')
  const url = `redis://127.0.0.1:${port}`
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 100 })
  client.on('error', () => {})
  const deadline = Date.now() + 10_000
  while (true) {
    try {
      await client.connect()
      break
    } catch (err) {
      if (child.exited || Date.now() > deadline) throw new Error(`redis-server did not start: ${err.message}\n${child.tail.join('\n')}`)
      client.disconnect()
      await sleep(100)
    }
  }
  const version = /redis_version:(\S+)/.exec(await client.info('server'))?.[1] ?? 'unknown'
  return { child, port, url, client, version }
}

/** Total calls of every Redis command but INFO (the reading itself) so far. */
export async function redisCalls (redis) {
  if (!redis) return 0
  const text = await redis.client.info('commandstats')
  let calls = 0
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    if (match[1] !== 'info') calls += Number(match[2])
  }
  return calls
}

/**
 * Starts `node workloads/server.js <variant>` and waits for it to listen. BENCH_SERVER_FLAGS adds
 * node flags to every server (to profile one: `--cpu-prof --cpu-prof-dir=...`).
 */
export async function startServer (variant, redisUrl, pin) {
  const port = await freePort()
  const flags = (process.env.BENCH_SERVER_FLAGS ?? '').split(' ').filter(Boolean)
  const [cmd, args] = pinned(SERVER_CPU, process.execPath, [...flags, 'server.js', variant, String(port), redisUrl ?? 'none'], pin)
  const child = track(spawn(cmd, args, { cwd: here, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }), variant)
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${variant}: not ready within 30 s:\n${child.tail.join('\n')}`)), 30_000)
    child.on('message', (msg) => { if (msg?.ready) { clearTimeout(timer); resolve() } })
    child.once('exit', (code) => {
      clearTimeout(timer)
      setTimeout(() => reject(new Error(`${variant}: exited with code ${code} before it was ready:\n${child.tail.join('\n')}`)), 50)
    })
  })
  return { variant, port, child, pids: () => [child.pid] }
}

/** The server's own counters, asked over IPC (database reads and writes, collections). */
export function serverStats (child) {
  if (!child?.connected) return Promise.resolve(null)
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.off('message', onMessage); resolve(null) }, 5000)
    function onMessage (msg) {
      if (!msg?.stats) return
      clearTimeout(timer)
      child.off('message', onMessage)
      resolve(msg.stats)
    }
    child.on('message', onMessage)
    child.send({ type: 'stats' })
  })
}

/** User + system CPU seconds of processes (all their threads), from /proc/<pid>/stat. */
export function cpuSeconds (pids) {
  let ticks = 0
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks / CLOCK_TICKS
}

/** Resident memory of processes in bytes, from /proc/<pid>/status. */
export function rssBytes (pids) {
  let kb = 0
  for (const pid of pids) {
    try {
      kb += Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
    } catch {}
  }
  return kb * 1024
}

/** Children of a process (nginx's workers), from /proc. */
export function childPids (pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

/** Busy and total jiffies of each CPU, from /proc/stat, to tell how busy a core was. */
export function cpuTimes () {
  const cpus = {}
  try {
    for (const line of readFileSync('/proc/stat', 'utf8').split('\n')) {
      const match = /^cpu(\d+) (.*)$/.exec(line)
      if (!match) continue
      const values = match[2].trim().split(/\s+/).map(Number)
      const idle = values[3] + (values[4] ?? 0)
      const total = values.slice(0, 8).reduce((a, b) => a + b, 0)
      cpus[match[1]] = { busy: total - idle, total }
    }
  } catch {}
  return cpus
}

export function busyShare (before, after, cpu) {
  const a = before[cpu]
  const b = after[cpu]
  if (!a || !b || b.total === a.total) return null
  return (b.busy - a.busy) / (b.total - a.total)
}
