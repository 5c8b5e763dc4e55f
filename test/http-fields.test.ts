// The parsing behind `freshness: 'response'`, without a store: Cache-Control (RFC 9111 §5.2),
// CDN-Cache-Control (RFC 9213), Age (§5.1), HTTP dates (RFC 9110 §5.6.7), the stored policy
// and stream bodies.
import { PassThrough, Readable } from 'node:stream'
import t from 'tap'
import { ENCODING_PLAIN, KIND_RESPONSE, writeEnvelope } from '../lib/envelope'
import { CacheDeserializationError } from '../lib/errors'
import { decodePolicy, encodePolicy } from '../lib/route-cache/entry-policy'
import type { FastifyRequest } from 'fastify'
import { decodeEntry, encodeHead, type HttpEntry } from '../lib/route-cache/http-entry'
import { askToRevalidate } from '../lib/route-cache/revalidation'
import type { RequestState } from '../lib/route-cache/state'
import { deltaSeconds, parseAge, parseCacheControl, parseHttpDate, parseTargetedCacheControl } from '../lib/route-cache/http-fields'
import { discard, isStream, readWhole } from '../lib/route-cache/whole-body'

t.test('RFC 9111 §5.2 Cache-Control directives: first occurrence, quoted strings, junk', async (t) => {
  t.same([...parseCacheControl(undefined)], [])
  t.same([...parseCacheControl('Max-Age=60, max-age=5, public')], [['max-age', '60'], ['public', true]], 'the first occurrence wins, names in lower case')
  t.same([...parseCacheControl(['no-cache="Set-Cookie, X"', 's-maxage=10'])], [['no-cache', 'Set-Cookie, X'], ['s-maxage', '10']], 'several lines; a quoted string keeps its commas')
  t.same([...parseCacheControl('x="a\\"b", max-age=1')], [['x', 'a"b'], ['max-age', '1']], 'an escaped quote')
  t.same([...parseCacheControl('x="open')], [['x', 'open']], 'an unterminated quoted string ends the field')
  t.same([...parseCacheControl('x="open\\')], [['x', 'open']], 'and one that ends in a backslash')
  t.same([...parseCacheControl('max-age =60, private')], [['private', true]], 'a directive with junk after its name is dropped')
  t.same([...parseCacheControl(42)], [['42', true]])
  const cc = parseCacheControl('max-age=007, s-maxage, stale-if-error=x')
  t.equal(deltaSeconds(cc, 'max-age'), 7, 'leading zeros')
  t.equal(deltaSeconds(cc, 's-maxage'), 0, 'no value: stale')
  t.equal(deltaSeconds(cc, 'stale-if-error'), 0, 'not a number: stale')
  t.equal(deltaSeconds(cc, 'stale-while-revalidate'), undefined)
})

t.test('RFC 9213 CDN-Cache-Control is a dictionary, ignored whole when invalid', async (t) => {
  t.equal(parseTargetedCacheControl(undefined), undefined)
  t.same([...(parseTargetedCacheControl('max-age=60, no-store, x="a,b";p=1, y=?0, z=:AA==:, w=1.5, v=tok') ?? [])],
    [['max-age', '60'], ['no-store', true], ['x', '"a,b"'], ['y', '?0'], ['z', ':AA==:'], ['w', '1.5'], ['v', 'tok']])
  t.same([...(parseTargetedCacheControl(['max-age=1', 'max-age=2']) ?? [])], [['max-age', '2']], 'the last member wins')
  t.equal(parseTargetedCacheControl('Max-Age=60'), undefined, 'keys are lower case')
  t.equal(parseTargetedCacheControl('max-age= 60'), undefined)
  t.equal(parseTargetedCacheControl('max-age="60"'), undefined, 'a max-age that is no integer')
  t.equal(parseTargetedCacheControl('max-age=-1'), undefined)
  t.equal(parseTargetedCacheControl('a=&&'), undefined)
})

t.test('RFC 9111 §5.1 Age: the first value of the first line, if a non-negative integer', async (t) => {
  t.equal(parseAge(undefined), 0)
  t.equal(parseAge('30'), 30)
  t.equal(parseAge('0, 7200'), 0)
  t.equal(parseAge('7200, 0'), 7200)
  t.equal(parseAge(['5', '9']), 5)
  t.equal(parseAge(12), 12)
  for (const bad of ['abc', '-7200', '7200.0', '']) t.equal(parseAge(bad), 0, JSON.stringify(bad))
  t.equal(parseAge('2147483648'), 2147483648)
})

