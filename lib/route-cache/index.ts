// Route-level caching through `config.cache`: whole GET responses stored in the cache and
// answered once the route's hooks have run, without running the handler, and busts after
// successful mutations.
//
// Everything a route needs is compiled once in `onRoute`; routes without `config.cache` get no
// hook at all. The hit path is one store read and a send of the stored bytes: headers and body
// come from one value, and the body is never parsed or re-serialized.
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { RouteDefaults } from '../../types'
import type { CacheCore } from '../cache/core'
import { makeLookup } from './answer'
import { makeBust } from './bust'
import { compileRouteCache, type CompiledRoute } from './compile'
import { isSafeMethod, makeUnsafeInvalidation } from './invalidate-unsafe'
import { type CacheBusting, RouteCache } from './route-cache'
import { kState } from './state'
import { makeOnSend } from './store'
import { type SeenRoutes, warnOfUnseenRoutes } from './unseen'

export function installRouteCaching (fastify: FastifyInstance, core: CacheCore, cache: CacheBusting, defaults: Required<RouteDefaults>): void {
  const routeCache = new RouteCache(fastify, core, cache)
  // Routes that serve shared entries beyond the safe default, said once at start.
  const optIns: string[] = []

  fastify.decorateRequest(kState, null)
  const seen: SeenRoutes = new Set()
  warnOfUnseenRoutes(fastify, seen)

  fastify.addHook('onRoute', (routeOptions) => {
    const options = routeOptions.config?.cache
    if (options === undefined || options === false) return
    const where = `${String(routeOptions.method)} ${routeOptions.url}`
    const { route, bust } = compileRouteCache(options, { where, constraints: routeOptions.constraints, defaults }, core)
    const methods = [routeOptions.method].flat()
    seen.add(where)
    // Fastify's own HEAD route of a GET route shares its config.
    if (methods.includes('GET')) seen.add(`HEAD ${routeOptions.url}`)
    if (methods.includes('GET') || methods.includes('HEAD')) {
      // Appended last, after the route's own hooks; the application's hooks of every level run
      // before a route's.
      addHook(routeOptions, route.skipHooksOnHit ? 'onRequest' : 'preHandler', makeLookup(routeCache, route))
      addHook(routeOptions, 'onSend', makeOnSend(routeCache, route))
      // Fastify adds the HEAD route of a GET route itself: one line for the pair.
      if (methods.includes('GET')) noteOptIns(optIns, where, route)
    }
    // RFC 9111 4.4: a successful unsafe method invalidates what the route stored for its URI.
    if (route.byResponse && methods.some((method) => !isSafeMethod(method))) {
      addHook(routeOptions, 'onSend', makeUnsafeInvalidation(routeCache, route))
    }
    if (bust !== undefined) addHook(routeOptions, 'onSend', makeBust(routeCache, bust))
  })

  fastify.addHook('onReady', function announceOptIns (done) {
    if (optIns.length > 0) core.log.info({ routes: optIns }, `fastify-redis-cache: ${optIns.length} cached route(s) opted out of the safe defaults: ${optIns.join(', ')}`)
    done()
  })
}

function noteOptIns (optIns: string[], where: string, route: CompiledRoute): void {
  if (route.credentials !== 'bypass') optIns.push(`${where} (credentials: ${route.credentials})`)
  if (route.skipHooksOnHit) optIns.push(`${where} (skipHooksOnHit: hits skip the route's hooks)`)
}

type HookName = 'onRequest' | 'preHandler' | 'onSend'

/** Appends a route-level hook without mutating arrays Fastify shares with the HEAD route. */
function addHook<T> (routeOptions: RouteOptions, name: HookName, hook: T): void {
  const existing = routeOptions[name] as T | T[] | undefined
  const hooks = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
  ;(routeOptions as unknown as Record<HookName, T[]>)[name] = [...hooks, hook]
}
