// Options checked against their TypeBox schemas: the first problem, told with the option's path
// (`config.cache.ttl`, `compression.threshold`) and, for a name the schema does not know, the
// valid name closest to it.
import { KindGuard, type TObject, type TSchema, type TUnion } from '@sinclair/typebox'
import { ValueErrorType } from '@sinclair/typebox/errors'
import { Value } from '@sinclair/typebox/value'
import { closest } from './suggest'

/**
 * The first problem of `value`, as `option <path> <what is wrong>` or `unknown option <path> (did
 * you mean <name>?)`; undefined when it fits. `prefix` starts every path (`config.cache.`).
 */
export function schemaProblem (schema: TSchema, value: unknown, prefix = ''): string | undefined {
  const first = Value.Errors(schema, value).First()
  if (first === undefined) return undefined
  const path = prefix + first.path.slice(1).replace(/\//g, '.')
  // `false or an object`: an object is told what is wrong inside it.
  const member = first.type === ValueErrorType.Union ? objectMember(first.schema as TUnion, first.value) : undefined
  if (member !== undefined) return schemaProblem(member, first.value, `${path}.`)
  if (first.type === ValueErrorType.ObjectAdditionalProperties) {
    const name = path.slice(path.lastIndexOf('.') + 1)
    const known = Object.keys((first.schema as TObject).properties)
    const suggestion = closest(name, known)
    return `unknown option ${path} (${suggestion === undefined ? `valid: ${known.join(', ')}` : `did you mean ${suggestion}?`})`
  }
  // Lower-case the first letter only: the message may quote a pattern, which must stay intact.
  const message = first.message.charAt(0).toLowerCase() + first.message.slice(1)
  return `option ${path} ${message} (got ${JSON.stringify(first.value)})`
}

/** The union's object schema, when the value is an object (a union holds one at most here). */
function objectMember (union: TUnion, value: unknown): TObject | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  return union.anyOf.find((schema) => KindGuard.IsObject(schema))
}
