// Throwaway real redis-server processes for tests.
//
// Every server gets its own port (never 6379), its own temp dir, and is
// spawned as a direct child (not daemonized) so we hold its pid and can
// signal it (SIGTERM/SIGKILL/SIGSTOP/SIGCONT). Everything still running is
// SIGKILLed on process exit, and a tiny detached watchdog kills the server if
// the test process itself dies without running exit handlers (e.g. tap
// SIGKILLs a timed-out test file).
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface RedisServer {
  readonly host: string
  readonly port: number
  readonly url: string
  readonly pid: number | undefined
  /** SIGTERM (SIGKILL after 2 s), await exit, remove the temp dir. Idempotent. */
  stop (): Promise<void>
  /** SIGKILL and await exit (simulates a crash). Keeps the temp dir for restart(). */
  kill (): Promise<void>
  /** SIGSTOP (simulates a hung Redis). */
  pause (): void
  /** SIGCONT. */
  resume (): void
  /** Start again on the SAME port (stops it first if it is still running). */
  restart (): Promise<void>
  /** `redis-cli -h 127.0.0.1 -p PORT [-a pw --no-auth-warning] ...args`, stdout trimmed. */
  cli (...args: string[]): Promise<string>
}

export interface StartOptions {
  password?: string
  /** Extra redis-server args, e.g. ['--maxmemory', '1mb']. */
  args?: string[]
}

export interface RedisCluster {
  readonly nodes: RedisServer[]
  readonly startupNodes: Array<{ host: string, port: number }>
  stop (): Promise<void>
}

const HOST = '127.0.0.1'
const FORBIDDEN_PORTS = new Set([6379, 16379])
const READY_TIMEOUT_MS = 5000
const STOP_GRACE_MS = 2000
const RESTART_RETRY_MS = 3000
const CLI_TIMEOUT_MS = 10000
const CLUSTER_TIMEOUT_MS = 15000
const OUTPUT_LIMIT = 16 * 1024

// ---------------------------------------------------------------------------
// process-exit cleanup registry

const liveProcesses = new Set<ChildProcess>()
const liveDirs = new Set<string>()

process.on('exit', () => {
  for (const child of liveProcesses) {
    try { child.kill('SIGKILL') } catch {}
  }
  for (const dir of liveDirs) {
    try { rmSync(dir, { recursive: true, force: true }) } catch {}
  }
})

function makeTempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  liveDirs.add(dir)
  return dir
}

function removeTempDir (dir: string): void {
  rmSync(dir, { recursive: true, force: true })
  liveDirs.delete(dir)
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

// ---------------------------------------------------------------------------
// free ports

function canListen (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', () => resolve(false))
    srv.listen({ port, host: HOST, exclusive: true }, () => {
      srv.close(() => resolve(true))
    })
  })
}

function osPort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen({ port: 0, host: HOST, exclusive: true }, () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

function ephemeralLow (): number {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)
    const n = Number(low)
    if (Number.isInteger(n) && n > 0) return n
  } catch {}
  return 32768
}

// Ports handed out by this process are never handed out again: a stopped or
// killed server keeps its port for restart().
const usedPorts = new Set<number>()

function usable (port: number): boolean {
  return port > 1024 && port < 55000 && !usedPorts.has(port) &&
    !FORBIDDEN_PORTS.has(port) && !FORBIDDEN_PORTS.has(port + 10000)
}

/**
 * A port on 127.0.0.1 that is free, below 55000, and whose cluster bus port
 * (port + 10000) is free too.
 *
 * Candidates come from below the kernel's ephemeral range when possible (so
 * neither the port nor its bus port can be grabbed by an outgoing connection,
 * and a client reconnecting to a killed server cannot TCP-self-connect to the
 * port and block restart()); otherwise the OS is asked for one (port 0).
 */
export async function freePort (): Promise<number> {
  const hi = ephemeralLow() - 10000 - 1 // port and bus port both below the ephemeral range
  const lo = 15000
  for (let i = 0; i < 200; i++) {
    const port = hi > lo
      ? lo + Math.floor(Math.random() * (hi - lo + 1))
      : await osPort()
    if (!usable(port)) continue
    if (await canListen(port) && await canListen(port + 10000)) {
      usedPorts.add(port)
      return port
    }
  }
  throw new Error('redis-server helper: could not find a free port (with free port + 10000)')
}

