// TLS: the plugin against a real redis-server that speaks TLS, with a throwaway CA and server
// certificate made by the openssl CLI at test time. Covers rediss:// with the CA in `tls`
// options, host/port options with an SNI servername, REDIS_SSL with the REDIS_* environment,
// a client that does not trust the server certificate, and route caching over TLS.
//
// The server comes from the shared helper: it keeps its plain port (the helper's readiness probe
// and `server.cli` talk plain RESP there) and listens for TLS on a second port. The plugin is
// only ever pointed at the TLS port, and each test checks on the server side that the plugin's
// connection arrived there, and on the client side that its socket is an authorized TLS socket.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { TLSSocket } from 'node:tls'
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import fastifyRedisCache from '../index'
import type { CacheManager } from '../lib/cache/manager'
import { resolveConfig } from '../lib/config'
import { RedisConnectionError } from '../lib/errors'
import type { CacheOptions } from '../types'
import { build, clientOf, LEVEL, uniquePrefix, until } from './helpers/app'
import { routeApp } from './helpers/route-app'
import { freePort, startRedis, type RedisServer } from './helpers/redis-server'

const HOST = '127.0.0.1'

interface Certificates {
  /** The CA certificate (PEM), what a client must trust. */
  ca: string
  caFile: string
  certFile: string
  keyFile: string
}

/** A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost. */
function makeCertificates (dir: string): Certificates {
  const file = (name: string): string => join(dir, name)
  const openssl = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 })
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-days', '1',
    '-subj', '/CN=fastify-redis-cache test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
  openssl('req', '-new', ...ec, '-keyout', file('server.key'), '-out', file('server.csr'), '-subj', `/CN=${HOST}`)
  writeFileSync(file('server.ext'), [
    `subjectAltName=IP:${HOST},DNS:localhost`,
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth'
  ].join('\n') + '\n')
  openssl('x509', '-req', '-in', file('server.csr'), '-CA', file('ca.crt'), '-CAkey', file('ca.key'),
    '-set_serial', '1', '-days', '1', '-out', file('server.crt'), '-extfile', file('server.ext'))
  return { ca: readFileSync(file('ca.crt'), 'utf8'), caFile: file('ca.crt'), certFile: file('server.crt'), keyFile: file('server.key') }
}

let certs: Certificates
let server: RedisServer
let tlsPort: number
let tlsUrl: string

t.before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'redis-tls-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  certs = makeCertificates(dir)
  tlsPort = await freePort()
  tlsUrl = `rediss://${HOST}:${tlsPort}`
  server = await startRedis({
    args: [
      '--tls-port', String(tlsPort),
      '--tls-cert-file', certs.certFile,
      '--tls-key-file', certs.keyFile,
      '--tls-ca-cert-file', certs.caFile,
      '--tls-auth-clients', 'no'
    ]
  })
  t.teardown(() => server.stop())
  // redis-server binds every listener before it answers on any, so the helper's plain-port
  // readiness means the TLS port is up too; check it answers TLS (and only TLS) anyway.
  const plain = await plainPing(tlsPort)
  if (plain.includes('PONG')) throw new Error(`port ${tlsPort} answered plain RESP: ${plain}`)
  const probe = new Redis(tlsUrl, { tls: { ca: certs.ca }, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  probe.on('error', () => {})
  try {
    await probe.connect()
    if (await probe.ping() !== 'PONG') throw new Error('no PONG over TLS')
  } finally {
    probe.disconnect()
  }
})

/** What a plain TCP client gets back for PING from `port` (within 1 s). */
function plainPing (port: number): Promise<string> {
  return new Promise((resolve) => {
    let got = ''
    const socket = net.connect({ host: HOST, port })
    const finish = (): void => { clearTimeout(timer); socket.destroy(); resolve(got) }
    const timer = setTimeout(finish, 1000)
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk: Buffer) => { got += chunk.toString('latin1') })
    socket.on('error', finish)
    socket.on('close', finish)
  })
}

/** Sets environment variables for one test and restores them after it. */
function withEnv (t: Test, vars: Record<string, string>): void {
  const saved = new Map(Object.keys(vars).map((name) => [name, process.env[name]]))
  for (const [name, value] of Object.entries(vars)) process.env[name] = value
  t.teardown(() => {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name]
      else process.env[name] = value
    }
  })
}

/** The plugin's standalone ioredis client. */
function redisOf (t: Test, cache: CacheManager): Redis {
  const client = clientOf(cache)
  if (!(client instanceof Redis)) throw new Error('expected a standalone Redis client')
  t.equal(client.status, 'ready', 'the client is ready')
  return client
}

