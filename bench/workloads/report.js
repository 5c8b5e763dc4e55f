// Tables of the workloads, their targets (informational for now), the load generator check, and
// the sections they get in results.md (each between markers, replaced on the next --write).
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { measure, staleChecker } from './loads.js'
import { startServer, stopChild } from './procs.js'

const TARGETS = {
  w1: [
    { label: 'ours-redis / handwritten', num: 'ours-redis', den: 'handwritten', min: 1.2 },
    { label: 'ours-local / handwritten', num: 'ours-local', den: 'handwritten', min: 1.5 },
    { label: 'ours-memory / handwritten', num: 'ours-memory', den: 'handwritten', min: 1.5 },
    { label: 'ours-local / nginx', num: 'ours-local', den: 'nginx', min: 0.5 },
    ...['ours-redis', 'ours-local', 'ours-memory'].map((name) => ({ label: `p99 of ${name} <= handwritten's`, p99: name, den: 'handwritten' }))
  ],
  w2: [
    ...['ours-redis', 'ours-local', 'ours-memory'].map((name) => ({ label: `${name} / handwritten`, num: name, den: 'handwritten', min: 1.1 })),
    ...['ours-redis', 'ours-local', 'ours-memory'].map((name) => ({ label: `stale reads of ${name} = 0`, stale: name }))
  ],
  w3: ['ours-redis', 'ours-local', 'ours-memory'].map((name) => ({ label: `${name} / handwritten`, num: name, den: 'handwritten', min: 1.0 }))
}

const median = (values) => {
  const sorted = values.filter((v) => v !== null && v !== undefined).sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
const sum = (values) => (values.some((v) => v === null) ? null : values.reduce((a, b) => a + b, 0))
const fmt = (n, digits = 0) => (n === null || n === undefined || Number.isNaN(n) ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }))
const pct = (share) => (share === null || share === undefined ? 'n/a' : `${Math.round(share * 100)}%`)

// The check's rounds: the static route and the same with a hit's headers alternate, so that
// the difference between them (the cost of the headers) outlasts the machine's noise.
const CHECK_ROUNDS = 3

/**
 * Runs wrk and the Node client against the static route, to show which load each can make, and
 * wrk against the static route with a hit's headers: the floor of a cache hit through Fastify.
 * Each row is the median of CHECK_ROUNDS runs, the two wrk rows alternating.
 */
export async function loadGeneratorCheck (redis, options) {
  const load = { connections: options.connections, pin: options.pin, seconds: 3, seed: 99 }
  const checks = [
    { variant: 'static', id: 'w1', generator: 'wrk, Zipf paths' },
    { variant: 'static-hit', id: 'w1', generator: 'wrk, with a hit\'s 5 headers' },
    { variant: 'static', id: 'w2', generator: 'Node client, the W2 mix' }
  ]
  const servers = {}
  try {
    for (const variant of ['static', 'static-hit']) {
      servers[variant] = await startServer(variant, null, options.pin)
      Object.assign(servers[variant], { statsChild: servers[variant].child, checker: staleChecker() })
    }
    const runs = checks.map(() => [])
    for (let round = 0; round < CHECK_ROUNDS; round++) {
      for (const [i, { variant, id }] of checks.entries()) {
        if (round === 0) await measure({ id }, servers[variant], null, { ...load, seconds: 1 })
        runs[i].push(await measure({ id }, servers[variant], null, load))
      }
    }
    const rows = checks.map(({ generator }, i) => ({ generator, ...medianRun(runs[i]) }))
    for (const row of rows) console.log(`load generator check: ${row.generator.padEnd(28)} ${fmt(row.reqPerSec).padStart(8)} req/s, ${fmt(row.cpuUsPerReq, 1)} µs CPU/req on the static route, load generator CPU ${pct(row.loadCpu)} of a core, server core busy ${pct(row.serverCoreBusy)}`)
    return rows
  } finally {
    for (const server of Object.values(servers)) await stopChild(server.child, { message: 'shutdown' })
  }
}

