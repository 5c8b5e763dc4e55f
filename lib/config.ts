// Configuration: explicit options win over environment variables, which win over defaults.
// Environment variables are read with env-schema against a TypeBox schema; options are checked
// against TypeBox schemas too, so a bad value fails registration naming the option or variable.
import { Type, type Static } from '@sinclair/typebox'
import envSchema from 'env-schema'
import type { Cluster, ClusterNode, ClusterOptions, Redis, RedisOptions } from 'ioredis'
import { CacheConfigError } from './errors'
import { NAMESPACE_PATTERN } from './keys'
import { NO_RESILIENCE, resolveResilience, type Resilience } from './resilience'
import { schemaProblem } from './schema-check'
import type { CacheOptions, ManagementRoutesOptions } from '../types'
import { PlainOptionsSchema } from '../types/options'

const Seconds = Type.Integer({ minimum: 1 })
const Bool = Type.Boolean()

export const EnvironmentSchema = Type.Object({
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  REDIS_HOST: Type.Optional(Type.String({ minLength: 1 })),
  REDIS_PORT: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  REDIS_DB: Type.Optional(Type.Integer({ minimum: 0 })),
  REDIS_USERNAME: Type.Optional(Type.String()),
  REDIS_PASSWORD: Type.Optional(Type.String()),
  REDIS_SSL: Type.Optional(Bool),
  /** Seconds, as in the original design; fractions allowed. */
  REDIS_SOCKET_TIMEOUT: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  REDIS_CONNECT_TIMEOUT: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
  CACHE_PREFIX: Type.Optional(Type.String({ pattern: NAMESPACE_PATTERN.source })),
  CACHE_DEFAULT_TTL: Type.Optional(Seconds),
  CACHE_MAX_TTL: Type.Optional(Seconds),
  CACHE_COMPRESSION_ENABLED: Type.Optional(Bool),
  CACHE_COMPRESSION_THRESHOLD: Type.Optional(Type.Integer({ minimum: 0 })),
  CACHE_ADMIN_TOKEN: Type.Optional(Type.String({ minLength: 1 })),
  ENVIRONMENT: Type.Optional(Type.String()),
  NODE_ENV: Type.Optional(Type.String()),
  // Any string: `DEBUG=ioredis:*` (the debug module's convention) must not fail registration.
  DEBUG: Type.Optional(Type.String())
})
export type Environment = Static<typeof EnvironmentSchema>

export const DEFAULTS = {
  prefix: 'cache',
  decorator: 'cache',
  defaultTtl: 3600,
  maxTtl: 86400,
  compressionThreshold: 1024,
  compressionLevel: 6,
  commandTimeout: 500,
  connectTimeout: 2000,
  maxEntrySize: 8 * 1024 * 1024,
  routesPrefix: '/cache',
  redisNamespace: 'cache',
  localMaxEntries: 10_000,
  localMaxBytes: 64 * 1024 * 1024,
  localTtl: 60,
  // Three missed intervals and the one under way: an instance stops trusting a silent
  // subscription within a second.
  localHeartbeat: 250,
  memoryMaxEntries: 100_000,
  memoryMaxBytes: 64 * 1024 * 1024,
  failureThreshold: 5,
  resetTimeout: 2000,
  healthCheckInterval: 30_000,
  lockTtl: 5000,
  lockWait: 3000
} as const

export type ResolvedRedis =
  | { kind: 'memory', reason: string }
  | { kind: 'client', client: Redis | Cluster, closeClient: boolean, namespace: string }
  | { kind: 'standalone', url: string | undefined, options: RedisOptions, namespace: string }
  | { kind: 'cluster', nodes: ClusterNode[], options: ClusterOptions, namespace: string }

/** The options as the plugin uses them: every value decided, from options, environment or defaults. */
export type ResolvedConfig = ReturnType<typeof resolveConfig>

interface ResolvedRoutes {
  prefix: string
  token: string | undefined
  preHandler: ManagementRoutesOptions['preHandler']
  /** Answer clients beyond the loopback interface without a token or preHandler. */
  public: boolean
  dashboard: boolean
}

function resolveRoutes (option: CacheOptions['routes'], env: Environment, production: boolean): false | ResolvedRoutes {
  if (option === false) return false
  const routeOptions = option ?? {}
  const token = routeOptions.token ?? env.CACHE_ADMIN_TOKEN
  if (production && token === undefined && routeOptions.preHandler === undefined && routeOptions.public !== true) {
    throw new CacheConfigError('fastify-redis-cache: the management routes need CACHE_ADMIN_TOKEN (or routes.token, routes.preHandler) in production; set routes: false or routes.public: true to opt out')
  }
  return {
    prefix: (routeOptions.prefix ?? DEFAULTS.routesPrefix).replace(/\/+$/, ''),
    token,
    preHandler: routeOptions.preHandler,
    public: routeOptions.public === true,
    dashboard: routeOptions.dashboard !== false
  }
}

