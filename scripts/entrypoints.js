'use strict'
// Writes the package entry points around tsc's CommonJS output:
//   dist/cjs.js      require() gives the plugin itself, with .default, .fastifyRedisCache and the
//                    other exports as properties (the convention of Fastify plugins)
//   dist/index.mjs   import gives the plugin as default export plus every named export
//   dist/index.d.mts the types for import, so the default import is typed as the plugin
const { writeFileSync } = require('node:fs')
const { join } = require('node:path')

const dist = join(__dirname, '..', 'dist')
const names = Object.keys(require(join(dist, 'index.js'))).filter((name) => name !== 'default')

writeFileSync(join(dist, 'cjs.js'), `'use strict'
const mod = require('./index.js')
module.exports = Object.assign(mod.default, mod)
`)

writeFileSync(join(dist, 'index.mjs'), `import mod from './cjs.js'
export default mod.default
export const { ${names.join(', ')} } = mod
`)

writeFileSync(join(dist, 'index.d.mts'), `import type * as cjs from './index.js'
declare const fastifyRedisCache: typeof cjs.fastifyRedisCache
export default fastifyRedisCache
export * from './index.js'
`)