/** The medians of a check's runs, field by field. */
function medianRun (list) {
  const fields = ['reqPerSec', 'cpuUsPerReq', 'loadCpu', 'serverCoreBusy']
  return Object.fromEntries(fields.map((field) => [field, median(list.map((r) => r[field]))]))
}

function summarize ({ runs, ends }) {
  return Object.entries(runs).map(([name, list]) => ({
    name,
    reqPerSec: median(list.map((r) => r.reqPerSec)),
    p99: median(list.map((r) => r.p99)),
    cpuUsPerReq: median(list.map((r) => r.cpuUsPerReq)),
    redisPerReq: median(list.map((r) => r.redisPerReq)),
    redisSentPerReq: median(list.map((r) => r.redisSentPerReq)),
    dbReadsPerReq: median(list.map((r) => r.dbReadsPerReq)),
    majorGcs: sum(list.map((r) => r.majorGcs)),
    longestGcMs: list.some((r) => r.longestGcMs === null) ? null : Math.max(...list.map((r) => r.longestGcMs)),
    stale: list[0]?.stale === null ? null : sum(list.map((r) => r.stale)),
    failed: sum(list.map((r) => r.failed)),
    loadCpu: median(list.map((r) => r.loadCpu)),
    runnerCoreBusy: median(list.map((r) => r.runnerCoreBusy)),
    rounds: list.map((r) => r.reqPerSec),
    rss: ends[name]?.rss ?? null
  }))
}

function targets (id, rows) {
  const by = Object.fromEntries(rows.map((r) => [r.name, r]))
  const out = []
  for (const t of TARGETS[id] ?? []) {
    if (t.stale) {
      if (by[t.stale]) out.push({ label: t.label, value: fmt(by[t.stale].stale), needed: '0', pass: by[t.stale].stale === 0 })
    } else if (t.p99) {
      if (by[t.p99] && by[t.den]) out.push({ label: t.label, value: `${fmt(by[t.p99].p99, 2)} / ${fmt(by[t.den].p99, 2)} ms`, needed: '<=', pass: by[t.p99].p99 <= by[t.den].p99 })
    } else if (by[t.num] && by[t.den]) {
      const ratio = by[t.num].reqPerSec / by[t.den].reqPerSec
      out.push({ label: t.label, value: `${ratio.toFixed(2)}x`, needed: `>= ${t.min}x`, pass: ratio >= t.min })
    }
  }
  return out
}

const HEADERS = ['variant', 'req/s', 'p99 ms', 'CPU µs/req', 'Redis calls/req', 'Redis cmds/req', 'DB reads/req', 'RSS MiB', 'full GCs', 'longest GC ms', 'stale reads', 'load gen CPU', 'CPU 1 busy', 'req/s by round']
const ALIGN = ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l']

function cells (row) {
  return [
    row.name + (row.failed > 0 ? ` (${row.failed} failed)` : ''),
    fmt(row.reqPerSec),
    fmt(row.p99, 2),
    fmt(row.cpuUsPerReq, 1),
    fmt(row.redisSentPerReq, 2),
    fmt(row.redisPerReq, 2),
    fmt(row.dbReadsPerReq, 3),
    fmt(row.rss === null ? null : row.rss / 1024 / 1024, 1),
    fmt(row.majorGcs),
    fmt(row.longestGcMs, 1),
    row.stale === null ? '-' : fmt(row.stale),
    pct(row.loadCpu),
    pct(row.runnerCoreBusy),
    row.rounds.map((v) => fmt(v)).join(' / ')
  ]
}

function textTable (headers, rows, align) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((row) => String(row[i]).length)))
  const line = (row) => row.map((cell, i) => (align[i] === 'r' ? String(cell).padStart(widths[i]) : String(cell).padEnd(widths[i]))).join('  ')
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n')
}

