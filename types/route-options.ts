// A route's `config.cache`, defined once: the TypeBox schema below validates it when the route is
// registered (unknown names included), and the public type is derived from it. To add a route
// option, add it to RouteCacheOptionsSchema (with its doc comment); a callback option also gets
// its typed signature in RouteCacheOptions below.
import type { FastifyReply, FastifyRequest, RouteGenericInterface } from 'fastify'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { CredentialsSchema } from './options'

/** A function, as far as validation goes; its signature is typed in RouteCacheOptions. */
const Callback = Type.Function([], Type.Unknown())
const Strings = Type.Array(Type.String())
const ValueOrCallback = <T extends TSchema>(schema: T) => Type.Optional(Type.Union([schema, Callback]))

export const RouteCacheBustOptionsSchema = Type.Object({
  /** The namespace busted; default the route's. Alone, it clears the namespace. */
  namespace: Type.Optional(Type.String()),
  /** Keys deleted: a list, or a function of the request and the reply. */
  keys: ValueOrCallback(Type.Array(Type.Union([Type.String(), Strings]))),
  /** Tags invalidated: a list, or a function of the request and the reply. */
  tags: ValueOrCallback(Strings)
}, { additionalProperties: false })

export const RouteCacheOptionsSchema = Type.Object({
  /** Seconds; default `defaultTtl`, clamped to `maxTtl`. */
  ttl: Type.Optional(Type.Number()),
  namespace: Type.Optional(Type.String()),
  /** The entry's key; default: the host, the path, the sorted query and the route's constraints. */
  key: ValueOrCallback(Type.Union([Type.String(), Strings])),
  /**
   * Gzip bodies over `compression.threshold`: `true` always, `false` never; unset, when most of
   * the route's recent clients send `Accept-Encoding: gzip` (so the common hit needs no zlib).
   */
  compress: Type.Optional(Type.Boolean()),
  /** Tags of the stored entry: a list, or a function of the request. */
  tags: ValueOrCallback(Strings),
  /** Request headers whose values split the entry. */
  vary: Type.Optional(Strings),
  /** Seconds past `ttl` during which the old entry is served while it is refreshed. */
  staleWhileRevalidate: Type.Optional(Type.Number()),
  /** Seconds past `ttl` during which the old entry is served when the handler fails. */
  staleIfError: Type.Optional(Type.Number()),
  /** Statuses that are stored. Default `[200]`. */
  statuses: Type.Optional(Type.Array(Type.Number())),
  /**
   * Requests with `Cookie` or `Authorization`: `'bypass'` (default) passes them to the handler,
   * `'shared'` says the answer does not depend on them, `'per-user'` that `key` includes the user.
   */
  credentials: Type.Optional(CredentialsSchema),
  /** @deprecated `credentials: 'per-user'` says the same. */
  allowAuthorization: Type.Optional(Type.Boolean()),
  /**
   * Answer hits in `onRequest`, before every other hook: authentication and authorization in
   * `preValidation` or `preHandler` hooks do not run on hits. Faster; only for public routes.
   */
  skipHooksOnHit: Type.Optional(Type.Boolean()),
  /** `Cache-Control: max-age` (seconds) sent to clients and CDNs; `false` sends none. */
  maxAge: Type.Optional(Type.Union([Type.Number(), Type.Literal(false)])),
  /** Invalidate after a successful (2xx) response. */
  bust: Type.Optional(RouteCacheBustOptionsSchema),
  /**
   * What decides freshness: `'route'` (default) the route's `ttl`; `'response'` the response's
   * Cache-Control, Expires and Age as a shared HTTP cache reads them (RFC 9111), the route's
   * `ttl` then only the ceiling. See docs/http-caching.md.
   */
  freshness: Type.Optional(Type.Union([Type.Literal('route'), Type.Literal('response')])),
  /**
   * A response header whose space- or comma-separated values become the entry's tags, for
   * `invalidateTags` (`Cache-Tag`, `Surrogate-Key`). Default `'cache-tag'` with
   * `freshness: 'response'`, none otherwise; `false` reads none.
   */
  tagHeader: Type.Optional(Type.Union([Type.String(), Type.Literal(false)])),
  /**
   * Fraction of `ttl` (between 0 and 1) after which a hit answers from the entry and refreshes it
   * in the background, once, so a hot entry never expires under traffic.
   */
  eagerRefresh: Type.Optional(Type.Union([Type.Number(), Type.Literal(false)])),
  /**
   * `soft`: milliseconds after which a request that found an expired entry within
   * `staleIfError` is answered from it while the handler finishes and stores its response.
   */
  timeout: Type.Optional(Type.Union([Type.Object({ soft: Type.Optional(Type.Number()) }, { additionalProperties: false }), Type.Literal(false)]))
}, { additionalProperties: false })

