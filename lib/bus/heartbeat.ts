// Whether the subscription to the invalidation channel still delivers. A connection that a proxy
// or a NAT drops silently stays open on this side: nothing tells us that messages stopped
// arriving. So each instance publishes heartbeats on the channel and expects to hear its own back
// within a deadline. A heartbeat is expected only while the connection to Redis is up: with Redis
// down none can be sent, and an outage alone does not count against the subscription.

/** Heartbeat intervals a heartbeat may take to come back. */
export const DEADLINE_INTERVALS = 3

// Heartbeats expected at most: the oldest are forgotten first, which cannot hide an overdue one
// (the silence is counted from the last heartbeat heard, not from those expected).
const MAX_EXPECTED = 64

export class Heartbeats {
  private readonly deadline: number
  private next = 0
  /** Heartbeats sent and not heard back yet: number to when sent (ms since the epoch). */
  private readonly expected = new Map<number, number>()
  /**
   * Since when the channel has been silent: the last heartbeat heard, or the first sent since
   * none was expected. Counting from the last one heard rather than from the oldest expected
   * saves up to an interval: the first heartbeat lost after the channel froze may have left
   * that much after the last message it delivered.
   */
  private since: number | undefined
  private lastHeard: number | undefined

  constructor (interval: number) {
    this.deadline = interval * DEADLINE_INTERVALS
  }

  /** The number of the next heartbeat to send. */
  take (): number {
    return this.next++
  }

  /** Heartbeat `beat` was sent at `at`: from now on, it is expected back. */
  sent (beat: number, at = Date.now()): void {
    this.since ??= this.lastHeard ?? at
    this.expected.set(beat, at)
    if (this.expected.size > MAX_EXPECTED) this.expected.delete(this.expected.keys().next().value as number)
  }

  /**
   * Heartbeat `beat` came back, and with it the ones before it: come late or lost (a Cluster
   * may deliver them out of order, or lose one with a node), the channel delivers.
   */
  heard (beat: number, at = Date.now()): void {
    for (const sent of this.expected.keys()) if (sent <= beat) this.expected.delete(sent)
    this.lastHeard = at
    this.since = this.expected.size === 0 ? undefined : at
  }

  /** Whether heartbeats are expected and none came back within the deadline. */
  overdue (now = Date.now()): boolean {
    return this.since !== undefined && now - this.since > this.deadline
  }

  /** Expects none of those sent: the connection that carried them, or would hear them, is gone. */
  forget (): void {
    this.expected.clear()
    this.since = this.lastHeard = undefined
  }
}
