// Safe by default: without a token, a preHandler or `public: true` the management routes answer
// loopback clients only (judged by the TCP peer, not by headers), say so at start, and the routes
// that change state refuse cross-site requests whatever protects them.
import Fastify, { type FastifyRequest, type InjectOptions } from 'fastify'
import t from 'tap'
import fastifyRedisCache from '../index'
import { crossSiteRefusal, isLoopback, isLoopbackHost, loopbackRefusal, sameOrigin } from '../lib/management/guard'
import { CacheError, CacheForbiddenError } from '../lib/errors'
import { build, LEVEL, MANAGEMENT_ROUTES, type Method } from './helpers/app'

const PROTECTED = MANAGEMENT_ROUTES
const CHANGING: Array<[Method, string]> = [
  ['DELETE', '/cache/clear'],
  ['GET', '/cache/reset-stats'],
  ['POST', '/cache/reset-stats'],
  ['HEAD', '/cache/reset-stats']
]
const READING: Array<[Method, string]> = [['GET', '/cache/stats'], ['GET', '/cache/ping'], ['GET', '/cache/metrics']]

const REMOTE = '10.0.0.5'
const TOKEN = 'let-me-in'
const WARNING = 'answer loopback clients only'

const forbidden = { statusCode: 403, code: 'CACHE_FORBIDDEN', error: 'Forbidden' }

t.test('CacheForbiddenError is a 403 CacheError', async (t) => {
  const err = new CacheForbiddenError('no')
  t.ok(err instanceof CacheError)
  t.match(err, { name: 'CacheForbiddenError', code: 'CACHE_FORBIDDEN', statusCode: 403, message: 'no' })
})

t.test('default options: a remote client gets 403 on every protected route', async (t) => {
  const { app, cache } = await build(t, { redis: false, routes: {} })
  await cache.set('k', 1)
  for (const [method, url] of PROTECTED) {
    const res = await app.inject({ method, url, remoteAddress: REMOTE })
    t.equal(res.statusCode, 403, `${method} ${url} from ${REMOTE}: 403`)
    t.equal(res.headers['cache-control'], 'no-store')
    if (method !== 'HEAD') t.match(res.json(), { ...forbidden, message: /loopback clients only.*routes\.token.*routes\.preHandler.*routes\.public/ })
  }
  t.equal(await cache.exists('k'), 1, 'the refused clear cleared nothing')
  t.equal(cache.getStatistics().sets, 1, 'the refused resets reset nothing')

  for (const [method, url] of PROTECTED) {
    t.equal((await app.inject({ method, url })).statusCode, 200, `${method} ${url} from 127.0.0.1: 200`)
  }
  const page = await app.inject({ url: '/cache/dashboard', remoteAddress: REMOTE })
  t.equal(page.statusCode, 200, 'the dashboard page (no data) stays reachable')
})

t.test('the loopback interface is 127.0.0.0/8 and ::1, IPv4-mapped or not', async (t) => {
  const { app } = await build(t, { redis: false, routes: {} })
  for (const remoteAddress of ['127.0.0.1', '127.1.2.3', '127.255.255.254', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) {
    t.equal((await app.inject({ url: '/cache/stats', remoteAddress })).statusCode, 200, `${remoteAddress}: 200`)
  }
  for (const remoteAddress of [REMOTE, '192.168.1.10', '128.0.0.1', '0.0.0.0', '::ffff:10.0.0.5', '::2', '2001:db8::1', 'fe80::1', 'localhost']) {
    t.equal((await app.inject({ url: '/cache/stats', remoteAddress })).statusCode, 403, `${remoteAddress}: 403`)
  }
})

t.test('the TCP peer is judged, not X-Forwarded-For (request.ip under trustProxy)', async (t) => {
  const app = Fastify({ trustProxy: true })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { redis: false, routes: {} })
  app.get('/ip', async (request) => ({ ip: request.ip }))
  await app.ready()
  const spoofed = { 'x-forwarded-for': '127.0.0.1', forwarded: 'for=127.0.0.1' }
  t.same((await app.inject({ url: '/ip', remoteAddress: REMOTE, headers: spoofed })).json(), { ip: '127.0.0.1' }, 'request.ip believes the header')
  t.equal((await app.inject({ url: '/cache/stats', remoteAddress: REMOTE, headers: spoofed })).statusCode, 403, 'the routes do not')
})

