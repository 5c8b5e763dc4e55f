// Routes registered where the plugin cannot see them (before it, in its scope or a parent's)
// never had their `config.cache` compiled: they are served uncached. Fastify gives no list of
// the routes registered earlier, but hooks added now reach them, so the first request on each
// such route says so, once, naming it. When no route was registered before the plugin (the usual
// order), there is nothing to look for and no hook: requests pay nothing for the check.
import type { FastifyInstance, onRequestHookHandler } from 'fastify'

/** Routes compiled in onRoute, by `METHOD url`. */
export type SeenRoutes = Set<string>

export function warnOfUnseenRoutes (fastify: FastifyInstance, seen: SeenRoutes): void {
  // Fastify prints an empty router as `(empty tree)`.
  if (!fastify.printRoutes().includes('/')) return
  // A route's config object is the same on every request: each is looked at once.
  const checked = new WeakSet<object>()
  const check: onRequestHookHandler = function checkRouteSeen (request, _reply, done) {
    const config = request.routeOptions.config as { cache?: unknown, method?: string, url?: string }
    if (!checked.has(config)) {
      checked.add(config)
      if (config.cache !== undefined && config.cache !== false && !seen.has(`${config.method} ${config.url}`)) {
        request.log.warn({ plugin: 'fastify-redis-cache', route: `${config.method} ${config.url}` },
          `fastify-redis-cache: ${config.method} ${config.url} has config.cache but was registered before the plugin, where it cannot see it: it is not cached. Register the plugin first.`)
      }
    }
    done()
  }
  fastify.addHook('onRequest', check)
}