// ---------------------------------------------------------------------------
// minimal RESP client over node:net (readiness probes, CLUSTER INFO)

interface Reply { error: boolean, value: string }

function encode (args: string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const a of args) {
    const b = Buffer.from(a)
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}

/** Parses simple/error/integer/bulk replies; returns undefined when incomplete. */
function parseReplies (buf: Buffer, count: number): Reply[] | undefined {
  const out: Reply[] = []
  let pos = 0
  while (out.length < count) {
    const eol = buf.indexOf('\r\n', pos)
    if (eol === -1) return undefined
    const type = String.fromCharCode(buf[pos] ?? 0)
    const line = buf.toString('utf8', pos + 1, eol)
    if (type === '$') {
      const len = Number(line)
      if (len < 0) {
        out.push({ error: false, value: '' })
        pos = eol + 2
        continue
      }
      if (buf.length < eol + 2 + len + 2) return undefined
      out.push({ error: false, value: buf.toString('utf8', eol + 2, eol + 2 + len) })
      pos = eol + 2 + len + 2
    } else {
      out.push({ error: type === '-', value: line })
      pos = eol + 2
    }
  }
  return out
}

/** Sends commands on one connection; resolves with the replies or undefined on any failure/timeout. */
function sendCommands (port: number, commands: string[][], timeoutMs: number): Promise<Reply[] | undefined> {
  return new Promise(resolve => {
    let buf = Buffer.alloc(0)
    let settled = false
    const socket = net.connect({ port, host: HOST })
    const finish = (result: Reply[] | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(result)
    }
    const timer = setTimeout(() => finish(undefined), timeoutMs)
    socket.on('error', () => finish(undefined))
    socket.on('close', () => finish(undefined))
    socket.on('connect', () => {
      socket.write(Buffer.concat(commands.map(encode)))
    })
    socket.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk])
      const replies = parseReplies(buf, commands.length)
      if (replies !== undefined) finish(replies)
    })
  })
}

function withAuth (password: string | undefined, command: string[]): string[][] {
  return password === undefined ? [command] : [['AUTH', password], command]
}

/**
 * Asks whoever listens on the port for its process_id (authenticating if needed). A server
 * started with INFO renamed away (`--rename-command INFO ""`) cannot tell: 'no-info'.
 */
async function probePid (port: number, password: string | undefined): Promise<number | 'no-info' | undefined> {
  const replies = await sendCommands(port, withAuth(password, ['INFO', 'server']), 500)
  const info = replies?.at(-1)
  if (info !== undefined && info.error && /unknown command/i.test(info.value)) return 'no-info'
  if (info === undefined || info.error) return undefined
  const m = /process_id:(\d+)/.exec(info.value)
  return m === null ? undefined : Number(m[1])
}

// ---------------------------------------------------------------------------
// one redis-server process

class RedisStartError extends Error {
  readonly addressInUse: boolean
  constructor (message: string, readonly output: string) {
    super(`${message}\n--- redis-server output ---\n${output || '(none)'}`)
    this.name = 'RedisStartError'
    this.addressInUse = /address already in use/i.test(output)
  }
}

interface Running {
  child: ChildProcess
  exited: Promise<void>
  done: boolean
  output: string
  watchdog: ChildProcess | undefined
}

// Kills the redis-server (and removes its temp dir) if the test process dies
// without running its exit handlers (SIGKILL, tap timeout). Checks the pid
// still belongs to a redis-server before killing, to be safe against pid reuse.
// $1 = test process pid, $2 = redis-server pid, $3 = temp dir.
const WATCHDOG = [
  'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done',
  'if ! kill -0 "$1" 2>/dev/null; then',
  '  case "$(ps -o comm= -p "$2" 2>/dev/null)" in *redis*) kill -9 "$2" 2>/dev/null;; esac',
  '  rm -rf "$3"',
  'fi'
].join('\n')

function startWatchdog (pid: number, dir: string): ChildProcess | undefined {
  try {
    const w = spawn('sh', ['-c', WATCHDOG, 'redis-watchdog', String(process.pid), String(pid), dir], {
      detached: true,
      stdio: 'ignore'
    })
    w.on('error', () => {})
    w.unref()
    return w
  } catch {
    return undefined
  }
}

function unrefChild (child: ChildProcess): void {
  child.unref()
  for (const stream of [child.stdout, child.stderr]) {
    if (stream instanceof net.Socket) stream.unref()
  }
}

