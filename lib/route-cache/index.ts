// Route-level caching through `config.cache`: whole GET responses stored in the cache and
// answered in `onRequest` without running the handler, and busts after successful mutations.
//
// Everything a route needs is compiled once in `onRoute`; routes without `config.cache` get no
// hook at all. The hit path is one store read and a send of the stored bytes: headers and body
// come from one value, and the body is never parsed or re-serialized.
import type { FastifyInstance, RouteOptions } from 'fastify'
import type { CacheCore } from '../cache/core'
import { makeOnRequest } from './answer'
import { makeBust } from './bust'
import { compileBust, compileRoute } from './compile'
import { type CacheBusting, RouteCache } from './route-cache'
import { kState } from './state'
import { makeOnSend } from './store'

export function installRouteCaching (fastify: FastifyInstance, core: CacheCore, cache: CacheBusting): void {
  const routeCache = new RouteCache(fastify, core, cache)

  fastify.decorateRequest(kState, null)

  fastify.addHook('onRoute', (routeOptions) => {
    const options = routeOptions.config?.cache
    if (options === undefined || options === false) return
    const where = `${String(routeOptions.method)} ${routeOptions.url}`
    const route = compileRoute(options, where, core)
    const methods = [routeOptions.method].flat()
    if (methods.includes('GET') || methods.includes('HEAD')) {
      addHook(routeOptions, 'onRequest', makeOnRequest(routeCache, route))
      addHook(routeOptions, 'onSend', makeOnSend(routeCache, route))
    }
    if (options.bust !== undefined) {
      addHook(routeOptions, 'onSend', makeBust(routeCache, compileBust(options.bust, route.namespace, where)))
    }
  })
}

type HookName = 'onRequest' | 'onSend'

/** Appends a route-level hook without mutating arrays Fastify shares with the HEAD route. */
function addHook<T> (routeOptions: RouteOptions, name: HookName, hook: T): void {
  const existing = routeOptions[name] as T | T[] | undefined
  const hooks = existing === undefined ? [] : Array.isArray(existing) ? existing : [existing]
  ;(routeOptions as unknown as Record<HookName, T[]>)[name] = [...hooks, hook]
}
