// The cache manager behind `fastify.cache`: the public API. It validates what callers pass,
// applies the failure policy around the store (programmer errors always throw; store failures
// degrade to a miss, `false`, `0` unless `throwOnError`), and hands getOrSet, reading values
// back and rate limiting to the parts named after them.
import type {
  CacheInfo,
  CacheNamespaceView,
  CacheStatistics,
  FastifyCache,
  GetOrSetCallback,
  GetOrSetOptions,
  NamespaceOption,
  RateLimitOptions,
  RateLimitResult,
  SetOptions
} from '../../types'
import { KIND_VALUE, type Payload } from '../envelope'
import { isFresh } from '../freshness'
import { DEFAULT_NAMESPACE, validateEntryTags, validateKey, validateKeys, validateNamespace, validateTags } from '../keys'
import type { Resilience } from '../resilience'
import { unknownInfo } from '../stores/store'
import { NO_REPORT, type Report } from '../telemetry'
import type { CacheCore } from './core'
import { GetOrSet } from './get-or-set'
import { rateLimit } from './rate-limit'
import { ValueReader } from './value-reader'

export class CacheManager implements FastifyCache {
  /** What route caching and the management routes share with the API (see core.ts). */
  readonly core: CacheCore
  private readonly reader: ValueReader
  private readonly readThrough: GetOrSet

  /** `getOrSetDefaults`: the plugin's `getOrSet` option, resolved. */
  constructor (core: CacheCore, getOrSetDefaults: Resilience) {
    this.core = core
    this.reader = new ValueReader(core)
    this.readThrough = new GetOrSet(core, this.reader, getOrSetDefaults)
  }

  redisKey (key: string, namespace?: string): string {
    return this.core.layout.entry(validateKey(key), namespace === undefined ? DEFAULT_NAMESPACE : validateNamespace(namespace))
  }

  get<T = unknown> (key: string, opts?: NamespaceOption): Promise<T | null> {
    return this.traced('get', opts?.namespace ?? DEFAULT_NAMESPACE, key, async (report) => {
      const lookup = await this.reader.lookup(this.redisKey(key, opts?.namespace))
      // An entry past its ttl, kept only for getOrSet's stale serving, is not returned.
      const value = lookup.found && isFresh(lookup.envelope) ? lookup.value as T : null
      report.outcome = value === null ? 'miss' : 'hit'
      return value
    })
  }

  set (key: string, value: unknown, opts?: SetOptions): Promise<boolean> {
    return this.traced('set', opts?.namespace ?? DEFAULT_NAMESPACE, key, () => this.store(key, value, opts))
  }

  private async store (key: string, value: unknown, opts?: SetOptions): Promise<boolean> {
    const fullKey = this.redisKey(key, opts?.namespace)
    const ttl = this.core.resolveTtl(opts?.ttl)
    const tags = opts?.tags === undefined ? [] : validateEntryTags(opts.tags)
    if (value === undefined) return false
    // A delete that returns before this write lands wins over it, not the other way round.
    const startedAt = Date.now()
    let payload: Payload
    try {
      payload = this.core.codec.serialize(value)
    } catch (err) {
      return this.core.failures.failed(err, 'set', fullKey, false)
    }
    return this.core.write(fullKey, payload, { kind: KIND_VALUE, freshFor: ttl, ttl, compress: opts?.compress, tags, startedAt })
  }

  delete (keys: string | string[], opts?: NamespaceOption): Promise<number> {
    return this.traced('delete', opts?.namespace ?? DEFAULT_NAMESPACE, keyOf(keys), async () => {
      const fullKeys = validateKeys(keys).map((key) => this.redisKey(key, opts?.namespace))
      return this.removed(fullKeys.length === 0 ? 0 : this.core.journal.delete(fullKeys), 'delete', fullKeys[0])
    })
  }

  exists (keys: string | string[], opts?: NamespaceOption): Promise<number> {
    return this.traced('exists', opts?.namespace ?? DEFAULT_NAMESPACE, keyOf(keys), async () => {
      const fullKeys = validateKeys(keys).map((key) => this.redisKey(key, opts?.namespace))
      if (fullKeys.length === 0) return 0
      try {
        return await this.core.stack.entries.exists(fullKeys)
      } catch (err) {
        return this.core.failures.failed(err, 'exists', fullKeys[0], 0)
      }
    })
  }

  getOrSet<T, S = T> (key: string, callback: GetOrSetCallback<T, S>, opts?: GetOrSetOptions): Promise<T> {
    let fullKey: string
    try {
      fullKey = this.redisKey(key, opts?.namespace)
    } catch (err) {
      return Promise.reject(err)
    }
    // `S` is the caller's word for what the entry holds: the value a previous call stored.
    return this.readThrough.run(fullKey, opts?.namespace ?? DEFAULT_NAMESPACE, callback as unknown as GetOrSetCallback<T>, opts)
  }

