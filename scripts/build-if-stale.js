'use strict'
// `npm start` builds only when a source is newer than the last build: a second start is quick.
// The stamp is written after a build that succeeded, so a failed build is retried next time.
// Run from the project's root (as npm runs scripts).
const { spawnSync } = require('node:child_process')
const { existsSync, readdirSync, statSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const SOURCES = ['index.ts', 'lib', 'types', 'example', 'scripts', 'package.json', 'tsconfig.json', 'tsconfig.build.json']

/** The newest modification time under `path` (a file or a folder), 0 when it does not exist. */
function newest (path) {
  if (!existsSync(path)) return 0
  const stat = statSync(path)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(0, ...readdirSync(path).map((name) => newest(join(path, name))))
}

const root = process.cwd()
const stamp = join(root, 'dist', '.build-stamp')
const built = existsSync(stamp) ? statSync(stamp).mtimeMs : 0
if (built > 0 && Math.max(...SOURCES.map((name) => newest(join(root, name)))) < built) {
  console.log('dist is up to date with the sources: no build needed')
} else {
  const { status } = spawnSync('npm', ['run', 'build'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' })
  if (status !== 0) process.exit(1)
  writeFileSync(stamp, `${new Date().toISOString()}\n`)
}
