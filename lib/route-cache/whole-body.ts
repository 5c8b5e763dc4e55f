// Reading a stream body (what @fastify/reply-from sends) whole so it can be stored, up to a
// bound: a larger one is passed on as it comes, unstored, and the response never fails for it.
import { PassThrough, type Readable } from 'node:stream'

export function isStream (payload: unknown): payload is Readable {
  return typeof payload === 'object' && payload !== null && typeof (payload as Readable).pipe === 'function'
}

/**
 * The stream's bytes when they are at most `maxBytes`; otherwise a stream that gives the bytes
 * read so far and then the rest. Rejects when the stream fails before either.
 */
export function readWhole (stream: Readable, maxBytes: number): Promise<Buffer | Readable> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    const onData = (chunk: Buffer | string): void => {
      const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)
      chunks.push(bytes)
      size += bytes.length
      if (size <= maxBytes) return
      stream.off('data', onData)
      stream.off('end', onEnd)
      stream.off('error', reject)
      stream.pause()
      const rest = new PassThrough()
      for (const part of chunks) rest.write(part)
      stream.on('error', (err) => rest.destroy(err))
      stream.pipe(rest)
      resolve(rest)
    }
    const onEnd = (): void => resolve(Buffer.concat(chunks, size))
    stream.on('data', onData)
    stream.once('end', onEnd)
    stream.once('error', reject)
  })
}

/** Lets go of a stream whose body is not sent (a 304's), errors included. */
export function discard (stream: Readable): void {
  stream.on('error', () => {})
  stream.destroy()
}