/** Asserts the plugin's connection is verified TLS, and arrived at the server's TLS port. */
async function assertTlsConnection (t: Test, client: Redis): Promise<void> {
  const stream = client.stream
  t.ok(stream instanceof TLSSocket, 'the connection is a TLS socket')
  if (stream instanceof TLSSocket) {
    t.equal(stream.encrypted, true, 'encrypted')
    t.equal(stream.authorized, true, `the server certificate is verified (${String(stream.authorizationError)})`)
    t.equal(stream.remotePort, tlsPort, 'to the TLS port')
  }
  // Server side: the connection named by the plugin came in on the TLS port.
  const id = await client.client('ID')
  const line = (await server.cli('client', 'list', 'id', String(id)))
  t.match(line, /name=fastify-redis-cache/, 'the server sees the plugin connection')
  t.match(line, new RegExp(`laddr=${HOST.replace(/\./g, '\\.')}:${tlsPort} `), 'on its TLS port')
}

/** set/get round trip, ping, statistics; the entry really is in the TLS server. */
async function assertWorks (t: Test, cache: CacheManager): Promise<void> {
  t.equal(await cache.set('k', { over: 'tls', n: 1 }), true, 'set')
  t.same(await cache.get('k'), { over: 'tls', n: 1 }, 'get round-trips')
  t.equal(await cache.ping(), true, 'ping')
  const stats = cache.getStatistics()
  t.equal(stats.store, 'redis')
  t.equal(stats.connected, true)
  t.equal(await server.cli('exists', cache.redisKey('k')), '1', 'the entry is in the server')
}

t.test('rediss:// url with the CA in tls options', async (t) => {
  const { cache, logs } = await build(t, { redis: { url: tlsUrl, tls: { ca: certs.ca } }, prefix: uniquePrefix() })
  const client = redisOf(t, cache)
  t.match(client.options, { host: HOST, port: tlsPort, tls: { ca: certs.ca } }, 'ioredis merged the tls options with the url')
  await assertTlsConnection(t, client)
  await assertWorks(t, cache)
  t.equal(logs.find('memory store').length, 0, 'no memory store')
  t.equal(logs.find('unreachable').length, 0, 'no degraded start')
})

t.test('host and port options with tls { ca, servername }', async (t) => {
  const { cache } = await build(t, { redis: { host: HOST, port: tlsPort, tls: { ca: certs.ca, servername: 'localhost' } }, prefix: uniquePrefix() })
  const client = redisOf(t, cache)
  t.match(client.options, { host: HOST, port: tlsPort, tls: { servername: 'localhost' } })
  await assertTlsConnection(t, client)
  await assertWorks(t, cache)
})

t.test('REDIS_SSL with the REDIS_* environment', async (t) => {
  const env = { REDIS_HOST: HOST, REDIS_PORT: String(tlsPort), REDIS_SSL: 'true' }

  t.test('resolveConfig: REDIS_SSL=true alone is tls: {}', async (t) => {
    const { redis } = resolveConfig({}, env)
    t.match(redis, { kind: 'standalone', url: undefined, options: { host: HOST, port: tlsPort, tls: {} } })
    if (redis.kind === 'standalone') t.same(redis.options.tls, {})
    const off = resolveConfig({}, { ...env, REDIS_SSL: 'false' }).redis
    t.ok(off.kind === 'standalone' && off.options.tls === undefined, 'REDIS_SSL=false adds no tls')
  })

  t.test('resolveConfig: an explicit tls option replaces the environment\'s tls: {}', async (t) => {
    const { redis } = resolveConfig({ redis: { tls: { ca: certs.ca } } }, env)
    t.equal(redis.kind, 'standalone')
    if (redis.kind !== 'standalone') return
    t.equal(redis.url, undefined)
    t.match(redis.options, { host: HOST, port: tlsPort, connectTimeout: 2000 }, 'host and port from the environment')
    t.same(redis.options.tls, { ca: certs.ca }, 'tls from the options')
  })

  t.test('registration through process.env', async (t) => {
    withEnv(t, env)
    const { cache } = await build(t, { redis: { tls: { ca: certs.ca } }, prefix: uniquePrefix() })
    const client = redisOf(t, cache)
    t.match(client.options, { host: HOST, port: tlsPort, tls: { ca: certs.ca } })
    await assertTlsConnection(t, client)
    await assertWorks(t, cache)
  })

  t.test('registration through REDIS_URL=rediss://', async (t) => {
    withEnv(t, { REDIS_URL: tlsUrl })
    const { cache } = await build(t, { redis: { tls: { ca: certs.ca } }, prefix: uniquePrefix() })
    await assertTlsConnection(t, redisOf(t, cache))
    await assertWorks(t, cache)
  })
})

