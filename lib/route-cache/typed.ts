// `routeCache<RouteGeneric>(options)`: a route's `config.cache` whose callbacks see the route's
// exact request type. Fastify types a route's `config` without the route's generics, so the
// augmentation can only give the callbacks a general request (string path parameters); this
// identity function carries the exact one, for parameters a schema turns into numbers, say.
import type { RouteGenericInterface } from 'fastify'
import type { RouteCacheOptions } from '../../types'

export function routeCache<RouteGeneric extends RouteGenericInterface> (options: RouteCacheOptions<RouteGeneric>): RouteCacheOptions {
  // Sound at run time: the hooks call the callbacks with the route's own request.
  return options as unknown as RouteCacheOptions
}