/** `production` or `prod`, in any case: how deployments name it. */
function isProduction (name: string | undefined): boolean {
  return name !== undefined && /^\s*prod(uction)?\s*$/i.test(name)
}

/** Reads and validates the environment variables of API.md; names the variable on failure. */
export function readEnvironment (env: NodeJS.ProcessEnv): Environment {
  // An empty variable (`REDIS_PASSWORD=`) means unset, as most deployment tools write it.
  const data: Record<string, string> = {}
  for (const name of Object.keys(EnvironmentSchema.properties)) {
    const value = env[name]
    if (value !== undefined && value !== '') data[name] = value
  }
  try {
    // `env: false`: env-schema would otherwise merge process.env back in, empty values included.
    return envSchema<Environment>({ schema: structuredClone(EnvironmentSchema), data, env: false, dotenv: false })
  } catch (err) {
    // With our fixed schema and no dotenv, env-schema only throws ajv validation errors, which
    // always list the failed properties with a message.
    const errors = (err as { errors: Array<{ instancePath: string, message: string }> }).errors
    const details = errors.map((e) => `${e.instancePath.slice(1)} ${e.message} (got ${JSON.stringify(data[e.instancePath.slice(1)])})`)
    throw new CacheConfigError(`fastify-redis-cache: invalid environment variable ${details.join('; ')}`, { cause: err })
  }
}

// The options schema with the options typed by hand (clients, functions) known by name, so a
// misspelled name anywhere fails registration.
const OptionsSchema = Type.Object({
  ...PlainOptionsSchema.properties,
  redis: Type.Optional(Type.Unknown()),
  serializer: Type.Optional(Type.Unknown())
}, { additionalProperties: false })

function checkOptions (options: CacheOptions): void {
  // Fastify's own register options arrive with ours.
  const { logLevel: _level, logSerializers: _serializers, ...data } = options as Record<string, unknown>
  if (typeof data.routes === 'object' && data.routes !== null) {
    const { preHandler, ...routes } = data.routes as Record<string, unknown>
    if (preHandler !== undefined && typeof preHandler !== 'function') {
      throw new CacheConfigError('fastify-redis-cache: option routes.preHandler must be a function')
    }
    data.routes = routes
  }
  const problem = schemaProblem(OptionsSchema, data)
  if (problem !== undefined) throw new CacheConfigError(`fastify-redis-cache: ${problem}`)
  const { serializer } = options
  if (serializer !== undefined && (typeof serializer?.serialize !== 'function' || typeof serializer.deserialize !== 'function')) {
    throw new CacheConfigError('fastify-redis-cache: option serializer needs serialize(value) and deserialize(buffer) functions')
  }
}

/** The getOrSet defaults; checked by the schema already, but for soft against hard. */
function resolveGetOrSetDefaults (option: CacheOptions['getOrSet']): Resilience {
  try {
    return resolveResilience(option, NO_RESILIENCE)
  } catch (err) {
    throw new CacheConfigError(`fastify-redis-cache: option getOrSet: ${(err as Error).message}`, { cause: err })
  }
}

function resolveRedis (option: CacheOptions['redis'], env: Environment): ResolvedRedis {
  if (option === false) return { kind: 'memory', reason: 'redis: false' }
  if (option === undefined) {
    if (env.REDIS_URL === undefined && env.REDIS_HOST === undefined) {
      return { kind: 'memory', reason: 'no redis option and neither REDIS_URL nor REDIS_HOST set' }
    }
    option = {}
  }
  if (typeof option !== 'object' || option === null) {
    throw new CacheConfigError('fastify-redis-cache: option redis must be false, ioredis options, { url }, { cluster } or { client }')
  }
  const namespace = option.namespace ?? DEFAULTS.redisNamespace
  if ('client' in option) {
    const client = option.client as unknown
    if (typeof client !== 'object' || client === null || typeof (client as Redis).sendCommand !== 'function') {
      throw new CacheConfigError('fastify-redis-cache: option redis.client must be an ioredis Redis or Cluster client')
    }
    return { kind: 'client', client: option.client, closeClient: option.closeClient === true, namespace }
  }
  if ('cluster' in option) {
    const nodes = option.cluster?.nodes
    if (!Array.isArray(nodes) || nodes.length === 0) {
      throw new CacheConfigError('fastify-redis-cache: option redis.cluster.nodes must list at least one node')
    }
    return { kind: 'cluster', nodes, options: { ...option.cluster.options }, namespace }
  }
  const { url: optionUrl, namespace: _ns, ...ioredisOptions } = option
  // ioredis lets a URL win over host/port/path/sentinels, so REDIS_URL applies only when the
  // options name no server of their own: explicit options beat the environment.
  const explicitServer = ioredisOptions.host !== undefined || ioredisOptions.port !== undefined ||
    ioredisOptions.path !== undefined || ioredisOptions.sentinels !== undefined
  const url = optionUrl ?? (explicitServer ? undefined : env.REDIS_URL)
  if (url !== undefined && !/^rediss?:\/\//.test(url)) {
    throw new CacheConfigError(`fastify-redis-cache: option redis.url must start with redis:// or rediss:// (got ${JSON.stringify(url)})`)
  }
  // Environment fills in what the URL and the explicit options leave open.
  const fromEnv: RedisOptions = {}
  if (url === undefined) {
    if (env.REDIS_HOST !== undefined) fromEnv.host = env.REDIS_HOST
    if (env.REDIS_PORT !== undefined) fromEnv.port = env.REDIS_PORT
    if (env.REDIS_DB !== undefined) fromEnv.db = env.REDIS_DB
    if (env.REDIS_USERNAME !== undefined) fromEnv.username = env.REDIS_USERNAME
    if (env.REDIS_PASSWORD !== undefined) fromEnv.password = env.REDIS_PASSWORD
    if (env.REDIS_SSL === true) fromEnv.tls = {}
  }
  if (env.REDIS_SOCKET_TIMEOUT !== undefined) fromEnv.socketTimeout = Math.round(env.REDIS_SOCKET_TIMEOUT * 1000)
  fromEnv.connectTimeout = env.REDIS_CONNECT_TIMEOUT !== undefined ? Math.round(env.REDIS_CONNECT_TIMEOUT * 1000) : DEFAULTS.connectTimeout
  return { kind: 'standalone', url, options: { ...fromEnv, ...ioredisOptions }, namespace }
}

