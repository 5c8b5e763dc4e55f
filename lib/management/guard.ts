// Where a management request may come from. Both checks answer 403 CACHE_FORBIDDEN.
//
// Loopback only: routes with neither a token nor a preHandler (and not made public) answer only
// clients on this machine. The TCP peer is judged, never `request.ip`: under `trustProxy` that
// comes from X-Forwarded-For, which any client writes as it likes. Two ways around a peer check
// are closed as well: a reverse proxy on the same host makes every client look local (it says
// so in Forwarded / X-Forwarded-For), and DNS rebinding points a site's own name at 127.0.0.1
// so that a page there reads the routes as "same origin" (its Host is then that site's name).
//
// Same origin for state changes: a page on another site can make a browser send `DELETE /clear`
// or `GET /reset-stats`, with the user's cookies (a preHandler may trust them) and from inside
// the loopback network. Browsers say where a request comes from in `Sec-Fetch-Site` and
// `Origin`; a request without them (curl, a server) is no browser's cross-site request.
import { BlockList, isIP } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { cacheErrorReply } from '../error-handler'
import { CacheForbiddenError } from '../errors'

// IPv4-mapped IPv6 addresses (::ffff:127.0.0.1, as a dual-stack server sees IPv4 peers) are
// matched against the IPv4 subnet by BlockList itself.
const LOOPBACK = new BlockList()
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4')
LOOPBACK.addAddress('::1', 'ipv6')

/** Whether `address` (a socket's remoteAddress, or an IP literal) is on the loopback interface. */
export function isLoopback (address: string | undefined): boolean {
  if (address === undefined) return false
  const family = isIP(address)
  if (family === 0) return false
  return LOOPBACK.check(address, family === 4 ? 'ipv4' : 'ipv6')
}

/** Whether a Host header names this machine's loopback: localhost, *.localhost, 127.x.x.x, [::1]. */
export function isLoopbackHost (host: string): boolean {
  const name = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d*$/, '')
  const lower = name.toLowerCase()
  // *.localhost never leaves the machine (RFC 6761): browsers resolve it to loopback themselves.
  return lower === 'localhost' || lower.endsWith('.localhost') || isLoopback(lower)
}

const OPEN_THEM = 'set routes.token (or CACHE_ADMIN_TOKEN), routes.preHandler or routes.public: true to open them'

/** Why an unprotected management route refuses this request, or undefined when it may answer. */
export function loopbackRefusal (request: FastifyRequest): string | undefined {
  if (!isLoopback(request.socket.remoteAddress)) {
    return `the management routes answer loopback clients only; ${OPEN_THEM}`
  }
  const { headers } = request
  if (headers.forwarded !== undefined || headers['x-forwarded-for'] !== undefined) {
    return `the management routes answer loopback clients only, not requests relayed by a proxy; ${OPEN_THEM}`
  }
  const host = headers.host ?? headers[':authority']
  if (typeof host === 'string' && !isLoopbackHost(host)) {
    return `the management routes answer requests to localhost only, not to ${JSON.stringify(host)}; ${OPEN_THEM}`
  }
  return undefined
}

/** Whether an `Origin` header names the host the request was sent to. */
export function sameOrigin (origin: string, host: string): boolean {
  let from: URL
  let own: URL
  try {
    from = new URL(origin)
    // Parsed with the origin's scheme, so a default port written out in Host (`:443`) still
    // compares equal to an Origin without it.
    own = new URL(`${from.protocol}//${host}`)
  } catch {
    // `null` (a sandboxed page, a redirect across sites, a file), or no URL at all.
    return false
  }
  const web = from.protocol === 'http:' || from.protocol === 'https:'
  // A Host that is more than host[:port] (user info, a path) names nothing to compare.
  return web && own.href === `${own.protocol}//${own.host}/` && own.host === from.host
}

/** Why a state-changing route refuses this request as cross-site, or undefined when it may run. */
export function crossSiteRefusal (request: FastifyRequest): string | undefined {
  const site = request.headers['sec-fetch-site']
  if (site !== undefined && !['same-origin', 'none'].includes(String(site).trim().toLowerCase())) {
    return `a cross-site request cannot change the cache (Sec-Fetch-Site: ${String(site)})`
  }
  const origin = request.headers.origin
  // `request.host` follows X-Forwarded-Host only under `trustProxy`, as the app's own routes do.
  if (origin !== undefined && !sameOrigin(origin, request.host)) {
    return `a cross-site request cannot change the cache (Origin: ${origin})`
  }
  return undefined
}

async function refuse (request: FastifyRequest, reply: FastifyReply, message: string): Promise<FastifyReply> {
  request.log.info({ url: request.url, remoteAddress: request.socket.remoteAddress }, `fastify-redis-cache: management route refused: ${message}`)
  return reply.code(403).send(cacheErrorReply(new CacheForbiddenError(message)))
}

/** Refuses, in `onRequest`, every request of this scope that `loopbackRefusal` turns down. */
export function addLoopbackCheck (fastify: FastifyInstance): void {
  fastify.addHook('onRequest', async (request, reply) => {
    const refusal = loopbackRefusal(request)
    if (refusal !== undefined) return refuse(request, reply, refusal)
  })
}

/** The route-level `onRequest` hook of the state-changing routes. */
export async function refuseCrossSite (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
  const refusal = crossSiteRefusal(request)
  if (refusal !== undefined) return refuse(request, reply, refusal)
  return undefined
}
