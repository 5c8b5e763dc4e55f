// Helpers for the route-caching tests: one redis-server per test file (started on first use),
// apps whose routes are declared before they are ready, and raw HTTP requests through node:http
// (no automatic decompression, no connection reuse).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyRedisCache from '../../index'
import type { CacheManager } from '../../lib/cache/manager'
import type { CacheOptions } from '../../types'
import { captureLogs, type Logs, type Scope, uniquePrefix } from './app'
import { type RedisServer, startRedis } from './redis-server'

export interface RouteApp {
  app: FastifyInstance
  cache: CacheManager
  logs: Logs
}

/** A lazily started redis-server shared by one test file, stopped when the file's tests end. */
export function sharedRedis (t: Scope): () => Promise<RedisServer> {
  let server: Promise<RedisServer> | undefined
  t.teardown(async () => {
    if (server !== undefined) await (await server).stop()
  })
  return () => {
    server ??= startRedis()
    return server
  }
}

/**
 * A Fastify app with the plugin registered (management routes off), the routes `declare` adds,
 * and ready; closed on teardown.
 */
export async function routeApp (t: Scope, options: CacheOptions, declare: (app: FastifyInstance) => void): Promise<RouteApp> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'info', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { routes: false, ...options })
  declare(app)
  await app.ready()
  return { app, cache: app.cache as CacheManager, logs }
}

/** Options for an app on `redis` with a prefix of its own (pass the same prefix to share entries). */
export function onRedis (redis: RedisServer, options: CacheOptions = {}): CacheOptions {
  return { redis: { url: redis.url }, prefix: uniquePrefix('rc'), ...options }
}

/** Listens on an ephemeral port on 127.0.0.1 and returns the base URL. */
export async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address() as AddressInfo
  return `http://127.0.0.1:${address.port}`
}

export interface RawResponse {
  status: number
  headers: http.IncomingHttpHeaders
  /** The bytes as they came over the wire (still gzipped when Content-Encoding says so). */
  body: Buffer
}

/** One request over a fresh connection; the body is not decoded. */
export function rawRequest (url: string, options: { method?: string, headers?: Record<string, string>, body?: string } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

/** A promise and its resolver, for handlers that wait until a test lets them go on. */
export function gate (): { promise: Promise<void>, open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => { open = resolve })
  return { promise, open }
}
