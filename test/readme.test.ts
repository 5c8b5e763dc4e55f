// The README as a newcomer meets it: the install line and a quick start first, under 300 lines,
// and every link into the repository (files and their headings) resolves. The TypeScript blocks
// are type-checked by `npm run test:types` (scripts/check-readme-types.js).
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t from 'tap'

const root = join(__dirname, '..')
const readme = readFileSync(join(root, 'README.md'), 'utf8')

/** GitHub's anchor of a heading. */
function anchor (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

function headings (text: string): Set<string> {
  const found = new Set<string>()
  let fence = false
  for (const line of text.split('\n')) {
    if (line.trimStart().startsWith('```')) fence = !fence
    const m = /^#{1,6} (.*)$/.exec(line)
    if (!fence && m !== null) found.add(anchor(m[1]))
  }
  return found
}

t.test('install line and quick start first, under 300 lines', async (t) => {
  t.ok(readme.split('\n').length <= 300, `${readme.split('\n').length} lines`)
  const install = readme.indexOf('npm install fastify-redis-cache')
  const quick = readme.indexOf('## Quick start')
  const firstOther = readme.search(/\n## (?!Quick start)/)
  t.ok(install > 0 && install < quick && quick < firstOther, 'the install line, then the quick start, then the rest')
  const block = /## Quick start\n\n```ts\n([\s\S]*?)```/.exec(readme)?.[1] ?? ''
  t.ok(block.split('\n').filter((l) => l.trim() !== '').length <= 10, 'a ten-line quick start')
  for (const part of ['app.register(fastifyRedisCache', 'config: { cache: { ttl', 'bust:', 'getOrSet(']) t.ok(block.includes(part), part)
  t.match(readme, /## Development[\s\S]*npm install && npm start[\s\S]*npm install && npm test/, 'the contributor commands, in Development')
  t.match(readme, /## Rate limiting/, 'rate limiting has its own section')
  t.match(readme, /\*\*\[Security model\]\(#security-model\)\*\*/, 'the security model stands out in the contents')
})

t.test('every link into the repository resolves, headings included', async (t) => {
  const files = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)]
  for (const file of files) {
    const text = readFileSync(join(root, file), 'utf8')
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue
      const [path, hash] = target.split('#')
      const resolved = path === '' ? join(root, file) : join(root, dirname(file), path)
      t.ok(existsSync(resolved), `${file}: ${target}`)
      if (hash !== undefined && resolved.endsWith('.md') && existsSync(resolved)) {
        t.ok(headings(readFileSync(resolved, 'utf8')).has(hash), `${file}: ${target} names a heading`)
      }
    }
  }
})
