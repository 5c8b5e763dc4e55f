// Whether a route's entries are stored gzipped: by default, when most of the route's recent
// clients take gzip. A gzipped entry is sent as stored to those clients (smaller in Redis and on
// the wire, nothing to do per hit), but every other client needs it gunzipped; a plain entry is
// the reverse. Storing what the common client takes keeps the common hit free of zlib either way:
// browsers and most HTTP libraries send `Accept-Encoding: gzip`, while service-to-service
// clients often send nothing.
import { acceptsGzip } from './replay'

// The share is an average over about the last HALF_LIFE requests: recent clients count most.
const HALF_LIFE = 256

export class ClientCodings {
  private gzip = 0
  private total = 0

  /** Counts a request that could read or fill the route's entry. */
  note (acceptEncoding: string | undefined): void {
    if (acceptsGzip(acceptEncoding)) this.gzip++
    if (++this.total >= 2 * HALF_LIFE) {
      this.gzip /= 2
      this.total /= 2
    }
  }

  /** Whether at least half of the recent clients took gzip (none noted yet: yes). */
  preferGzip (): boolean {
    return 2 * this.gzip >= this.total
  }
}
