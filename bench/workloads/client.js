// A small keep-alive HTTP/1.1 load generator for the runs wrk cannot do: W2's reads that must
// know which writes were acknowledged before they were sent, and the priming passes. One request
// in flight per connection; requests are written by hand and responses parsed just enough
// (status, Content-Length, the body). It runs in the runner process, on the runner's core.
import net from 'node:net'

const HEADER_END = Buffer.from('\r\n\r\n')
const BUCKET_US = 10
const BUCKETS = 100_000 // up to 1 s; slower answers count in the last bucket

/** Latency histogram in 10 µs buckets. */
export function histogram () {
  const counts = new Uint32Array(BUCKETS)
  let n = 0
  return {
    add (us) {
      counts[Math.min(BUCKETS - 1, Math.floor(us / BUCKET_US))]++
      n++
    },
    /** The latency in ms at or under which `p` percent of the requests were answered. */
    percentile (p) {
      const wanted = Math.ceil((n * p) / 100)
      let seen = 0
      for (let i = 0; i < BUCKETS; i++) {
        seen += counts[i]
        if (seen >= wanted && seen > 0) return ((i + 1) * BUCKET_US) / 1000
      }
      return 0
    },
    get count () { return n }
  }
}

function parseHead (buffer, end) {
  const head = buffer.toString('latin1', 0, end)
  const status = Number(head.slice(9, 12))
  const length = /\r\ncontent-length: *(\d+)/i.exec(head)
  if (!length) throw new Error(`response without Content-Length (status ${status}): ${head.slice(0, 200)}`)
  return { status, length: Number(length[1]) }
}

/**
 * One connection: asks `next()` for a request ({ method, path } plus anything the caller wants
 * back), sends it, and hands the answer to `onResponse(request, status, body)` before asking for
 * the next; `next()` returning null ends the connection.
 */
function connection ({ port, next, onResponse, latency, counts }) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
    const host = `Host: 127.0.0.1:${port}\r\n`
    let buffer = null
    let head = null
    let current = null
    let sentAt = 0n
    const send = () => {
      current = next()
      if (current === null) {
        socket.end()
        return
      }
      const body = current.method === 'POST' ? 'Content-Length: 0\r\n' : ''
      sentAt = process.hrtime.bigint()
      socket.write(`${current.method} ${current.path} HTTP/1.1\r\n${host}${body}\r\n`)
    }
    socket.on('data', (chunk) => {
      buffer = buffer === null ? chunk : Buffer.concat([buffer, chunk])
      while (buffer !== null) {
        if (head === null) {
          const end = buffer.indexOf(HEADER_END)
          if (end === -1) return
          head = parseHead(buffer, end)
          head.start = end + 4
        }
        if (buffer.length < head.start + head.length) return
        const body = buffer.subarray(head.start, head.start + head.length)
        const rest = buffer.length > head.start + head.length ? buffer.subarray(head.start + head.length) : null
        latency.add(Number(process.hrtime.bigint() - sentAt) / 1000)
        counts.requests++
        if (head.status < 200 || head.status >= 300) counts.non2xx++
        onResponse?.(current, head.status, body)
        buffer = rest
        head = null
        send()
      }
    })
    socket.once('connect', send)
    socket.once('error', () => { counts.errors++ })
    // Resolves true when the server closed the connection with a request unanswered or more
    // to send: the caller then opens another.
    socket.once('close', () => resolve(current !== null))
  })
}

/** Runs one connection after another, as the server closes them, until `next()` says done. */
async function reconnecting (options) {
  while (await connection(options)) {
    if (options.counts.errors > 100) throw new Error(`${options.counts.errors} connection errors`)
  }
}

/**
 * Runs `connections` connections until `next()` returns null (or `seconds` have passed, when
 * given) and returns { requests, seconds, reqPerSec, p50, p99, errors, non2xx }.
 */
export async function runClient ({ port, connections = 50, seconds, next, onResponse }) {
  const latency = histogram()
  const counts = { requests: 0, errors: 0, non2xx: 0 }
  const started = process.hrtime.bigint()
  const deadline = seconds === undefined ? Infinity : performance.now() + seconds * 1000
  const nextUntil = () => (performance.now() >= deadline ? null : next())
  const runs = []
  for (let i = 0; i < connections; i++) runs.push(reconnecting({ port, next: nextUntil, onResponse, latency, counts }))
  await Promise.all(runs)
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9
  return {
    requests: counts.requests,
    seconds: elapsed,
    reqPerSec: counts.requests / elapsed,
    p50: latency.percentile(50),
    p99: latency.percentile(99),
    errors: counts.errors,
    non2xx: counts.non2xx
  }
}

/** Requests every path of `paths` once, over `connections` connections. */
export function requestAll (port, paths, connections = 50) {
  let i = 0
  return runClient({ port, connections, next: () => (i < paths.length ? { method: 'GET', path: paths[i++] } : null) })
}