function stopWatchdog (w: ChildProcess | undefined): void {
  if (w?.pid === undefined || w.exitCode !== null || w.signalCode !== null) return
  try { process.kill(-w.pid, 'SIGKILL') } catch {
    try { w.kill('SIGKILL') } catch {}
  }
}

class Server implements RedisServer {
  readonly host = HOST
  private running: Running | undefined
  private dir: string | undefined

  constructor (
    readonly port: number,
    private readonly password: string | undefined,
    private readonly extraArgs: string[]
  ) {
    if (FORBIDDEN_PORTS.has(port)) throw new Error(`redis-server helper refuses to use port ${port}`)
  }

  get url (): string {
    const auth = this.password === undefined ? '' : `:${encodeURIComponent(this.password)}@`
    return `redis://${auth}${HOST}:${this.port}`
  }

  get pid (): number | undefined {
    return this.running === undefined || this.running.done ? undefined : this.running.child.pid
  }

  /** Spawns once and waits for readiness; throws RedisStartError on failure. */
  async start (): Promise<void> {
    if (this.running !== undefined && !this.running.done) return
    const dir = this.dir ??= makeTempDir(`redis-test-${this.port}-`)
    const args = [
      '--port', String(this.port),
      '--bind', HOST,
      '--save', '',
      '--appendonly', 'no',
      '--daemonize', 'no',
      '--dir', dir,
      '--logfile', '',
      ...(this.password === undefined ? [] : ['--requirepass', this.password]),
      ...this.extraArgs
    ]
    const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const run: Running = { child, exited: Promise.resolve(), done: false, output: '', watchdog: undefined }
    const append = (chunk: Buffer): void => {
      run.output = (run.output + chunk.toString()).slice(-OUTPUT_LIMIT)
    }
    child.stdout?.on('data', append)
    child.stderr?.on('data', append)
    run.exited = new Promise<void>(resolve => {
      const onGone = (): void => {
        if (run.done) return
        run.done = true
        liveProcesses.delete(child)
        stopWatchdog(run.watchdog)
        resolve()
      }
      child.once('exit', onGone)
      child.once('error', (err: Error) => {
        append(Buffer.from(`spawn error: ${err.message}\n`))
        onGone()
      })
    })
    liveProcesses.add(child)
    if (child.pid !== undefined) run.watchdog = startWatchdog(child.pid, dir)
    // A server a test forgot to stop must not keep the test process alive
    // (the exit handler kills it). terminate() re-refs while awaiting exit.
    unrefChild(child)
    this.running = run

    const deadline = Date.now() + READY_TIMEOUT_MS
    while (true) {
      if (run.done) {
        throw new RedisStartError(`redis-server on port ${this.port} exited before becoming ready ` +
          `(code ${String(child.exitCode)}, signal ${String(child.signalCode)})`, run.output)
      }
      const pid = await probePid(this.port, this.password)
      // Only our own process counts: something else may answer on the port. Without INFO, a
      // server that refuses it while ours runs (a stranger on the port would have made ours
      // exit on bind) is ours.
      if (pid !== undefined && (pid === child.pid || (pid === 'no-info' && !run.done))) return
      if (Date.now() > deadline) {
        child.ref()
        child.kill('SIGKILL')
        await run.exited
        throw new RedisStartError(`redis-server on port ${this.port} not ready after ${READY_TIMEOUT_MS} ms`, run.output)
      }
      await sleep(25)
    }
  }

