'use strict'
// The load: keep-alive connections looping over the items (GET), and a few mutation loops
// (POST) interleaved with them. Every answer is recorded with its times (performance.now(), the
// same clock as the app's, which runs in this process), its status, X-Cache and the version of
// the item it carried.
const http = require('node:http')
const { HOST, sleep } = require('./redis')
const { MUTATIONS } = require('./app')

const REQUEST_TIMEOUT_MS = 5000
// Consecutive item numbers a mutation loop visits are this far apart (a prime: every item comes up).
const STRIDE = 7919

function request (agent, port, method, path) {
  return new Promise((resolve) => {
    const start = performance.now()
    const failed = () => resolve({ start, end: performance.now(), status: 0, cache: null, version: null })
    const req = http.request({ host: HOST, port, method, path, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks = []
      res.on('data', (chunk) => chunks.push(chunk))
      res.on('error', failed)
      res.on('end', () => {
        let version = null
        if (res.statusCode >= 200 && res.statusCode < 300) {
          try { version = JSON.parse(Buffer.concat(chunks).toString()).version ?? null } catch {}
        }
        resolve({ start, end: performance.now(), status: res.statusCode, cache: res.headers['x-cache'] ?? null, version })
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', failed)
    req.end()
  })
}

/**
 * Starts the load. `plan`: readPorts (connections are spread over them), mutatePorts, items,
 * connections, mutators (mutation loops), pause (ms between a loop's mutations), modes (keys of
 * MUTATIONS, taken in turn), burst and burstGap (mutations of one item in a row, ms apart).
 */
function startLoad (plan) {
  const readAgents = plan.readPorts.map(() => new http.Agent({ keepAlive: true, maxSockets: plan.connections }))
  const mutateAgent = new http.Agent({ keepAlive: true, maxSockets: plan.mutators })
  const reads = []
  const mutations = []
  const flag = { running: true }
  // The connections take the items in turn together: each item is read once per pass.
  let next = 0
  const readers = Array.from({ length: plan.connections }, async (_, w) => {
    const instance = w % plan.readPorts.length
    while (flag.running) {
      const item = String(next++ % plan.items)
      const sample = await request(readAgents[instance], plan.readPorts[instance], 'GET', `/items/${item}`)
      reads.push({ ...sample, item, instance })
    }
  })
  const mutators = Array.from({ length: plan.mutators }, async (_, w) => {
    let k = w
    await sleep(plan.pause * w / plan.mutators)
    while (flag.running) {
      const item = String((k * STRIDE) % plan.items)
      const mode = plan.modes[k % plan.modes.length]
      const instance = k % plan.mutatePorts.length
      k += plan.mutators
      for (let b = 0; b < plan.burst && flag.running; b++) {
        if (b > 0) await sleep(plan.burstGap)
        const sample = await request(mutateAgent, plan.mutatePorts[instance], 'POST', `/items/${item}${MUTATIONS[mode]}`)
        mutations.push({ ...sample, item, instance: plan.mutateInstances[instance], mode })
      }
      await sleep(plan.pause)
    }
  })
  return {
    reads,
    mutations,
    async stop () {
      flag.running = false
      await Promise.all([...readers, ...mutators])
      for (const agent of [...readAgents, mutateAgent]) agent.destroy()
    }
  }
}

/** Sends `count` requests to /limited one after another; returns how many were refused (429). */
async function probeRateLimit (port, count) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  let refused = 0
  for (let i = 0; i < count; i++) {
    const { status } = await request(agent, port, 'GET', '/limited')
    if (status === 429) refused++
  }
  agent.destroy()
  return refused
}

function percentile (values, p) {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * p) - 1)]
}

module.exports = { startLoad, probeRateLimit, percentile }
