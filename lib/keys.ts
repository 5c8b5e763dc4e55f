// How cache keys are validated and laid out in Redis.
//
//   ${prefix}:${namespace}:${key}   an entry
//   ${prefix}:#ti:${tag}            the entry keys carrying a tag, by expiry (a sorted set)
//   ${prefix}:#ts:${tag}            when the tag was last invalidated (ms since the epoch)
//   ${prefix}:#ns:${namespace}      when the namespace was last cleared
//   ${prefix}:#all                  when everything was last cleared
//   ${prefix}:#del:${entry key}     when an entry was deleted, for as long as work may run
//   ${prefix}:#rl:${id}             a rate-limit window counter
//   ${prefix}:#lock:...             single-flight locks
//
// Namespaces may not contain ':' or '#', so no namespace can reach into another one or into the
// reserved `#` spaces, and a key, whatever it holds, is only ever used literally (never as a
// SCAN pattern), so it cannot act as a pattern or leave its namespace.
import { createHash } from 'node:crypto'
import { NAME_PATTERN } from '../types/options'
import { CacheKeyError, invalidValue } from './errors'

export const NAMESPACE_PATTERN = new RegExp(NAME_PATTERN)
export const MAX_KEY_BYTES = 1024
export const DEFAULT_NAMESPACE = 'default'

export function validateKey (key: unknown): string {
  if (typeof key !== 'string' || key.length === 0) {
    throw new CacheKeyError(`Cache key must be a non-empty string (got ${describe(key)})`)
  }
  // Cheap check first: a string of n UTF-16 units has at most 3n UTF-8 bytes.
  if (key.length * 3 > MAX_KEY_BYTES && Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw new CacheKeyError(`Cache key must be at most ${MAX_KEY_BYTES} bytes (got ${Buffer.byteLength(key)})`)
  }
  // A lone surrogate has no UTF-8 form: two different ones would become the same Redis key.
  if (!key.isWellFormed()) {
    throw new CacheKeyError('Cache key must be well-formed Unicode (it has a lone surrogate)')
  }
  return key
}

export function validateNamespace (namespace: unknown, what = 'namespace'): string {
  if (typeof namespace !== 'string' || !NAMESPACE_PATTERN.test(namespace) || namespace.length > 128) {
    throw new CacheKeyError(`Cache ${what} must match ${NAMESPACE_PATTERN.source} and be at most 128 characters (got ${describe(namespace)})`)
  }
  return namespace
}

export function validateKeys (keys: unknown): string[] {
  const list = Array.isArray(keys) ? keys : [keys]
  for (const key of list) validateKey(key)
  return list as string[]
}

/** An entry carries its tags (envelope.ts): with two bytes of length each, in 64 KiB. */
const MAX_TAGS_BYTES = 0xffff

export function validateTags (tags: unknown): string[] {
  const list = Array.isArray(tags) ? tags : [tags]
  for (const tag of list) {
    if (typeof tag !== 'string' || tag.length === 0 || Buffer.byteLength(tag) > MAX_KEY_BYTES) {
      throw new CacheKeyError(`Cache tag must be a non-empty string of at most ${MAX_KEY_BYTES} bytes (got ${describe(tag)})`)
    }
  }
  return list as string[]
}

/** The tags an entry is stored with: valid tags that fit in its envelope. */
export function validateEntryTags (tags: unknown): string[] {
  const list = validateTags(tags)
  let total = 0
  for (const tag of list) total += 2 + Buffer.byteLength(tag)
  if (total > MAX_TAGS_BYTES) throw new CacheKeyError(`An entry's tags may take at most ${MAX_TAGS_BYTES} bytes with their lengths (got ${total})`)
  return list
}

/** Positive whole seconds; a RangeError otherwise (a programmer error, always thrown). */
export function validateSeconds (value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) {
    throw invalidValue(`${what} must be a positive whole number of seconds (got ${describe(value)})`)
  }
  return value
}

/** Whole seconds, 0 or more, 0 when unset: the stale-serving windows. */
export function validateStaleSeconds (value: unknown, what: string): number {
  if (value === undefined) return 0
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw invalidValue(`${what} must be a whole number of seconds, 0 or more (got ${describe(value)})`)
  }
  return value
}

