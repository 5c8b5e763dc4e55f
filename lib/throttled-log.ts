// Warnings that requests can cause, one after the other (an outage fails every command, a client
// can send any number of bad keys), are logged at most once per interval, each line saying how
// many were left out since the last: visible, but never a log line per request.

const INTERVAL_MS = 10_000

export class Throttle {
  private last = -Infinity
  private suppressed = 0
  private readonly intervalMs: number

  constructor (intervalMs = INTERVAL_MS) {
    this.intervalMs = intervalMs
  }

  /** How many were left out since the last one when this one is to be logged, else undefined. */
  pass (now = Date.now()): number | undefined {
    if (now - this.last < this.intervalMs) {
      this.suppressed++
      return undefined
    }
    const suppressed = this.suppressed
    this.last = now
    this.suppressed = 0
    return suppressed
  }
}
