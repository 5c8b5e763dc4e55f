// "Did you mean ...?": the valid name closest to a misspelled one, by edit distance, ignoring
// case (`defaultTTL` is `defaultTtl`), and only when it is close enough to be the one meant.

/** Levenshtein distance: insertions, deletions and substitutions, one each. */
export function editDistance (a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min(previous[j] + 1, current[j - 1] + 1, substitution))
    }
    previous = current
  }
  return previous[b.length]
}

/** The candidate closest to `name`, or undefined when none is within a third of its length. */
export function closest (name: string, candidates: readonly string[]): string | undefined {
  const lower = name.toLowerCase()
  const limit = Math.max(2, Math.floor(name.length / 3))
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of candidates) {
    const distance = editDistance(lower, candidate.toLowerCase())
    if (distance < bestDistance) {
      best = candidate
      bestDistance = distance
    }
  }
  return bestDistance <= limit ? best : undefined
}