/**
 * The route generic the callbacks see unless told otherwise: path parameters as Fastify parses
 * them without a schema, so `req.params.id` is a string.
 */
export interface CacheRouteGeneric extends RouteGenericInterface {
  Params: Record<string, string>
}

/**
 * A callback's signature, checked bivariantly in its parameters: a function written for the
 * route's exact request type (`FastifyRequest<{ Params: { id: string } }>`) fits too.
 */
type Bivariant<Args extends unknown[], R> = { bivariance (...args: Args): R }['bivariance']

/**
 * A cache key: a string, used as it is, or its parts, joined so that different parts never make
 * the same key (`['item:5', 'reviews']` and `['item', '5', 'reviews']` are two keys).
 */
export type CacheKey = string | readonly string[]

type RequestValue<T, G extends RouteGenericInterface> = T | Bivariant<[request: FastifyRequest<G>], T>
type MutationValue<T, G extends RouteGenericInterface> = T | Bivariant<[request: FastifyRequest<G>, reply: FastifyReply<G>], T>

export interface RouteCacheBustOptions<RouteGeneric extends RouteGenericInterface = CacheRouteGeneric>
  extends Omit<Static<typeof RouteCacheBustOptionsSchema>, 'keys' | 'tags'> {
  keys?: MutationValue<CacheKey[], RouteGeneric>
  tags?: MutationValue<string[], RouteGeneric>
}

/**
 * A route's `config.cache`. The callbacks receive the request typed by `RouteGeneric`: by
 * default its path parameters are strings; `routeCache<RouteGeneric>(options)` types them
 * exactly (a schema that turns `id` into a number, say).
 */
export interface RouteCacheOptions<RouteGeneric extends RouteGenericInterface = CacheRouteGeneric>
  extends Omit<Static<typeof RouteCacheOptionsSchema>, 'key' | 'tags' | 'bust'> {
  /** The entry's key; default: the host, the path, the sorted query and the route's constraints. */
  key?: RequestValue<CacheKey, RouteGeneric>
  /** Tags of the stored entry: a list, or a function of the request. */
  tags?: RequestValue<string[], RouteGeneric>
  /** Invalidate after a successful (2xx) response. */
  bust?: RouteCacheBustOptions<RouteGeneric>
}

/** A route's `config.rateLimit`, in the shape of @fastify/rate-limit's route options. */
export const RouteRateLimitOptionsSchema = Type.Object({
  /** Requests allowed per window and client. */
  max: Type.Integer({ minimum: 1 }),
  /**
   * The window: milliseconds, or a duration such as `'1 minute'` or `'30s'`. Counted in whole
   * seconds (rounded up). Default one minute.
   */
  timeWindow: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.String()])),
  /** Who is counted: a function of the request; default the client's address (`request.ip`). */
  keyGenerator: Type.Optional(Callback),
  /** Refuse requests (503) when Redis cannot count them, instead of letting them through. */
  failClosed: Type.Optional(Type.Boolean())
}, { additionalProperties: false })

export interface RouteRateLimitOptions<RouteGeneric extends RouteGenericInterface = CacheRouteGeneric>
  extends Omit<Static<typeof RouteRateLimitOptionsSchema>, 'keyGenerator'> {
  /** Who is counted: a function of the request; default the client's address (`request.ip`). */
  keyGenerator?: Bivariant<[request: FastifyRequest<RouteGeneric>], string | number | Promise<string | number>>
}
