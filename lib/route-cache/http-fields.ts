// Parsing the response fields a shared cache decides by (RFC 9111): Cache-Control, Age and the
// HTTP dates. Run once when a response is stored, never per hit.

/** Cache-Control directives by lower-cased name: the value (unquoted), or true without one. */
export type Directives = Map<string, string | true>

const TOKEN = /[!#$%&'*+.^_`|~0-9A-Za-z-]/

/**
 * Parses Cache-Control lines into directives. The first occurrence of a directive wins (RFC 9111
 * 4.2.1); a quoted string is one value, commas inside it included, so `x="max-age=1"` is no
 * max-age.
 */
export function parseCacheControl (value: string | number | string[] | undefined): Directives {
  const directives: Directives = new Map()
  if (value === undefined) return directives
  const text = Array.isArray(value) ? value.join(',') : String(value)
  let at = 0
  while (at < text.length) {
    while (at < text.length && (text[at] === ',' || text[at] === ' ' || text[at] === '\t')) at++
    let name = ''
    while (at < text.length && TOKEN.test(text[at])) name += text[at++]
    let argument: string | true = true
    if (text[at] === '=') {
      at++
      argument = ''
      if (text[at] === '"') {
        at++
        while (at < text.length && text[at] !== '"') {
          if (text[at] === '\\') at++
          argument += text[at++] ?? ''
        }
        at++
      } else {
        while (at < text.length && text[at] !== ',' && text[at] !== ' ' && text[at] !== '\t') argument += text[at++]
      }
    }
    // Anything else up to the next comma is not part of a valid directive.
    while (at < text.length && text[at] !== ',') {
      if (text[at] !== ' ' && text[at] !== '\t') name = ''
      at++
    }
    name = name.toLowerCase()
    if (name !== '' && !directives.has(name)) directives.set(name, argument)
  }
  return directives
}

/**
 * A delta-seconds directive (max-age, s-maxage, stale-while-revalidate...): its seconds, 0 for a
 * value that is not one (a cache must then treat the response as stale), undefined when absent.
 */
export function deltaSeconds (directives: Directives, name: string): number | undefined {
  const value = directives.get(name)
  if (value === undefined) return undefined
  if (value === true || !/^\d+$/.test(value)) return 0
  return Number(value)
}

/**
 * The Age a response carried (RFC 9111 5.1): the first value of the first line, when it is a
 * non-negative integer; anything else is ignored (0).
 */
export function parseAge (value: string | number | string[] | undefined): number {
  if (value === undefined) return 0
  const first = String(Array.isArray(value) ? value[0] : value).split(',')[0].trim()
  return /^\d+$/.test(first) ? Number(first) : 0
}

const IMF_FIXDATE = /^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/

/**
 * An HTTP date in the preferred format (RFC 9110 5.6.7, IMF-fixdate), in ms since the epoch;
 * undefined for anything else. The obsolete formats are read as invalid: for Expires that means
 * already expired, the safe reading.
 */
export function parseHttpDate (value: string | number | string[] | undefined): number | undefined {
  if (value === undefined) return undefined
  const text = String(Array.isArray(value) ? value[0] : value)
  if (!IMF_FIXDATE.test(text)) return undefined
  const time = Date.parse(text)
  return Number.isNaN(time) ? undefined : time
}

const SF_KEY = /^[a-z*][a-z0-9_.*-]*$/
const SF_ITEM = /^(?:-?\d{1,15}(?:\.\d{1,3})?|"(?:[^"\\]|\\["\\])*"|[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*|\?[01]|:[A-Za-z0-9+/=]*:)$/

/**
 * CDN-Cache-Control (RFC 9213), a Structured Field dictionary, as directives; undefined when absent
 * or invalid, and then it is ignored as a whole (RFC 9213 2.1), so is a max-age that is not an
 * integer.
 */
export function parseTargetedCacheControl (value: string | number | string[] | undefined): Directives | undefined {
  if (value === undefined) return undefined
  const directives: Directives = new Map()
  for (const raw of splitMembers(Array.isArray(value) ? value.join(',') : String(value))) {
    const member = raw.replace(/^[ \t]+|[ \t]+$/g, '').split(';')[0]
    const equals = member.indexOf('=')
    const key = equals === -1 ? member : member.slice(0, equals)
    const item = equals === -1 ? '?1' : member.slice(equals + 1)
    if (!SF_KEY.test(key) || !SF_ITEM.test(item)) return undefined
    if (key === 'max-age' && !/^\d+$/.test(item)) return undefined
    // The last member of a name wins in a dictionary.
    directives.set(key, item === '?1' ? true : item)
  }
  return directives
}

/** A dictionary's members: split at commas outside quoted strings. */
function splitMembers (text: string): string[] {
  const members: string[] = []
  let current = ''
  let quoted = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"' && text[i - 1] !== '\\') quoted = !quoted
    if (c === ',' && !quoted) {
      members.push(current)
      current = ''
    } else {
      current += c
    }
  }
  members.push(current)
  return members
}