  expire (key: string, seconds: number, opts?: NamespaceOption): Promise<boolean> {
    return this.traced('expire', opts?.namespace ?? DEFAULT_NAMESPACE, key, async () => {
      const fullKey = this.redisKey(key, opts?.namespace)
      const ttl = this.core.resolveTtl(seconds)
      try {
        return await this.core.stack.entries.expire(fullKey, ttl)
      } catch (err) {
        return this.core.failures.failed(err, 'expire', fullKey, false)
      }
    })
  }

  ttl (key: string, opts?: NamespaceOption): Promise<number> {
    return this.traced('ttl', opts?.namespace ?? DEFAULT_NAMESPACE, key, async () => {
      const fullKey = this.redisKey(key, opts?.namespace)
      try {
        return await this.core.stack.entries.ttl(fullKey)
      } catch (err) {
        return this.core.failures.failed(err, 'ttl', fullKey, -2)
      }
    })
  }

  clear (namespace?: string): Promise<number> {
    return this.traced('clear', namespace, undefined, () => this.clearEntries(namespace, this.core.failures.throwOnError))
  }

  /** `clear` with its own failure policy: the management route reports a failed clear as such. */
  async clearEntries (namespace: string | undefined, throwOnError: boolean): Promise<number> {
    if (namespace !== undefined) validateNamespace(namespace)
    return this.removed(this.core.journal.clear(namespace), 'clear', this.core.layout.pattern(namespace), throwOnError)
  }

  invalidateTags (tags: string | string[]): Promise<number> {
    return this.traced('invalidateTags', undefined, undefined, async () => {
      const list = validateTags(tags)
      return this.removed(this.core.journal.invalidateTags(list), 'invalidateTags', list.join(','))
    })
  }

  async ping (): Promise<boolean> {
    try {
      await this.core.stack.server.ping()
      return true
    } catch (err) {
      this.core.failures.count(err, 'ping', '')
      return false
    }
  }

  async info (): Promise<CacheInfo> {
    return this.readInfo(this.core.failures.throwOnError)
  }

  /** `info` with its own failure policy: the management routes answer while Redis is down. */
  async readInfo (throwOnError: boolean): Promise<CacheInfo> {
    try {
      return await this.core.stack.server.info()
    } catch (err) {
      return this.core.failures.failed(err, 'info', '', unknownInfo(this.core.stack.kind), throwOnError)
    }
  }

  getStatistics (): CacheStatistics {
    const { stack, stats } = this.core
    return stats.snapshot({
      store: stack.kind,
      connected: stack.connected,
      circuit: stack.circuit,
      local: stack.localReport(),
      invalidationsPending: this.core.journal.pending,
      missingCapabilities: [...stack.missingCapabilities]
    })
  }

  resetStatistics (): void {
    this.core.stats.reset()
  }

  rateLimit (id: string, opts: RateLimitOptions): Promise<RateLimitResult> {
    return rateLimit(this.core, id, opts)
  }

  namespace (name: string): CacheNamespaceView {
    validateNamespace(name)
    const ns = { namespace: name }
    return {
      name,
      get: (key) => this.get(key, ns),
      set: (key, value, opts) => this.set(key, value, { ...opts, ...ns }),
      delete: (keys) => this.delete(keys, ns),
      exists: (keys) => this.exists(keys, ns),
      getOrSet: (key, callback, opts) => this.getOrSet(key, callback, { ...opts, ...ns }),
      expire: (key, seconds) => this.expire(key, seconds, ns),
      ttl: (key) => this.ttl(key, ns),
      clear: () => this.clear(name),
      redisKey: (key) => this.redisKey(key, name)
    }
  }

  /** Runs an operation in its span when telemetry is on (`namespace` undefined: none, or all). */
  private traced<R> (op: string, namespace: string | undefined, key: string | undefined, work: (report: Report) => Promise<R>): Promise<R> {
    const telemetry = this.core.telemetry
    if (!telemetry.on) return work(NO_REPORT)
    return telemetry.operation(op, namespace, key, work)
  }

  private async removed (work: Promise<number> | number, op: string, key: string, throwOnError = this.core.failures.throwOnError): Promise<number> {
    try {
      const count = await work
      this.core.stats.deletes += count
      return count
    } catch (err) {
      return this.core.failures.failed(err, op, key, 0, throwOnError)
    }
  }
}

/** The key a span may name for an operation on one or more keys: the first. */
function keyOf (keys: unknown): string | undefined {
  const key: unknown = Array.isArray(keys) ? keys[0] : keys
  return typeof key === 'string' ? key : undefined
}
