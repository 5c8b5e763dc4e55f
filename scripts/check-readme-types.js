'use strict'
// The doc test: every ```ts block of the README (and of docs/*.md) type-checks under `strict`,
// against the package's own source, as a user would write it. Each block is a module of its
// own; a prelude declares what the examples take for granted (an `app`, the handlers they name).
//   node scripts/check-readme-types.js        (part of `npm run test:types`)
const { spawnSync } = require('node:child_process')
const { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } = require('node:fs')
const { join } = require('node:path')

const root = join(__dirname, '..')
// Inside node_modules, so the blocks resolve fastify and the other packages as the project does.
const dir = join(root, 'node_modules', '.cache', 'readme-types')

const PRELUDE = `import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type FastifyType from 'fastify'
import type fastifyRedisCacheType from 'fastify-redis-cache'
import type replyFromType from '@fastify/reply-from'

type Handler = (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>

declare global {
  const app: FastifyInstance
  const Fastify: typeof FastifyType
  const fastifyRedisCache: typeof fastifyRedisCacheType
  interface User { name: string }
  const userId: string
  function buildReport (): Promise<{ total: number }>
  function userOf (request: FastifyRequest): string
  const getItem: Handler, putItem: Handler, listItems: Handler, profile: Handler, live: Handler
  const createItem: Handler, updateItem: Handler, deleteItem: Handler, reindex: Handler
  const login: Handler, search: Handler, health: Handler, handler: Handler
  function loadItems (): Promise<unknown[]>
  const url: string
  const fastifySwagger: FastifyPluginAsync<{ openapi: object }>
  const replyFrom: typeof replyFromType
  const cache: FastifyInstance['cache']
  interface Report { final: boolean, partial: boolean, userId: string }
  function build (stale?: Report): Promise<Report>
  interface Token { expiresIn: number, tenant: string, valid: boolean }
  function fetchToken (): Promise<Token>
  const id: string
  function load (): Promise<unknown>
  function loadUser (): Promise<User>
  function loadPrices (): Promise<number[]>
  function loadProfile (): Promise<User>
}
// What @fastify/jwt adds, for the preHandler example.
declare module 'fastify' {
  interface FastifyRequest {
    jwtVerify (): Promise<void>
    user: { roles: string[] }
  }
}
export {}
`

// The OpenTelemetry SDK a reader installs beside the plugin (docs/observability.md): ambient
// declarations, in a file of their own since the prelude is a module.
const AMBIENT = `declare module '@opentelemetry/sdk-node' {
  export class NodeSDK { constructor (options: { instrumentations?: unknown[] }); start (): void }
}
declare module '@opentelemetry/auto-instrumentations-node' {
  export function getNodeAutoInstrumentations (): unknown[]
}
`

/** The ```ts blocks of a markdown file (those indented in a list too), with their first line. */
function blocks (file) {
  const found = []
  let current = null
  readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
    const open = /^(\s*)```ts\s*$/.exec(line)
    if (current === null && open !== null) current = { line: i + 2, indent: open[1].length, text: [] }
    else if (current !== null && /^\s*```\s*$/.test(line)) {
      found.push(current)
      current = null
    } else if (current !== null) current.text.push(line.slice(current.indent))
  })
  return found
}

const sources = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))]
rmSync(dir, { recursive: true, force: true })
mkdirSync(dir, { recursive: true })
writeFileSync(join(dir, 'prelude.ts'), PRELUDE)
writeFileSync(join(dir, 'ambient.d.ts'), AMBIENT)
const files = ['prelude.ts', 'ambient.d.ts']
const origin = new Map()
for (const source of sources) {
  for (const block of blocks(join(root, source))) {
    const name = `${source.replace(/[/.]/g, '_')}_${block.line}.ts`
    // `export {}` makes each block a module: top-level await, and names of its own.
    writeFileSync(join(dir, name), `${block.text.join('\n')}\nexport {}\n`)
    files.push(name)
    origin.set(name, `${source}:${block.line}`)
  }
}
writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({
  compilerOptions: {
    strict: true,
    target: 'ES2022',
    module: 'preserve',
    moduleResolution: 'bundler',
    lib: ['ES2022', 'ES2024.String'],
    types: ['node'],
    skipLibCheck: true,
    noEmit: true,
    paths: { 'fastify-redis-cache': [join(root, 'index.ts')] }
  },
  files
}, null, 2))

const tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
const result = spawnSync(process.execPath, [tsc, '-p', join(dir, 'tsconfig.json'), '--pretty', 'false'], { encoding: 'utf8' })
// Errors name the temp file: tell them by the markdown file and line the block starts on.
const output = (result.stdout + result.stderr).replace(/[^\s(]*readme-types\/([\w.-]+\.ts)\((\d+),(\d+)\)/g,
  (_, name, line, column) => origin.has(name) ? `${origin.get(name).replace(/:\d+$/, '')}:${Number(origin.get(name).split(':').pop()) + Number(line) - 1}:${column}` : `${name}(${line},${column})`)
if (result.status !== 0) {
  process.stderr.write(output)
  process.stderr.write(`\nthe TypeScript examples of the docs do not compile (${files.length - 1} blocks checked)\n`)
  process.exit(1)
}
console.log(`${files.length - 1} TypeScript blocks of the README and docs/ compile under strict`)