t.test('a token, a preHandler or public: true opens the routes to remote clients', async (t) => {
  const withToken = await build(t, { redis: false, routes: { token: TOKEN } })
  const preHandlerCalls: string[] = []
  const withPreHandler = await build(t, {
    redis: false,
    routes: { preHandler: async (request: FastifyRequest) => { preHandlerCalls.push(request.url) } }
  })
  const open = await build(t, { redis: false, routes: { public: true } })
  for (const [method, url] of PROTECTED) {
    const remote = { method, url, remoteAddress: REMOTE }
    t.equal((await withToken.app.inject({ ...remote, headers: { authorization: `Bearer ${TOKEN}` } })).statusCode, 200, `${method} ${url}: token + bearer`)
    t.equal((await withToken.app.inject(remote)).statusCode, 401, `${method} ${url}: the token decides, not the address`)
    t.equal((await withPreHandler.app.inject(remote)).statusCode, 200, `${method} ${url}: a preHandler that allows`)
    t.equal((await open.app.inject(remote)).statusCode, 200, `${method} ${url}: public: true`)
  }
  t.equal(preHandlerCalls.length, PROTECTED.length, 'the preHandler decided every time')

  process.env.CACHE_ADMIN_TOKEN = 'from-env'
  t.teardown(() => { delete process.env.CACHE_ADMIN_TOKEN })
  const fromEnv = await build(t, { redis: false, routes: {} })
  t.equal((await fromEnv.app.inject({ url: '/cache/stats', remoteAddress: REMOTE, headers: { authorization: 'Bearer from-env' } })).statusCode, 200, 'CACHE_ADMIN_TOKEN')
})

t.test('DNS rebinding and a proxy on this machine do not pass for local clients', async (t) => {
  const { app } = await build(t, { redis: false, routes: {} })
  // A page of evil.example whose name now resolves to 127.0.0.1: the peer is local, the Host is not.
  const rebound = await app.inject({ url: '/cache/stats', headers: { host: 'evil.example:3000' } })
  t.equal(rebound.statusCode, 403)
  t.match(rebound.json(), { ...forbidden, message: /localhost only, not to "evil\.example:3000"/ })
  for (const host of ['localhost', 'localhost:3000', 'LocalHost:3000', 'app.localhost:3000', '127.0.0.1:3000', '127.8.0.1', '[::1]:3000', '[::ffff:127.0.0.1]']) {
    t.equal((await app.inject({ url: '/cache/stats', headers: { host } })).statusCode, 200, `Host: ${host}`)
  }
  for (const host of ['localhost.', 'localhost.evil.example', '10.0.0.1', '0.0.0.0:3000', '[::2]:3000', 'localhost:x']) {
    t.equal((await app.inject({ url: '/cache/stats', headers: { host } })).statusCode, 403, `Host: ${host}`)
  }
  // A reverse proxy on this host relays remote clients from 127.0.0.1, and says so.
  for (const headers of [{ 'x-forwarded-for': '203.0.113.9' }, { forwarded: 'for=203.0.113.9' }]) {
    const relayed = await app.inject({ url: '/cache/stats', headers })
    t.equal(relayed.statusCode, 403, JSON.stringify(headers))
    t.match(relayed.json(), { ...forbidden, message: /relayed by a proxy/ })
  }

  const withToken = await build(t, { redis: false, routes: { token: TOKEN } })
  const authorization = `Bearer ${TOKEN}`
  t.equal((await withToken.app.inject({ url: '/cache/stats', headers: { host: 'cache.example', 'x-forwarded-for': '203.0.113.9', authorization } })).statusCode, 200, 'a token opens them to any host and proxy')
})

