// Shared test helpers: Fastify apps with the plugin registered, captured log lines, a clean
// environment, and small polling utilities. Every app is closed when its test ends.
import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { Redis } from 'ioredis'
import fastifyRedisCache from '../../index'
import type { CacheManager } from '../../lib/cache/manager'
import { EnvironmentSchema } from '../../lib/config'
import type { CacheStack } from '../../lib/stack'
import type { RedisClient } from '../../lib/stores/redis'
import type { CacheOptions } from '../../types'

/** The part of a tap test the helpers need. */
export interface Scope {
  teardown: (fn: () => unknown) => void
}

// The suite must not depend on the machine's environment: the variables the plugin reads are
// removed from this process (each tap test file is its own process).
for (const name of Object.keys(EnvironmentSchema.properties)) delete process.env[name]

export interface LogLine {
  level: number
  msg: string
  [field: string]: unknown
}

export const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const

export interface Logs {
  stream: Writable
  lines: LogLine[]
  /** Lines whose message contains `text`, at `level` when given. */
  find: (text: string | RegExp, level?: number) => LogLine[]
}

export function captureLogs (): Logs {
  const lines: LogLine[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') lines.push(JSON.parse(line) as LogLine)
      }
      callback()
    }
  })
  const find = (text: string | RegExp, level?: number): LogLine[] => lines.filter((line) =>
    (level === undefined || line.level === level) &&
    (typeof text === 'string' ? line.msg.includes(text) : text.test(line.msg)))
  return { stream, lines, find }
}

export interface Built {
  app: FastifyInstance
  cache: CacheManager
  logs: Logs
}

/** A Fastify app with the plugin registered and ready; closed on teardown. Management routes off by default. */
export async function build (t: Scope, options: CacheOptions = {}): Promise<Built> {
  const logs = captureLogs()
  const app = Fastify({ logger: { level: 'debug', stream: logs.stream } })
  t.teardown(() => app.close())
  await app.register(fastifyRedisCache, { routes: false, ...options })
  await app.ready()
  return { app, cache: app.cache as CacheManager, logs }
}

/** The store under the other layers (the circuit breaker, the local tier). */
export function innerStore (cache: CacheManager): CacheStack['store'] {
  return cache.core.stack.store
}

/** The ioredis client the plugin uses (Redis-backed apps only). */
export function clientOf (cache: CacheManager): RedisClient {
  return cache.core.stack.client as RedisClient
}

/** A plain ioredis client for looking at (and tampering with) what the plugin stored. */
export function rawClient (t: Scope, url: string): Redis {
  const client = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  return client
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` until it returns true; fails after `timeoutMs`. */
export async function until (check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(20)
  }
}

let counter = 0
/** A prefix no other test in this process uses, so tests sharing a Redis do not see each other. */
export function uniquePrefix (name = 't'): string {
  counter++
  return `${name}${process.pid}x${counter}`
}

export type Method = 'GET' | 'POST' | 'DELETE' | 'HEAD'

/** Every guarded management route under the default prefix, HEAD included. */
export const MANAGEMENT_ROUTES: ReadonlyArray<[Method, string]> = [
  ['GET', '/cache/stats'],
  ['GET', '/cache/ping'],
  ['DELETE', '/cache/clear'],
  ['DELETE', '/cache/clear?namespace=a'],
  ['GET', '/cache/reset-stats'],
  ['POST', '/cache/reset-stats'],
  ['GET', '/cache/metrics'],
  ['HEAD', '/cache/stats'],
  ['HEAD', '/cache/reset-stats']
]

/** Moves Date.now forward for one test; timers keep real time. */
export function clock (t: Scope): { advance: (seconds: number) => void } {
  const realNow = Date.now
  let offset = 0
  Date.now = () => realNow() + offset
  t.teardown(() => { Date.now = realNow })
  return { advance: (seconds) => { offset += seconds * 1000 } }
}
