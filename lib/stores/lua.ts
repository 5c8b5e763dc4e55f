// Lua scripts are sent by digest (EVALSHA) and loaded on first use.
import { createHash } from 'node:crypto'

export interface LuaScript { source: string, sha: string }

export function lua (source: string): LuaScript {
  return { source, sha: createHash('sha1').update(source).digest('hex') }
}