t.test('the start-up warning', async (t) => {
  const unprotected = await build(t, { redis: false, routes: {} })
  const lines = unprotected.logs.find(WARNING)
  t.equal(lines.length, 1, 'logged once')
  t.equal(lines[0].level, LEVEL.warn)
  t.match(lines[0].msg, /under \/cache\/.*routes\.token \(or CACHE_ADMIN_TOKEN\), routes\.preHandler, or routes\.public: true/)

  const moved = await build(t, { redis: false, routes: { prefix: '/ops/cache' } })
  t.match(moved.logs.find(WARNING)[0]?.msg, /under \/ops\/cache\//, 'names the prefix')

  const quiet = {
    token: { token: TOKEN },
    preHandler: { preHandler: async () => {} },
    public: { public: true }
  }
  for (const [name, routes] of Object.entries(quiet)) {
    const { logs } = await build(t, { redis: false, routes })
    t.equal(logs.find(WARNING).length, 0, `not logged with ${name}`)
  }
  const off = await build(t, { redis: false, routes: false })
  t.equal(off.logs.find(WARNING).length, 0, 'not logged without routes')
  process.env.CACHE_ADMIN_TOKEN = 'from-env'
  t.teardown(() => { delete process.env.CACHE_ADMIN_TOKEN })
  const fromEnv = await build(t, { redis: false, routes: {} })
  t.equal(fromEnv.logs.find(WARNING).length, 0, 'not logged with CACHE_ADMIN_TOKEN')
})

t.test('a route that changes state refuses cross-site requests', async (t) => {
  const { app, cache } = await build(t, { redis: false, routes: {} })
  await cache.set('k', 1)
  const crossSite: Array<Record<string, string>> = [
    { 'sec-fetch-site': 'cross-site' },
    { 'sec-fetch-site': 'same-site' },
    { origin: 'https://evil.example' },
    { origin: 'null' },
    { origin: 'http://localhost:8080' },
    { 'sec-fetch-site': 'same-origin', origin: 'https://evil.example' }
  ]
  for (const [method, url] of CHANGING) {
    for (const headers of crossSite) {
      const res = await app.inject({ method, url, headers })
      t.equal(res.statusCode, 403, `${method} ${url} ${JSON.stringify(headers)}: 403`)
      if (method !== 'HEAD') t.match(res.json(), { ...forbidden, message: /cross-site request cannot change the cache/ })
    }
  }
  t.equal(await cache.exists('k'), 1, 'nothing was cleared')
  t.equal(cache.getStatistics().sets, 1, 'nothing was reset')

  // Injected requests carry `Host: localhost:80`.
  const sameSite: Array<Record<string, string>> = [
    {},
    { 'sec-fetch-site': 'same-origin' },
    { 'sec-fetch-site': 'none' },
    { origin: 'http://localhost' },
    { origin: 'http://localhost:80', 'sec-fetch-site': 'same-origin' }
  ]
  for (const [method, url] of CHANGING) {
    for (const headers of sameSite) {
      t.equal((await app.inject({ method, url, headers })).statusCode, 200, `${method} ${url} ${JSON.stringify(headers)}: 200`)
    }
  }
  for (const [method, url] of READING) {
    const headers = { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' }
    t.equal((await app.inject({ method, url, headers })).statusCode, 200, `${method} ${url} cross-site: read-only, 200`)
  }
})

t.test('the cross-site rule holds with a token, a preHandler or public: true', async (t) => {
  let calls = 0
  const options = {
    token: { token: TOKEN },
    preHandler: { preHandler: async () => { calls++ } },
    public: { public: true }
  }
  for (const [name, routes] of Object.entries(options)) {
    const { app } = await build(t, { redis: false, routes })
    for (const [method, url] of CHANGING) {
      const request: InjectOptions = { method, url, remoteAddress: REMOTE, headers: { authorization: `Bearer ${TOKEN}`, 'sec-fetch-site': 'cross-site' } }
      t.equal((await app.inject(request)).statusCode, 403, `${name}: ${method} ${url} cross-site refused`)
    }
  }
  t.equal(calls, 0, 'a preHandler (that may trust cookies) never sees a cross-site request')
})

t.test('Origin is compared with the host the app sees (X-Forwarded-Host under trustProxy)', async (t) => {
  for (const trustProxy of [true, false]) {
    const app = Fastify({ trustProxy })
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: false, routes: { public: true } })
    await app.ready()
    const res = await app.inject({
      method: 'POST',
      url: '/cache/reset-stats',
      headers: { host: '127.0.0.1:3000', 'x-forwarded-host': 'cache.example', origin: 'https://cache.example' }
    })
    t.equal(res.statusCode, trustProxy ? 200 : 403, `trustProxy: ${trustProxy}`)
  }
})

