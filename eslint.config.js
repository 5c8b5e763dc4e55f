'use strict'

module.exports = require('neostandard')({
  ts: true,
  ignores: ['dist/**', 'coverage/**', '.tap/**', 'bench/node_modules/**', ...require('neostandard').resolveIgnoresFromGitignore()]
})