  private async terminate (graceful: boolean): Promise<void> {
    const run = this.running
    if (run === undefined) return
    if (!run.done) {
      run.child.ref() // keep the event loop alive until the exit event arrives
      if (graceful) {
        run.child.kill('SIGCONT') // a paused process would not act on SIGTERM
        run.child.kill('SIGTERM')
        let timer: NodeJS.Timeout | undefined
        const timedOut = await Promise.race([
          run.exited.then(() => false),
          new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(true), STOP_GRACE_MS) })
        ])
        clearTimeout(timer)
        if (timedOut) run.child.kill('SIGKILL')
      } else {
        run.child.kill('SIGKILL')
      }
      await run.exited
    }
    if (this.running === run) this.running = undefined
  }

  async stop (): Promise<void> {
    await this.terminate(true)
    if (this.dir !== undefined) {
      removeTempDir(this.dir)
      this.dir = undefined
    }
  }

  async kill (): Promise<void> {
    await this.terminate(false)
  }

  private signal (sig: NodeJS.Signals): void {
    const run = this.running
    if (run === undefined || run.done) throw new Error(`redis-server on port ${this.port} is not running`)
    run.child.kill(sig)
  }

  pause (): void { this.signal('SIGSTOP') }

  resume (): void { this.signal('SIGCONT') }

  async restart (): Promise<void> {
    await this.terminate(true)
    // The port can take a moment to be bindable again: retry briefly.
    const deadline = Date.now() + RESTART_RETRY_MS
    while (true) {
      try {
        await this.start()
        return
      } catch (err) {
        if (!(err instanceof RedisStartError) || !err.addressInUse || Date.now() > deadline) throw err
        await sleep(100)
      }
    }
  }

  cli (...args: string[]): Promise<string> {
    const auth = this.password === undefined ? [] : ['-a', this.password, '--no-auth-warning']
    return runCli(['-h', HOST, '-p', String(this.port), ...auth, ...args])
  }
}

function runCli (args: string[], timeout = CLI_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err !== null) {
        reject(new Error(`redis-cli ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`.trim()))
        return
      }
      resolve(stdout.trim())
    })
  })
}

async function startServer (opts: StartOptions, extraArgs: (port: number) => string[]): Promise<Server> {
  let lastErr: unknown
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort()
    const server = new Server(port, opts.password, [...extraArgs(port), ...(opts.args ?? [])])
    try {
      await server.start()
      return server
    } catch (err) {
      await server.stop()
      // Lost a race for the port (e.g. a parallel tap job): try another one.
      if (!(err instanceof RedisStartError) || !err.addressInUse) throw err
      lastErr = err
    }
  }
  throw lastErr
}

export async function startRedis (opts: StartOptions = {}): Promise<RedisServer> {
  return await startServer(opts, () => [])
}

// ---------------------------------------------------------------------------
// cluster

async function waitClusterOk (nodes: RedisServer[]): Promise<void> {
  const deadline = Date.now() + CLUSTER_TIMEOUT_MS
  let last = ''
  while (Date.now() < deadline) {
    const infos = await Promise.all(nodes.map(n => sendCommands(n.port, [['CLUSTER', 'INFO']], 1000)))
    const ok = infos.every(r => {
      const v = r?.[0]?.value ?? ''
      return !(r?.[0]?.error ?? true) &&
        v.includes('cluster_state:ok') &&
        v.includes(`cluster_known_nodes:${nodes.length}\r\n`) &&
        v.includes('cluster_slots_ok:16384')
    })
    if (ok) return
    last = infos.map((r, i) => `port ${nodes[i]?.port ?? '?'}: ${(r?.[0]?.value ?? '(no reply)').split('\r\n').slice(0, 6).join(' ')}`).join('\n')
    await sleep(50)
  }
  throw new Error(`redis cluster did not reach cluster_state:ok within ${CLUSTER_TIMEOUT_MS} ms\n${last}`)
}

export async function startCluster (masters = 3): Promise<RedisCluster> {
  if (!Number.isInteger(masters) || masters < 3) throw new Error('startCluster: redis-cli --cluster create needs at least 3 masters')
  // Node configs live in a cluster-owned dir so a node survives stop()/restart().
  const clusterDir = makeTempDir('redis-test-cluster-')
  const nodes: Server[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map(async n => await n.stop()))
    removeTempDir(clusterDir)
  }
  try {
    const started = await Promise.allSettled(Array.from({ length: masters }, async () =>
      await startServer({}, port => [
        '--cluster-enabled', 'yes',
        '--cluster-config-file', join(clusterDir, `nodes-${port}.conf`)
      ])))
    for (const r of started) if (r.status === 'fulfilled') nodes.push(r.value)
    const failed = started.find(r => r.status === 'rejected')
    if (failed !== undefined) throw failed.reason
    await runCli([
      '--cluster', 'create',
      ...nodes.map(n => `${HOST}:${n.port}`),
      '--cluster-replicas', '0',
      '--cluster-yes'
    ], 30000)
    await waitClusterOk(nodes)
  } catch (err) {
    await stop()
    throw err
  }
  let stopping: Promise<void> | undefined
  return {
    nodes,
    startupNodes: nodes.map(n => ({ host: n.host, port: n.port })),
    stop: async () => { stopping ??= stop(); await stopping }
  }
}