// A certificate the client cannot verify is not an error the plugin treats as configuration
// (only ReplyError and ENOTFOUND are): the app starts degraded, the cache misses, and ioredis
// keeps retrying the handshake in the background. These tests pin that behaviour down.
t.test('a client that does not trust the server certificate degrades, it does not crash', async (t) => {
  const selfSigned = { code: 'SELF_SIGNED_CERT_IN_CHAIN', message: /self-signed certificate in certificate chain/ }
  const cases: Array<{ what: string, redis: CacheOptions['redis'], env?: Record<string, string>, code: string, message: RegExp }> = [
    // redis-server sends its CA along with its certificate, so an untrusting Node client reports
    // SELF_SIGNED_CERT_IN_CHAIN (not UNABLE_TO_VERIFY_LEAF_SIGNATURE).
    { what: 'rediss:// without the CA', redis: { url: tlsUrl }, ...selfSigned },
    { what: 'REDIS_SSL=true without the CA', redis: undefined, env: { REDIS_HOST: HOST, REDIS_PORT: String(tlsPort), REDIS_SSL: 'true' }, ...selfSigned },
    {
      what: 'the CA but a servername the certificate does not name',
      redis: { url: tlsUrl, tls: { ca: certs.ca, servername: 'example.com' } },
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
      message: /Hostname\/IP does not match certificate's altnames: Host: example\.com/
    }
  ]
  for (const { what, redis, env, code, message } of cases) {
    t.test(what, async (t) => {
      // A connect timeout far longer than the test: registration returning at all is returning
      // after the failed handshake, not after a timeout.
      if (env !== undefined) withEnv(t, { ...env, REDIS_CONNECT_TIMEOUT: '600' })
      const errors: unknown[] = []
      const onError = (err: unknown): void => { errors.push(err) }
      process.on('unhandledRejection', onError)
      process.on('uncaughtException', onError)
      t.teardown(() => {
        process.off('unhandledRejection', onError)
        process.off('uncaughtException', onError)
      })

      const { app, cache, logs } = await routeApp(t, { redis: redis === undefined ? undefined : { ...redis, connectTimeout: 600_000 }, prefix: uniquePrefix() }, (app) => {
        app.get('/up', async () => ({ up: true }))
      })
      t.pass('registration returns after the first failed handshake')

      const [unreachable] = logs.find('Redis unreachable at start', LEVEL.warn)
      t.match(unreachable?.msg, message, 'a warning names the TLS failure')
      const [connectionError] = logs.find('Redis connection error', LEVEL.warn)
      t.match(connectionError, { err: { code, message } }, `the ioredis error is logged with its code ${code}`)
      const client = clientOf(cache)
      t.not(client.status, 'ready')

      const stats = cache.getStatistics()
      t.equal(stats.store, 'redis', 'still the Redis store')
      t.equal(stats.connected, false, 'not connected')
      t.equal(await cache.ping(), false, 'ping is false')
      t.equal(await cache.set('k', 1), false, 'set fails soft')
      t.equal(await cache.get('k'), null, 'get is a miss')

      t.same((await app.inject('/up')).json(), { up: true }, 'the app serves requests')

      // ioredis keeps retrying (every 100 ms, then longer): each attempt fails the same way.
      let attempts = 0
      const count = (): void => { attempts++ }
      client.on('error', count)
      await until(() => attempts >= 2, 30_000, 'two more failed handshakes')
      client.off('error', count)
      t.not(client.status, 'ready', 'never ready')
      t.equal(logs.find('Redis connection error', LEVEL.warn).length, 1, 'the repeated errors are logged once')

      await app.close()
      t.pass('app.close() does not wait for the retries')
      t.same(errors, [], 'no unhandled rejection or uncaught exception')
    })
  }

  t.test('with throwOnError the failure surfaces on use, not at registration', async (t) => {
    const { cache } = await build(t, { redis: { url: tlsUrl }, prefix: uniquePrefix(), throwOnError: true })
    await t.rejects(cache.set('k', 1), RedisConnectionError)
    await t.rejects(cache.get('k'), { name: 'RedisConnectionError', message: /Redis command failed/ })
  })

  t.test('registration resolves (no RedisConnectionError) for a TLS failure', async (t) => {
    const app = Fastify({ logger: false })
    t.teardown(() => app.close())
    await app.register(fastifyRedisCache, { redis: { url: tlsUrl }, routes: false })
    await t.resolves(async () => { await app.ready() })
    t.equal(app.cache.getStatistics().connected, false)
  })
})

t.test('route caching over TLS: MISS then HIT', async (t) => {
  const prefix = uniquePrefix('rc')
  let calls = 0
  const { app, cache } = await routeApp(t, { redis: { url: tlsUrl, tls: { ca: certs.ca } }, prefix }, (app) => {
    app.get('/item', { config: { cache: { ttl: 60 } } }, async () => ({ n: ++calls }))
  })
  await assertTlsConnection(t, redisOf(t, cache))
  const miss = await app.inject('/item')
  t.equal(miss.headers['x-cache'], 'MISS')
  t.same(miss.json(), { n: 1 })
  const hit = await app.inject('/item')
  t.equal(hit.headers['x-cache'], 'HIT')
  t.same(hit.json(), { n: 1 })
  t.equal(calls, 1, 'the handler ran once')
  const keys = await server.cli('--scan', '--pattern', `${prefix}:*`)
  t.ok(keys.length > 0, `the response is stored in the TLS server (${keys.split('\n').length} keys)`)
  t.equal(cache.getStatistics().connected, true)
})
