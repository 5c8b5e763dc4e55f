'use strict'
// Stale reads. A mutation bumps an item's version and invalidates its entry; when its response
// has arrived, the invalidation has "returned". A read of that item is stale when it carries an
// older version although it was sent:
//   - on the instance that made the mutation: after the mutation's response arrived;
//   - on another instance: more than GRACE_MS after the later of the mutation's response and
//     Redis being reachable again (when the mutation's response came during the fault, or so
//     close before it that the grace ran into it).
// A read sent before the mutation returned may carry either version and is never stale.

const GRACE_MS = 1000

/**
 * `down`: { from, to } while Redis was unreachable for the instances (performance.now() times), or
 * null when it never was. Returns the count and what it is made of.
 */
function staleReads (reads, mutations, down) {
  const byItem = new Map()
  for (const m of mutations) {
    if (m.status < 200 || m.status > 299 || m.version === null) continue
    if (!byItem.has(m.item)) byItem.set(m.item, [])
    byItem.get(m.item).push({ ...m, otherDue: otherDue(m, down) })
  }
  for (const list of byItem.values()) list.sort((a, b) => a.end - b.end)
  const violated = new Map()
  const result = { count: 0, sameInstance: 0, otherInstance: 0, byMode: {}, mutations: 0, longestMs: 0 }
  for (const read of reads) {
    if (read.version === null) continue
    const required = requiredMutation(byItem.get(read.item), read)
    if (required === null || read.version >= required.version) continue
    result.count++
    if (required.instance === read.instance) result.sameInstance++
    else result.otherInstance++
    result.byMode[required.mode] = (result.byMode[required.mode] ?? 0) + 1
    const due = required.instance === read.instance ? required.end : required.otherDue
    // How long after the deadline this mutation was still not reflected (bounded by the load's end).
    violated.set(required, Math.max(violated.get(required) ?? 0, read.end - due))
  }
  result.mutations = violated.size
  for (const ms of violated.values()) result.longestMs = Math.max(result.longestMs, ms)
  return result
}

function otherDue (mutation, down) {
  if (down !== null && mutation.end + GRACE_MS > down.from && mutation.end < down.to) return down.to + GRACE_MS
  return mutation.end + GRACE_MS
}

/** The newest mutation of the read's item that the read must reflect, or null. */
function requiredMutation (list, read) {
  if (list === undefined) return null
  let required = null
  for (const m of list) {
    if (m.end >= read.start) break
    const due = m.instance === read.instance ? m.end : m.otherDue
    if (due < read.start && (required === null || m.version > required.version)) required = m
  }
  return required
}

module.exports = { GRACE_MS, staleReads }
