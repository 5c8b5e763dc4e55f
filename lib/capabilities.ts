// What the Redis behind the cache lets it do, found out once the connection is first ready. A
// managed or locked-down Redis may refuse scripting (an ACL without @scripting, EVAL renamed
// away), Pub/Sub on the invalidation channel (ACL channel rules) or INFO; each refusal disables
// a feature, and the operator should hear about it once, by name, at start rather than as a
// stream of failed commands. Nothing here fails or delays registration: the probe runs in the
// background, and a probe that cannot ask (the connection dropped) asks again on the next ready.
import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { isReplyError, isUnavailableReply } from './stores/guarded'
import type { RedisClient } from './stores/redis'

export type Capability = 'scripting' | 'pubsub' | 'info'

/** What each missing capability disables, as the warning says it. */
export const DISABLES: Readonly<Record<Capability, string>> = {
  scripting: 'writes, rate-limit windows and lock releases go command by command: a write overtaken by another instance\'s invalidation may be stored (it is never served), and rate limits may count a hit or two past a window\'s start',
  pubsub: 'the local tier is bypassed',
  info: 'info() and the server figures of the statistics report null'
}

// Published to the invalidation channel to learn whether we may: a heartbeat from an origin no
// instance has, which every listener ignores (bus/messages.ts).
const PROBE_MESSAGE = JSON.stringify({ origin: 'capability-probe', heartbeat: 0 })

/** The server commands go to: the client itself, or on a Cluster one master (all share an ACL). */
function probeNode (client: RedisClient): Redis {
  if (!client.isCluster) return client as Redis
  const [master] = (client as Cluster).nodes('master')
  // The Cluster said ready, so it knows its masters; without one, the next ready asks again.
  /* c8 ignore next */
  if (master === undefined) throw new Error('no Cluster master to probe')
  return master
}

/**
 * Whether the server refuses what `check` sends: an answer that is an error, other than one
 * that only says the server cannot serve now (loading, demoted, busy, out of memory). Throws
 * when there was no answer, so the probe can ask again later.
 */
async function refuses (check: () => Promise<unknown>): Promise<boolean> {
  try {
    await check()
    return false
  } catch (err) {
    if (!isReplyError(err)) throw err
    return !isUnavailableReply(err) && !/^(OOM|BUSY)\b/.test(err.message)
  }
}

/**
 * Asks the server for each capability; the names of those it refuses. `channel` is the
 * invalidation channel when the local tier needs Pub/Sub, else undefined (nothing to ask).
 */
export async function probeCapabilities (client: RedisClient, channel: string | undefined): Promise<Capability[]> {
  const node = probeNode(client)
  const checks: Array<[Capability, () => Promise<unknown>]> = [
    // An ACL without @scripting answers NOPERM, a renamed command "unknown command".
    ['scripting', () => node.eval('return 1', 0)],
    ['info', () => node.info('server')]
  ]
  // ACL channel rules (`resetchannels`, `&pattern`) are checked on PUBLISH as on SUBSCRIBE.
  if (channel !== undefined) checks.push(['pubsub', () => node.publish(channel, PROBE_MESSAGE)])
  const refused = await Promise.all(checks.map(async ([name, check]) => (await refuses(check)) ? name : undefined))
  return refused.filter((name) => name !== undefined)
}

export interface CapabilityWatch {
  client: RedisClient
  /** Told when scripting is refused. */
  store: { scripting: boolean }
  /** Where the missing capabilities are recorded (the stack's list). */
  missing: string[]
  channel: string | undefined
  log: FastifyBaseLogger
}

/**
 * Probes once the connection is ready (now, or at its first ready), records what is missing
 * and warns once.
 */
export function watchCapabilities ({ client, store, missing, channel, log }: CapabilityWatch): void {
  const ask = (): void => {
    // One probe at a time: no listening while this one is out.
    client.off('ready', ask)
    probeCapabilities(client, channel).then((names) => {
      missing.push(...names)
      if (names.includes('scripting')) store.scripting = false
      if (names.length > 0) {
        const what = names.map((name) => `${name} (${DISABLES[name]})`).join('; ')
        log.warn({ missingCapabilities: names }, `fastify-redis-cache: missing Redis capabilities: ${what}`)
      } else {
        log.debug('fastify-redis-cache: Redis allows every capability the cache uses')
      }
    }, (err: unknown) => {
      // No answer (the connection dropped or hung meanwhile): the next ready asks again.
      client.on('ready', ask)
      log.debug({ err }, 'fastify-redis-cache: no answer to the capability probe; asking again on the next connection')
    })
  }
  client.on('ready', ask)
  if (client.status === 'ready') ask()
}
