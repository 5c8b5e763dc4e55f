// What instances tell each other on the invalidation channel: the keys that changed, a prefix
// under which everything changed (a cleared namespace), or, naming neither, everything.
// Anything unreadable counts as "everything": dropping too much is safe, keeping too much is not.
//
// Besides invalidations, each instance sends itself heartbeats on the channel, to prove that its
// subscription still delivers (bus/heartbeat.ts). A heartbeat names no keys and no prefix but a
// number; other instances ignore it. Only a well-formed one is harmless: a malformed one could be
// anything, so it flushes like any unreadable message.

export interface InvalidationMessage {
  /** The instance that sent it, which has already applied it. */
  origin: string
  keys?: string[]
  prefix?: string
  /** A heartbeat's number; then the message names nothing else. */
  heartbeat?: number
}

export function encodeMessage (message: InvalidationMessage): string {
  return JSON.stringify(message)
}

/** The message, or one that names nothing (a flush) when the text cannot be read. */
export function decodeMessage (text: string): InvalidationMessage {
  let message: unknown = null
  try {
    message = JSON.parse(text)
  } catch {}
  const { origin, keys, prefix, heartbeat } = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>
  const decoded: InvalidationMessage = {
    origin: typeof origin === 'string' ? origin : '',
    keys: Array.isArray(keys) && keys.every((key) => typeof key === 'string') ? keys as string[] : undefined,
    prefix: typeof prefix === 'string' ? prefix : undefined
  }
  // A message that also carries keys or a prefix, even unreadable ones, is no heartbeat.
  if (keys === undefined && prefix === undefined && Number.isSafeInteger(heartbeat)) {
    decoded.heartbeat = heartbeat as number
  }
  return decoded
}
