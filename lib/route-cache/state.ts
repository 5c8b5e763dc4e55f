// What one request on a cached route carries from the lookup hook to onSend.
import type { Flight } from '../flights'
import type { Lease } from '../lock'
import type { HttpEntry } from './http-entry'

export type Outcome = 'HIT' | 'MISS' | 'STALE' | 'BYPASS'

/** What one request on a cached route has found out so far. */
export interface RequestState {
  outcome: Outcome
  /** Answered from the cache in the lookup hook: onSend has nothing left to do. */
  answered: boolean
  /** The entry it was answered from has no content type (Fastify adds one to a Buffer). */
  untyped: boolean
  /** RFC 9211 parameters after the cache name, e.g. `fwd=uri-miss; stored`. */
  status: string
  fullKey: string
  /** The variant's field in the hash at `fullKey`, for a route with `vary`. */
  field: string | undefined
  /** `fullKey` plus the variant: what this process's flights and decoded entries go by. */
  entryId: string
  /** The expired entry kept for stale-if-error. */
  stale: HttpEntry | null
  /** Set when this request runs the handler for others waiting on the same entry. */
  flight: Flight<Buffer | null> | null
  /** The cross-instance lock this request holds while its handler runs. */
  lease: Lease | null
  /** When the handler's work began, on a miss (ms since the epoch): see invalidation/. */
  startedAt: number
  /**
   * Set while the handler revalidates the stale entry (RFC 9111 4.3.1): the conditional headers
   * the client itself sent, given back to the request once the handler has answered.
   */
  revalidation: ClientConditionals | null
  /** A Range answered from the whole response (freshness: 'response'), taken off the request. */
  range: string | undefined
  /** The route's namespace, for telemetry. */
  namespace: string
  /** When the lookup began (ms since the epoch), when telemetry is on: the decision's span. */
  lookedUpAt: number
  /** Answered from a layer in this process (the local tier, the memory store). */
  nearby: boolean
}

export interface ClientConditionals {
  ifNoneMatch: string | undefined
  ifModifiedSince: string | undefined
}

export const kState = Symbol('fastify-redis-cache.state')

declare module 'fastify' {
  interface FastifyRequest {
    [kState]: RequestState | null
  }
}

/** A request that is neither answered from nor stored in the cache; `status` says why. */
export function bypass (state: RequestState, status: string): void {
  state.outcome = 'BYPASS'
  state.status = status
}
