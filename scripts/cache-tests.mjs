// `npm run conformance`: the open HTTP caching test suite (github.com/http-tests/cache-tests,
// the suite behind cache-tests.fyi) run through a Fastify gateway whose catch-all route proxies
// to the suite's origin server with @fastify/reply-from and caches with `freshness: 'response'`.
//
// The suite is not part of this repository: set CACHE_TESTS_DIR to a checkout of it, or the
// script clones it into a temporary directory (git must be installed). Needs `npm run build`
// first (the npm script does it). Prints the required tests that fail and their count.
//
//   CACHE_TESTS_DIR  a checkout of the suite (default: cloned into a temporary directory)
//   CACHE_TESTS_REPO where to clone it from (default: the suite's GitHub repository)
//   CACHE_TESTS_ID   run one test and print what the client and the origin saw
//   REDIS_URL        cache on this Redis instead of the in-process memory store
//   FRESHNESS        'response' (default) or 'route', to compare with the default mode
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import Fastify from 'fastify'
import replyFrom from '@fastify/reply-from'
import fastifyRedisCache from '../dist/index.mjs'

const SUITE = process.env.CACHE_TESTS_REPO ?? 'https://github.com/http-tests/cache-tests.git'

function suiteDir () {
  if (process.env.CACHE_TESTS_DIR) return process.env.CACHE_TESTS_DIR
  const dir = join(mkdtempSync(join(tmpdir(), 'cache-tests-')), 'suite')
  console.error(`cloning ${SUITE} into ${dir} (set CACHE_TESTS_DIR to reuse a checkout)`)
  execFileSync('git', ['clone', '--quiet', '--depth', '1', SUITE, dir], { stdio: 'inherit' })
  execFileSync('npm', ['install', '--omit=dev', '--no-audit', '--no-fund'], { cwd: dir, stdio: 'inherit' })
  return dir
}

async function freePort () {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  return port
}

async function startOrigin (dir, port) {
  const env = { ...process.env, npm_config_port: String(port), npm_config_protocol: 'http', npm_config_pidfile: join(tmpdir(), `cache-tests-${port}.pid`) }
  const child = spawn(process.execPath, ['test-engine/server/server.mjs'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'inherit'] })
  // Read to the end: the origin logs warnings to stdout while the suite runs.
  let out = ''
  await new Promise((resolve) => {
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('Listening')) resolve()
    })
  })
  return child
}

async function startGateway (originPort, freshness) {
  const app = Fastify({ logger: process.env.LOG_LEVEL ? { level: process.env.LOG_LEVEL } : false })
  await app.register(fastifyRedisCache, process.env.REDIS_URL ? { redis: { url: process.env.REDIS_URL }, routes: false } : { redis: false, routes: false })
  await app.register(replyFrom, { base: `http://127.0.0.1:${originPort}` })
  // The suite checks that M-SEARCH, too, invalidates.
  app.addHttpMethod('M-SEARCH', { hasBody: true })
  // Bodies go to the origin as they came.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (request, payload, done) => done(null, payload))
  // retryDelay: a 503 goes to the client (and the cache) as the origin sent it, not retried.
  app.all('/*', { config: { cache: { freshness, ttl: 3600 } } }, (request, reply) => reply.from(request.url, { retryDelay: () => null }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

async function main () {
  const dir = suiteDir()
  const freshness = process.env.FRESHNESS ?? 'response'
  const originPort = await freePort()
  const origin = await startOrigin(dir, originPort)
  const gateway = await startGateway(originPort, freshness)
  const base = `http://127.0.0.1:${gateway.server.address().port}`
  const id = process.env.CACHE_TESTS_ID ?? ''
  try {
    const cli = spawn(process.execPath, ['--no-warnings', 'test-engine/cli.mjs'], { cwd: dir, env: { ...process.env, npm_config_base: base, npm_config_id: id, npm_package_config_id: '' }, stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    cli.stdout.on('data', (chunk) => { out += chunk })
    await once(cli, 'close')
    if (id !== '') {
      process.stdout.write(out)
      return
    }
    const results = JSON.parse(out)
    const { default: tests } = await import(pathToFileURL(join(dir, 'tests/index.mjs')).href)
    const { determineTestResult, resultTypes } = await import(pathToFileURL(join(dir, 'test-engine/lib/results.mjs')).href)
    // As cache-tests.fyi shows them: a test whose prerequisite failed is not counted as failed,
    // so the failures are also counted with every test judged on its own.
    const failed = []
    const counts = {}
    let alone = 0
    for (const suite of tests) {
      for (const test of suite.tests) {
        if (test.kind !== undefined && test.kind !== 'required') continue
        if (results[test.id] === undefined) continue
        const result = determineTestResult(tests, test.id, results)
        const name = Object.keys(resultTypes).find((type) => resultTypes[type] === result)
        counts[name] = (counts[name] ?? 0) + 1
        if (result === resultTypes.fail) failed.push(`${test.id}: ${results[test.id][1] ?? ''}`)
        else if (result !== resultTypes.pass) console.log(`${name} ${test.id}: ${results[test.id][1] ?? ''}`)
        const own = determineTestResult(tests, test.id, results, false)
        if (own === resultTypes.fail) {
          alone++
          if (result !== resultTypes.fail) console.log(`fail (prerequisite failed too) ${test.id}: ${results[test.id][1] ?? ''}`)
        }
      }
    }
    for (const line of failed) console.log(`fail ${line}`)
    console.log(`required tests (freshness: '${freshness}'): ${JSON.stringify(counts)}`)
    console.log(`required failures: ${failed.length} (${alone} with each test judged on its own)`)
  } finally {
    await gateway.close()
    origin.kill()
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
