// Revalidating a stale entry instead of fetching it again (RFC 9111 4.3): the handler sees the
// entry's validators as If-None-Match / If-Modified-Since, and a 304 from it refreshes the entry:
// its headers updated from the 304, its body the stored one. The client never sees that 304
// unless its own conditional headers match.
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { HttpEntry } from './http-entry'
import type { ClientConditionals, RequestState } from './state'

/** Puts the stale entry's validators on the request the handler sees, if it has any. */
export function askToRevalidate (request: FastifyRequest, state: RequestState, entry: HttpEntry): void {
  const etag = entry.policy?.originEtag === true ? first(entry.headers.etag) : undefined
  const lastModified = first(entry.headers['last-modified'])
  if (etag === undefined && lastModified === undefined) return
  // A second read of the same entry (the local tier, then the store) keeps the client's values.
  state.revalidation ??= { ifNoneMatch: request.headers['if-none-match'], ifModifiedSince: request.headers['if-modified-since'] }
  setOrDelete(request, 'if-none-match', etag)
  setOrDelete(request, 'if-modified-since', lastModified)
}

/** Gives the request back the conditional headers its client sent. */
export function restoreConditionals (request: FastifyRequest, sent: ClientConditionals): void {
  setOrDelete(request, 'if-none-match', sent.ifNoneMatch)
  setOrDelete(request, 'if-modified-since', sent.ifModifiedSince)
}

/**
 * Turns the handler's 304 into the stored response freshened by it (RFC 9111 4.3.4): the stored
 * status and body, the stored headers unless the 304 carries a new value. Returns the body, which
 * then goes on as if the handler had sent it (stored, answered).
 */
export function freshened (reply: FastifyReply, entry: HttpEntry, body: Buffer): Buffer {
  reply.code(entry.status)
  // The 304's framing is not the body's.
  reply.removeHeader('content-length')
  reply.removeHeader('transfer-encoding')
  for (const name of entry.headerNames) {
    if (!reply.hasHeader(name)) reply.header(name, entry.headers[name])
  }
  return body
}

function first (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

function setOrDelete (request: FastifyRequest, name: string, value: string | undefined): void {
  if (value === undefined) delete request.headers[name]
  else request.headers[name] = value
}
