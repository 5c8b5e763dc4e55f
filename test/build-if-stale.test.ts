// `npm start` builds only when a source changed since the last build (scripts/build-if-stale.js),
// tried on a small project of its own whose build writes a file.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, utimesSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'

const script = join(__dirname, '..', 'scripts', 'build-if-stale.js')

/** A project whose `npm run build` is `build`. */
function fixture (build: string) {
  return {
    'package.json': JSON.stringify({ name: 'p', version: '1.0.0', scripts: { build } }),
    'index.ts': 'export {}\n',
    lib: { 'a.ts': 'export {}\n' }
  }
}

const run = (root: string): string => execFileSync(process.execPath, [script], { cwd: root, encoding: 'utf8' })

t.test('builds the first time, not the second, again once a source changed', async (t) => {
  const root = t.testdir(fixture('node -e "require(\'fs\').mkdirSync(\'dist\',{recursive:true});require(\'fs\').appendFileSync(\'dist/builds\',\'x\')"'))
  run(root)
  t.equal(readFileSync(join(root, 'dist', 'builds'), 'utf8'), 'x', 'built')
  t.ok(existsSync(join(root, 'dist', '.build-stamp')), 'stamped')
  t.match(run(root), /up to date/)
  t.equal(readFileSync(join(root, 'dist', 'builds'), 'utf8'), 'x', 'not built again')
  const later = new Date(Date.now() + 60_000)
  utimesSync(join(root, 'lib', 'a.ts'), later, later)
  run(root)
  t.equal(readFileSync(join(root, 'dist', 'builds'), 'utf8'), 'xx', 'a newer source builds again')
})

t.test('a failed build fails and leaves no stamp', async (t) => {
  const root = t.testdir(fixture('node -e "process.exit(3)"'))
  mkdirSync(join(root, 'dist'))
  t.throws(() => execFileSync(process.execPath, [script], { cwd: root, stdio: 'ignore' }), { message: /Command failed/ })
  t.notOk(existsSync(join(root, 'dist', '.build-stamp')))
})
