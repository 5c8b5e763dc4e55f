// The dashboard: one self-contained HTML page (inline CSS and JS, no build step, nothing fetched
// from elsewhere) that polls the stats route next to it. The page itself carries no data, so it is
// served without a token; every figure comes from the protected management routes. Where those
// answer 401, the page asks for the token once and keeps it in memory only. Every value is
// rendered through textContent, never as HTML.
import { createHash } from 'node:crypto'

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fastify-redis-cache</title>
<style>
  :root { --bg: #0f172a; --card: #1e293b; --text: #e2e8f0; --muted: #94a3b8; --good: #22c55e; --bad: #ef4444; --warn: #f59e0b; --accent: #38bdf8; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, Segoe UI, Roboto, sans-serif; background: var(--bg); color: var(--text); }
  header { display: flex; align-items: center; justify-content: space-between; padding: 14px 20px; border-bottom: 1px solid #334155; }
  h1 { font-size: 18px; margin: 0; }
  h2 { font-size: 13px; margin: 0 0 10px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 14px; padding: 16px 20px; }
  section { background: var(--card); border-radius: 8px; padding: 14px 16px; }
  .wide { grid-column: 1 / -1; }
  .big { font-size: 40px; font-weight: 600; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 4px 12px; margin: 0; }
  dt { color: var(--muted); }
  dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: right; padding: 4px 6px; border-bottom: 1px solid #334155; }
  th:first-child, td:first-child { text-align: left; }
  .status { font-size: 12px; color: var(--muted); }
  .ok { color: var(--good); } .bad { color: var(--bad); } .warn { color: var(--warn); }
  input, button { font: inherit; padding: 6px 10px; border-radius: 6px; border: 1px solid #475569; background: #0b1220; color: var(--text); }
  button { cursor: pointer; background: #334155; }
  button:hover { background: #475569; }
  svg { width: 100%; height: 80px; display: block; }
  #login { display: none; padding: 16px 20px; }
  #login.shown { display: block; }
</style>
</head>
<body>
<header>
  <h1>fastify-redis-cache</h1>
  <span class="status" id="updated">connecting...</span>
</header>
<div id="login">
  <form id="login-form">
    <label>Management token <input id="token" type="password" autocomplete="off" required></label>
    <button type="submit">Open</button>
    <span class="bad" id="login-error"></span>
  </form>
</div>
<main id="board">
  <section>
    <h2>Hit rate</h2>
    <div class="big" id="hit-rate">-</div>
    <svg id="chart" viewBox="0 0 300 80" preserveAspectRatio="none" aria-label="hit rate over the last minutes">
      <polyline id="chart-line" fill="none" stroke="#38bdf8" stroke-width="2" points=""></polyline>
    </svg>
    <div class="status">per poll, last <span id="chart-span">0</span> s</div>
  </section>
  <section>
    <h2>Operations</h2>
    <dl>
      <dt>Hits</dt><dd id="hits">-</dd>
      <dt>Misses</dt><dd id="misses">-</dd>
      <dt>Sets</dt><dd id="sets">-</dd>
      <dt>Deletes</dt><dd id="deletes">-</dd>
      <dt>Evictions</dt><dd id="evictions">-</dd>
      <dt>Errors</dt><dd id="errors">-</dd>
    </dl>
  </section>
  <section>
    <h2>Bytes</h2>
    <dl>
      <dt>Read</dt><dd id="bytes-read">-</dd>
      <dt>Written</dt><dd id="bytes-written">-</dd>
      <dt title="compressed size / original size of compressed values">Compression</dt><dd id="compression">-</dd>
      <dt>Local tier</dt><dd id="local">-</dd>
    </dl>
  </section>
  <section>
    <h2>Redis</h2>
    <dl>
      <dt>Store</dt><dd id="store">-</dd>
      <dt>Connected</dt><dd id="connected">-</dd>
      <dt>Circuit breaker</dt><dd id="circuit">-</dd>
      <dt>Version</dt><dd id="version">-</dd>
      <dt>Memory</dt><dd id="memory">-</dd>
      <dt>Clients</dt><dd id="clients">-</dd>
    </dl>
  </section>
  <section class="wide">
    <h2>Namespaces (route caching)</h2>
    <table>
      <thead><tr><th>Namespace</th><th>Hits</th><th>Misses</th><th>Hit rate</th><th></th></tr></thead>
      <tbody id="namespaces"></tbody>
    </table>
    <p class="status" id="clear-result"></p>
  </section>
</main>
<script>
(function () {
  'use strict'
  var POLL_MS = 2000
  var HISTORY = 90
  var token = null
  var history = []
  var previous = null

  function el (id) { return document.getElementById(id) }
  function text (id, value) { el(id).textContent = value }
  function number (n) { return n === null || n === undefined ? 'n/a' : Number(n).toLocaleString('en-US') }
  function percent (r) { return (r * 100).toFixed(1) + '%' }
  function bytes (n) {
    if (n === null || n === undefined) return 'n/a'
    var units = ['B', 'KiB', 'MiB', 'GiB']
    var i = 0
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
    return n.toFixed(i === 0 ? 0 : 1) + ' ' + units[i]
  }

  function request (method, path) {
    var headers = {}
    if (token !== null) headers.authorization = 'Bearer ' + token
    return fetch(path, { method: method, headers: headers, cache: 'no-store' })
  }

  function askForToken (message) {
    el('login').className = 'shown'
    text('login-error', message)
    text('updated', 'token required')
  }

  el('login-form').addEventListener('submit', function (event) {
    event.preventDefault()
    token = el('token').value
    el('token').value = ''
    el('login').className = ''
    poll()
  })

  function render (data) {
    var s = data.statistics
    var r = data.redis
    text('hit-rate', percent(s.hitRate))
    text('hits', number(s.hits))
    text('misses', number(s.misses))
    text('sets', number(s.sets))
    text('deletes', number(s.deletes))
    text('evictions', number(s.evictions))
    text('errors', number(s.errors))
    text('bytes-read', bytes(s.bytesRead))
    text('bytes-written', bytes(s.bytesWritten))
    text('compression', s.compressionRatio.toFixed(3))
    text('local', s.local ? number(s.local.entries) + ' entries, ' + bytes(s.local.bytes) : 'off')
    text('store', s.store)
    text('connected', s.connected ? 'yes' : 'no')
    el('connected').className = s.connected ? 'ok' : 'bad'
    text('circuit', s.circuit)
    el('circuit').className = s.circuit === 'closed' ? 'ok' : s.circuit === 'open' ? 'bad' : 'warn'
    text('version', r.redisVersion === null ? 'n/a' : r.redisVersion)
    text('memory', bytes(r.usedMemory))
    text('clients', number(r.connectedClients))
    renderNamespaces(s.namespaces)
    record(s)
  }

  function renderNamespaces (namespaces) {
    var body = el('namespaces')
    body.textContent = ''
    Object.keys(namespaces).sort().forEach(function (name) {
      var ns = namespaces[name]
      var row = document.createElement('tr')
      row.setAttribute('data-namespace', name)
      ;[name, number(ns.hits), number(ns.misses), percent(ns.hitRate)].forEach(function (value) {
        var cell = document.createElement('td')
        cell.textContent = value
        row.appendChild(cell)
      })
      var action = document.createElement('td')
      var button = document.createElement('button')
      button.type = 'button'
      button.textContent = 'Clear'
      button.addEventListener('click', function () { clearNamespace(name) })
      action.appendChild(button)
      row.appendChild(action)
      body.appendChild(row)
    })
  }

  // The chart shows the hit rate of each poll interval, from the counters' differences.
  function record (s) {
    var now = Date.now()
    if (previous !== null) {
      var hits = s.hits - previous.hits
      var misses = s.misses - previous.misses
      if (hits >= 0 && misses >= 0) history.push({ at: now, rate: hits + misses === 0 ? null : hits / (hits + misses) })
      if (history.length > HISTORY) history.shift()
    }
    previous = { hits: s.hits, misses: s.misses }
    var points = []
    history.forEach(function (sample, i) {
      if (sample.rate === null) return
      var x = history.length === 1 ? 300 : (i / (history.length - 1)) * 300
      points.push(x.toFixed(1) + ',' + (78 - sample.rate * 76).toFixed(1))
    })
    el('chart-line').setAttribute('points', points.join(' '))
    text('chart-span', history.length === 0 ? '0' : String(Math.round((now - history[0].at) / 1000)))
  }

  function clearNamespace (name) {
    if (!window.confirm('Clear every entry of namespace "' + name + '"?')) return
    request('DELETE', 'clear?namespace=' + encodeURIComponent(name)).then(function (res) {
      if (res.status === 401) return askForToken(token === null ? '' : 'The token was refused.')
      return res.json().then(function (body) {
        text('clear-result', res.ok ? 'Cleared ' + body.cleared + ' entries of ' + name + '.' : 'Clear failed: ' + body.message)
        poll()
      })
    }).catch(function (err) { text('clear-result', 'Clear failed: ' + err.message) })
  }

  var timer = null
  function poll () {
    clearTimeout(timer)
    request('GET', 'stats').then(function (res) {
      if (res.status === 401) return askForToken(token === null ? '' : 'The token was refused.')
      if (!res.ok) throw new Error('stats answered ' + res.status)
      return res.json().then(function (data) {
        render(data)
        text('updated', 'updated ' + new Date().toLocaleTimeString())
        document.body.setAttribute('data-loaded', 'true')
        timer = setTimeout(poll, POLL_MS)
      })
    }).catch(function (err) {
      text('updated', 'error: ' + err.message)
      timer = setTimeout(poll, POLL_MS)
    })
  }
  poll()
})()
</script>
</body>
</html>
`

function inlineHash (tag: 'script' | 'style'): string {
  const source = DASHBOARD_HTML.slice(DASHBOARD_HTML.indexOf(`<${tag}>`) + tag.length + 2, DASHBOARD_HTML.indexOf(`</${tag}>`))
  return `'sha256-${createHash('sha256').update(source).digest('base64')}'`
}

/** Only this page's own inline script and style run; it may talk to its own origin only. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  `script-src ${inlineHash('script')}`,
  `style-src ${inlineHash('style')}`,
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'"
].join('; ')