function mdTable (headers, rows, align) {
  return [headers, align.map((a) => (a === 'r' ? '---:' : '---')), ...rows].map((row) => `| ${row.join(' | ')} |`).join('\n')
}

function machineLine (summary) {
  const cpus = os.cpus()
  return `${cpus[0]?.model?.trim() ?? 'unknown'}, ${cpus.length} cores, ${Math.round(os.totalmem() / 1024 ** 3)} GiB, ${os.type()} ${os.release()}, Node ${process.version}, Redis ${summary.redisVersion}, ${process.env.WRK || 'wrk'} and nginx from the system`
}

export function report (summary) {
  const { options } = summary
  const runLine = `${options.rounds} round(s) x ${options.duration} s per variant after a ${options.warmup} s warm-up, ${options.connections} connections, medians of the rounds (full GCs and stale reads: totals of the rounds); ${options.pin ? 'servers and nginx on CPU 0, load generator and Redis on CPU 1' : 'not pinned'}; load average at start ${summary.loadAverage}`
  const text = []
  const sections = {}
  const checkRows = (summary.check ?? []).map((r) => [r.generator, fmt(r.reqPerSec), fmt(r.cpuUsPerReq, 1), pct(r.loadCpu), pct(r.serverCoreBusy)])
  const checkHeaders = ['load generator on the static route', 'req/s', 'CPU µs/req', 'its CPU', 'server core busy']
  for (const result of summary.results) {
    const rows = summarize(result)
    const goals = targets(result.workload.id, rows)
    const goalRows = goals.map((g) => [g.label, g.value, g.needed, g.pass ? 'PASS' : 'FAIL'])
    const labels = result.variantLabels
    text.push('', result.workload.title, `load generator: ${result.workload.generator}`, textTable(HEADERS, rows.map(cells), ALIGN), '', textTable(['target (informational)', 'value', 'needed', 'result'], goalRows, ['l', 'r', 'r', 'l']))
    sections[result.workload.id] = [
      `### ${result.workload.title}`,
      '',
      `Measured ${summary.date} with \`node run.js ${summary.argv.join(' ')}\`; load generator: ${result.workload.generator}.`,
      `Machine: ${machineLine(summary)}.`,
      `Run: ${runLine}.`,
      ...(labels ? ['', labels] : []),
      '',
      mdTable(HEADERS, rows.map(cells), ALIGN),
      '',
      mdTable(['target (informational)', 'value', 'needed', 'result'], goalRows, ['l', 'r', 'r', 'l']),
      ...(checkRows.length ? ['', mdTable(checkHeaders, checkRows, ['l', 'r', 'r', 'r', 'r'])] : []),
      ''
    ].join('\n')
  }
  if (checkRows.length) text.push('', textTable(checkHeaders, checkRows, ['l', 'r', 'r', 'r', 'r']))
  text.push('', `machine: ${machineLine(summary)}`, `run:     ${runLine}`, '')
  return { text: text.join('\n'), sections }
}

/** Puts each section between its markers in results.md, appending the ones not there yet. */
export function writeResults (sections) {
  const file = new URL('../results.md', import.meta.url)
  let md = existsSync(file) ? readFileSync(file, 'utf8') : ''
  const intro = '\n## Workloads\n\nWritten by `node run.js --workloads ... --write`; see README.md for what each measures.\n'
  if (Object.keys(sections).length > 0 && !md.includes('<!-- workloads:')) md = md.trimEnd() + '\n' + intro
  for (const id of ['w1', 'w2', 'w3']) {
    if (!sections[id]) continue
    const start = `<!-- workloads:${id} -->`
    const end = `<!-- /workloads:${id} -->`
    const block = `${start}\n${sections[id]}${end}`
    const at = md.indexOf(start)
    const stop = md.indexOf(end)
    md = at !== -1 && stop > at ? md.slice(0, at) + block + md.slice(stop + end.length) : md.trimEnd() + '\n\n' + block + '\n'
  }
  writeFileSync(file, md)
  return 'bench/results.md'
}
