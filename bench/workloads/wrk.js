// wrk as the load generator of W1 and W3: one thread (pinned to the runner's core when pinning),
// paths drawn per request by paths.lua, results read from the JSON line that script prints.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { cpuSeconds, pinned, RUNNER_CPU, track } from './procs.js'

const script = fileURLToPath(new URL('paths.lua', import.meta.url))

/**
 * Runs wrk against `port` for `seconds`; `paths` is ['zipf', items, seed] or
 * ['distinct', base, seed]. Returns req/s, latencies in ms, errors, and wrk's own CPU share.
 */
export async function runWrk ({ port, seconds, connections = 50, paths, pin }) {
  const bin = process.env.WRK || 'wrk'
  const args = ['-t1', `-c${connections}`, `-d${Math.max(1, Math.round(seconds))}s`, '--timeout', '10s', '-s', script, `http://127.0.0.1:${port}`, '--', ...paths.map(String)]
  const [cmd, cmdArgs] = pinned(RUNNER_CPU, bin, args, pin)
  const child = track(spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] }), 'wrk')
  child.expectExit = true
  let out = ''
  child.stdout.on('data', (text) => { out += text })
  let cpu = 0
  // wrk's CPU time, read just before it exits (its /proc entry goes with it).
  const sampler = setInterval(() => { cpu = cpuSeconds([child.pid]) || cpu }, 100)
  const [code] = await once(child, 'exit')
  clearInterval(sampler)
  const line = out.split('\n').find((l) => l.startsWith('{"requests"'))
  if (code !== 0 || !line) throw new Error(`wrk exited with code ${code}:\n${out}\n${child.tail.join('\n')}`)
  const r = JSON.parse(line)
  const elapsed = r.duration / 1e6
  return {
    requests: r.requests,
    seconds: elapsed,
    reqPerSec: r.requests / elapsed,
    p50: r.p50 / 1000,
    p99: r.p99 / 1000,
    errors: r.connect + r.read + r.write + r.timeout,
    non2xx: r.status,
    loadCpu: cpu / elapsed
  }
}
