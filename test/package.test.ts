// What `npm publish` would ship (after `npm run build`): the compiled package without the demo,
// no source maps pointing at sources that are not shipped, the licence, and where it lives.
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'

const root = join(__dirname, '..')

interface Packed { files: Array<{ path: string }> }

t.test('the tarball: dist without the demo, no source maps, a LICENSE', async (t) => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const [packed] = JSON.parse(execFileSync(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })) as Packed[]
  const files = packed.files.map((f) => f.path)
  t.ok(files.includes('dist/index.js') && files.includes('dist/index.mjs') && files.includes('dist/index.d.ts'), 'the built entry points')
  t.ok(files.includes('LICENSE'), 'the licence')
  t.same(files.filter((f) => f.startsWith('dist/example/')), [], 'no demo')
  t.same(files.filter((f) => f.endsWith('.map')), [], 'no source maps')
  t.notOk(files.includes('dist/.build-stamp'), 'no build stamp')
  t.same(files.filter((f) => !f.startsWith('dist/') && !['LICENSE', 'README.md', 'package.json', 'CHANGELOG.md'].includes(f)), [], 'nothing else')
  t.notOk(readFileSync(join(root, 'dist', 'index.js'), 'utf8').includes('sourceMappingURL'), 'no source map comment')
})

t.test('package.json says where the project lives', async (t) => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<string, unknown>
  const home = 'https://github.com/fastify-redis-cache/fastify-redis-cache'
  t.equal(pkg.license, 'MIT')
  t.match(pkg.homepage, home)
  t.match(pkg.repository, { url: `git+${home}.git` })
  t.match(pkg.bugs, { url: `${home}/issues` })
  t.match(readFileSync(join(root, 'LICENSE'), 'utf8'), /MIT License[\s\S]*fastify-redis-cache contributors/)
})

t.test('README images resolve on the registry: absolute URLs only', async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const images = [...readme.matchAll(/!\[[^\]]*\]\(([^)]+)\)/g)].map((m) => m[1])
  for (const src of images) t.match(src, /^https:\/\//, src)
})
