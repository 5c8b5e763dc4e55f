// What instances tell each other on the invalidation channel: the keys that changed, a prefix
// under which everything changed (a cleared namespace), or, naming neither, everything.
// Anything unreadable counts as "everything": dropping too much is safe, keeping too much is not.

export interface InvalidationMessage {
  /** The instance that sent it, which has already applied it. */
  origin: string
  keys?: string[]
  prefix?: string
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
  const { origin, keys, prefix } = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>
  return {
    origin: typeof origin === 'string' ? origin : '',
    keys: Array.isArray(keys) && keys.every((key) => typeof key === 'string') ? keys as string[] : undefined,
    prefix: typeof prefix === 'string' ? prefix : undefined
  }
}
