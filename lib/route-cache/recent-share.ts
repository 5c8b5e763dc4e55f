// A route adapts two choices to its recent traffic, each from the share of its recent requests
// that had some property:
// - whether its entries are stored gzipped: when most of its clients take gzip. A gzipped entry
//   is sent as stored to those clients (smaller in Redis and on the wire, nothing to do per hit),
//   but every other client needs it gunzipped; a plain entry is the reverse. Storing what the
//   common client takes keeps the common hit free of zlib either way: browsers and most HTTP
//   libraries send `Accept-Encoding: gzip`, service-to-service clients often nothing.
// - whether its first read takes the cross-instance lock in the same round trip: when most of
//   its reads miss. That saves a miss a round trip, but moves every entry read through a Redis
//   script, several times the server's work of a plain MGET per hit; a route that mostly hits
//   reads plainly and claims the lock after a miss.

// The share is an average over about the last HALF_LIFE requests: recent ones count most.
const HALF_LIFE = 256

export class RecentShare {
  private yes = 0
  private total = 0

  note (yes: boolean): void {
    if (yes) this.yes++
    if (++this.total >= 2 * HALF_LIFE) {
      this.yes /= 2
      this.total /= 2
    }
  }

  /** Whether at least half of the recent requests had it (none noted yet: yes). */
  get most (): boolean {
    return 2 * this.yes >= this.total
  }
}