t.test('isLoopback and isLoopbackHost', async (t) => {
  t.ok(isLoopback('127.0.0.1'))
  t.ok(isLoopback('::ffff:127.0.0.1'))
  t.ok(isLoopback('::1'))
  t.notOk(isLoopback(undefined), 'a closed socket has no address')
  t.notOk(isLoopback(''))
  t.notOk(isLoopback('localhost'), 'a name is not an address')
  t.notOk(isLoopback('::ffff:10.0.0.5'))
  t.ok(isLoopbackHost('localhost'))
  t.ok(isLoopbackHost('a.b.localhost:1'))
  t.ok(isLoopbackHost('[::1]'))
  t.notOk(isLoopbackHost('[::1'), 'no closing bracket')
  t.notOk(isLoopbackHost(''))
})

t.test('sameOrigin', async (t) => {
  t.ok(sameOrigin('http://localhost:3000', 'localhost:3000'))
  t.ok(sameOrigin('https://cache.example', 'cache.example:443'), 'a default port written out')
  t.ok(sameOrigin('https://cache.example', 'CACHE.example'), 'host names are case-insensitive')
  t.ok(sameOrigin('http://[::1]:3000', '[::1]:3000'))
  t.notOk(sameOrigin('http://cache.example', 'cache.example:443'), 'another port')
  t.notOk(sameOrigin('https://evil.example', 'cache.example'))
  t.notOk(sameOrigin('https://cache.example.evil.example', 'cache.example'))
  t.notOk(sameOrigin('null', 'cache.example'))
  t.notOk(sameOrigin('', 'cache.example'))
  t.notOk(sameOrigin('file:///etc/passwd', 'cache.example'))
  t.notOk(sameOrigin('ftp://cache.example', 'cache.example'), 'not a web origin')
  t.notOk(sameOrigin('https://cache.example', ''), 'no host')
  t.notOk(sameOrigin('https://cache.example', 'evil@cache.example'), 'user info in Host')
  t.notOk(sameOrigin('https://cache.example', 'cache.example/path'), 'a path in Host')
})

/** A request as far as the refusals look at it. */
function fake (headers: Record<string, string | string[]>, remoteAddress = '127.0.0.1', host = ''): FastifyRequest {
  return { headers, host, socket: { remoteAddress } } as unknown as FastifyRequest
}

t.test('loopbackRefusal and crossSiteRefusal on unusual requests', async (t) => {
  t.equal(loopbackRefusal(fake({})), undefined, 'no Host at all (HTTP/1.0 from this machine)')
  t.match(loopbackRefusal(fake({ ':authority': 'evil.example' })), /localhost only/, 'HTTP/2 :authority')
  t.equal(loopbackRefusal(fake({ ':authority': 'localhost:3000' })), undefined)
  t.equal(crossSiteRefusal(fake({ 'sec-fetch-site': ' Same-Origin ' })), undefined, 'case and spaces aside')
  t.match(crossSiteRefusal(fake({ 'sec-fetch-site': ['same-origin', 'cross-site'] })), /Sec-Fetch-Site/, 'a repeated header')
  t.match(crossSiteRefusal(fake({ origin: 'http://localhost' })), /Origin: http:\/\/localhost/, 'no host to compare with')
})