t.test('RFC 9110 §5.6.7 HTTP dates: IMF-fixdate only', async (t) => {
  t.equal(parseHttpDate('Thu, 18 Aug 2050 02:01:18 GMT'), Date.UTC(2050, 7, 18, 2, 1, 18))
  t.equal(parseHttpDate(['Thu, 18 Aug 2050 02:01:18 GMT', 'x']), Date.UTC(2050, 7, 18, 2, 1, 18))
  t.equal(parseHttpDate(undefined), undefined)
  for (const bad of ['0', 'Thu, 18 Aug 2050 02:01:18 UTC', 'Thu, 18 Aug 50 02:01:18 GMT', 'Thu 18 Aug 2050 02:01:18 GMT', 'Thu, 18-Aug-2050 02:01:18 GMT', 'Thu, 18 Aug 2050 2:01:18 GMT']) {
    t.equal(parseHttpDate(bad), undefined, bad)
  }
  t.equal(parseHttpDate('Thu, 99 Aug 2050 02:01:18 GMT'), undefined, 'a day that does not exist')
})

t.test('the stored policy: encoded in the head, read back, refused when malformed', async (t) => {
  t.equal(encodePolicy({ age: 0 }), '', 'the plain case adds nothing')
  const policy = { age: 3, windows: { staleWhileRevalidate: 1, staleIfError: 2 }, vary: [['a', null], ['b', 'x']] as Array<[string, string | null]>, originEtag: true }
  t.same(decodePolicy(encodePolicy(policy).slice(1)), policy)
  for (const bad of ['{', '3', 'null', '{"age":-1}', '{"age":1,"windows":{"staleWhileRevalidate":"x"}}', '{"age":1,"vary":[["a",1]]}', '{"age":1,"vary":{}}']) {
    t.equal(decodePolicy(bad), undefined, bad)
  }
  const stored = (first: string): Buffer => {
    const head = encodeHead(200, { 'x-a': '1' }, first)
    return writeEnvelope(ENCODING_PLAIN, KIND_RESPONSE, { storedAt: Date.now(), freshFor: 60 }, Buffer.from('body'), head)
  }
  t.same(decodeEntry(stored(encodePolicy(policy))).policy, policy)
  t.equal(decodeEntry(stored('')).policy, undefined)
  t.throws(() => decodeEntry(stored(' {"age":"x"}')), CacheDeserializationError)
})

t.test('stream bodies: read whole up to a bound, passed on beyond it', async (t) => {
  t.ok(isStream(new PassThrough()))
  t.notOk(isStream(Buffer.from('x')))
  t.notOk(isStream(null))
  t.same(await readWhole(Readable.from(['ab', Buffer.from('cd')]), 4), Buffer.from('abcd'))
  const passed = await readWhole(Readable.from(['ab', 'cd', 'ef']), 3)
  t.notOk(Buffer.isBuffer(passed))
  const chunks: Buffer[] = []
  for await (const chunk of passed as Readable) chunks.push(chunk as Buffer)
  t.equal(Buffer.concat(chunks).toString(), 'abcdef', 'nothing lost')
  const failing = new PassThrough()
  const reading = readWhole(failing, 3)
  failing.write('abcd')
  const rest = await reading as Readable
  const failed = new Promise((resolve) => rest.on('error', resolve))
  rest.resume()
  failing.destroy(new Error('gone'))
  t.match(await failed, { message: 'gone' }, 'a failure after the bound reaches the stream passed on')
  const broken = new PassThrough()
  discard(broken)
  t.ok(broken.destroyed)
})

t.test('RFC 9111 §4.3.1 the validators put on the request: the first of each stored value', async (t) => {
  const request = { headers: { 'if-none-match': '"client"' } } as unknown as FastifyRequest
  const state = { revalidation: null } as unknown as RequestState
  const entry = { policy: { age: 0, originEtag: true }, headers: { etag: ['"a"', '"b"'], 'last-modified': 'Tue, 01 Jan 2030 00:00:00 GMT' } } as unknown as HttpEntry
  askToRevalidate(request, state, entry)
  t.equal(request.headers['if-none-match'], '"a"')
  t.equal(request.headers['if-modified-since'], 'Tue, 01 Jan 2030 00:00:00 GMT')
  t.same(state.revalidation, { ifNoneMatch: '"client"', ifModifiedSince: undefined })
})
