// Answering a Range request from a whole stored 200 (RFC 9110 14), in `freshness: 'response'`
// mode: the cache fetches and stores the whole response once and serves any byte range from it.
import type { FastifyReply } from 'fastify'

const SINGLE_RANGE = /^bytes=(\d*)-(\d*)$/
const NO_BYTES = Buffer.alloc(0)

/**
 * The part of `body` a Range header asks for: one byte range gets a 206 with Content-Range, an
 * unsatisfiable one a 416. Several ranges, or a header that is not a byte range, get the whole
 * body (a server may ignore Range, RFC 9110 14.2).
 */
export function answerRange (reply: FastifyReply, body: Buffer, range: string): Buffer {
  const match = SINGLE_RANGE.exec(range.trim())
  if (match === null || (match[1] === '' && match[2] === '')) return body
  const size = body.length
  let start: number
  let end = size - 1
  if (match[1] === '') {
    // A suffix: the last N bytes.
    start = Math.max(0, size - Number(match[2]))
    if (Number(match[2]) === 0) start = size
  } else {
    start = Number(match[1])
    if (match[2] !== '') {
      // A last position before the first makes the range invalid: the header is ignored.
      if (Number(match[2]) < start) return body
      end = Math.min(end, Number(match[2]))
    }
  }
  if (start >= size) {
    reply.code(416)
    reply.header('content-range', `bytes */${size}`)
    return NO_BYTES
  }
  reply.code(206)
  reply.header('content-range', `bytes ${start}-${end}/${size}`)
  return body.subarray(start, end + 1)
}