/**
 * A key made of parts: each part's backslashes and colons are escaped with a backslash and the
 * parts are joined with `:`, so different parts never make the same key (`['item:5', 'reviews']`
 * is `item\:5:reviews`, `['item', '5', 'reviews']` is `item:5:reviews`).
 */
export function keyFromParts (parts: readonly unknown[]): string {
  if (parts.length === 0) throw new CacheKeyError('Cache key parts must not be empty')
  let key = ''
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]
    if (typeof part !== 'string') throw new CacheKeyError(`Cache key parts must be strings (got ${describe(part)})`)
    // Most parts have nothing to escape: two scans cost less than a regex replace.
    const escaped = part.includes(':') || part.includes('\\') ? part.replace(/[\\:]/g, '\\$&') : part
    key += i === 0 ? escaped : ':' + escaped
  }
  return key
}

/** A key given as a string or as parts, validated. */
export function toKey (key: unknown): string {
  return validateKey(Array.isArray(key) ? keyFromParts(key) : key)
}

/** Escapes a literal for use inside a Redis glob pattern (SCAN MATCH). */
export function escapeGlob (literal: string): string {
  return literal.replace(/[*?[\]\\^-]/g, '\\$&')
}

/**
 * The default key of a cached route: the path plus the query with its parameters sorted by name
 * (stable, so repeated parameters keep their order), so `?a=1&b=2` and `?b=2&a=1` share an entry.
 */
export function defaultRouteKey (url: string): string {
  const question = url.indexOf('?')
  if (question === -1) return url
  const params = url.slice(question + 1).split('&').filter((param) => param !== '')
  if (params.length === 0) return url.slice(0, question)
  if (params.length > 1) params.sort(byParameterName)
  return `${url.slice(0, question)}?${params.join('&')}`
}

function byParameterName (a: string, b: string): number {
  const nameA = a.split('=', 1)[0]
  const nameB = b.split('=', 1)[0]
  return nameA < nameB ? -1 : nameA > nameB ? 1 : 0
}

/**
 * A key built from request data, kept within the key size limit: an overlong one (a hostile
 * query string, say) is replaced by its digest, marked so it cannot equal a real path.
 */
export function boundedKey (key: string): string {
  if (key.length * 3 <= MAX_KEY_BYTES || Buffer.byteLength(key) <= MAX_KEY_BYTES) return key
  return `#sha256:${createHash('sha256').update(key).digest('hex')}`
}

export class KeyLayout {
  readonly prefix: string
  private readonly tagPrefix: string
  private readonly rateLimitPrefix: string
  readonly lockPrefix: string

  /** Invalidation stamps that must outlive a clear of everything (see stores/redis-writes.ts). */
  readonly clearStampPrefix: string

  constructor (prefix: string) {
    this.prefix = prefix
    this.tagPrefix = `${prefix}:#ti:`
    this.rateLimitPrefix = `${prefix}:#rl:`
    this.lockPrefix = `${prefix}:#lock:`
    this.clearStampPrefix = `${prefix}:#ns:`
  }

  entry (key: string, namespace: string): string {
    return `${this.prefix}:${namespace}:${key}`
  }

  /** A tag's index: the entry keys carrying it. */
  tag (tag: string): string {
    return this.tagPrefix + tag
  }

  tagStamp (tag: string): string {
    return `${this.prefix}:#ts:${tag}`
  }

  /** The stamp of a cleared namespace, or, without one, of a clear of everything. */
  clearStamp (namespace?: string): string {
    return namespace === undefined ? `${this.prefix}:#all` : this.clearStampPrefix + namespace
  }

  tombstone (fullKey: string): string {
    return `${this.prefix}:#del:${fullKey}`
  }

  /** The namespace of an entry's full key. */
  namespaceOf (fullKey: string): string {
    const start = this.prefix.length + 1
    return fullKey.slice(start, fullKey.indexOf(':', start))
  }

  rateLimit (id: string): string {
    return this.rateLimitPrefix + id
  }

  /** The SCAN pattern of one namespace, or of everything under the prefix. */
  pattern (namespace?: string): string {
    return namespace === undefined
      ? `${escapeGlob(this.prefix)}:*`
      : `${escapeGlob(this.prefix)}:${escapeGlob(namespace)}:*`
  }
}

function describe (value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}...` : value)
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value)
  return typeof value
}