export function resolveConfig (options: CacheOptions = {}, envSource: NodeJS.ProcessEnv = process.env) {
  if (typeof options !== 'object' || options === null) {
    throw new CacheConfigError('fastify-redis-cache: options must be an object')
  }
  const env = readEnvironment(envSource)
  checkOptions(options)

  const maxTtl = options.maxTtl ?? env.CACHE_MAX_TTL ?? DEFAULTS.maxTtl
  // Only a defaultTtl somebody set can contradict maxTtl; the built-in default is clamped to it.
  const defaultTtl = options.defaultTtl ?? env.CACHE_DEFAULT_TTL ?? Math.min(DEFAULTS.defaultTtl, maxTtl)
  if (defaultTtl > maxTtl) {
    throw new CacheConfigError(`fastify-redis-cache: defaultTtl (${defaultTtl}) must not exceed maxTtl (${maxTtl})`)
  }

  const compressionOption = typeof options.compression === 'boolean' ? { enabled: options.compression } : options.compression ?? {}
  const production = isProduction(env.ENVIRONMENT) || isProduction(env.NODE_ENV)

  const routes = resolveRoutes(options.routes, env, production)
  const localOption = options.local ?? false
  return {
    redis: resolveRedis(options.redis, env),
    prefix: options.prefix ?? env.CACHE_PREFIX ?? DEFAULTS.prefix,
    decorator: options.decorator ?? DEFAULTS.decorator,
    defaultTtl,
    maxTtl,
    compression: {
      enabled: compressionOption.enabled ?? env.CACHE_COMPRESSION_ENABLED ?? true,
      threshold: compressionOption.threshold ?? env.CACHE_COMPRESSION_THRESHOLD ?? DEFAULTS.compressionThreshold,
      level: compressionOption.level ?? DEFAULTS.compressionLevel
    },
    serializer: options.serializer,
    routes,
    errorHandler: options.errorHandler ?? true,
    throwOnError: options.throwOnError ?? false,
    local: localOption === false
      ? false as const
      : {
          maxEntries: localOption.maxEntries ?? DEFAULTS.localMaxEntries,
          maxBytes: localOption.maxBytes ?? DEFAULTS.localMaxBytes,
          ttl: localOption.ttl ?? DEFAULTS.localTtl,
          heartbeat: localOption.heartbeat ?? DEFAULTS.localHeartbeat
        },
    commandTimeout: options.commandTimeout ?? DEFAULTS.commandTimeout,
    maxEntrySize: options.maxEntrySize ?? DEFAULTS.maxEntrySize,
    circuitBreaker: options.circuitBreaker === false
      ? false as const
      : {
          failureThreshold: options.circuitBreaker?.failureThreshold ?? DEFAULTS.failureThreshold,
          resetTimeout: options.circuitBreaker?.resetTimeout ?? DEFAULTS.resetTimeout
        },
    healthCheckInterval: options.healthCheckInterval ?? DEFAULTS.healthCheckInterval,
    lock: options.lock === false ? false as const : { ttl: options.lock?.ttl ?? DEFAULTS.lockTtl, wait: options.lock?.wait ?? DEFAULTS.lockWait },
    memory: {
      maxEntries: options.memory?.maxEntries ?? DEFAULTS.memoryMaxEntries,
      maxBytes: options.memory?.maxBytes ?? DEFAULTS.memoryMaxBytes
    },
    routeDefaults: { credentials: options.routeDefaults?.credentials ?? 'bypass' as const },
    getOrSet: resolveGetOrSetDefaults(options.getOrSet),
    telemetry: options.telemetry ?? {},
    production,
    debug: env.DEBUG !== undefined && /^(true|1|yes|on)$/i.test(env.DEBUG)
  }
}
