// nginx with proxy_cache in front of the uncached server: the reference row of every workload.
// A generated config in a temporary directory (the cache too), one worker, no daemon, started
// under `taskset` on the server's core when pinning, removed again when it stops.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import { join } from 'node:path'
import { childPids, freePort, pinned, SERVER_CPU, sleep, stopChild, track } from './procs.js'

function config (dir, port, upstreamPort) {
  return `worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # Keep the load generator's connections open, as the Node servers do (the default closes
  # them after 1,000 requests).
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=items:64m max_size=4g inactive=60m use_temp_path=off;
  upstream app {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_cache items;
      proxy_cache_key $request_uri;
      proxy_cache_valid 200 10m;
    }
  }
}
`
}

async function waitForPort (port, child) {
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (child.exited) break
    const ok = await new Promise((resolve) => {
      const socket = net.connect({ port, host: '127.0.0.1' }, () => { socket.destroy(); resolve(true) })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await sleep(100)
  }
  throw new Error(`nginx did not listen on ${port}:\n${child.tail.join('\n')}`)
}

/** Starts nginx in front of `upstream` (a started uncached server); stop() removes its directory. */
export async function startNginx (upstream, pin) {
  const bin = process.env.NGINX || 'nginx'
  const dir = mkdtempSync(join(os.tmpdir(), 'bench-nginx-'))
  const port = await freePort()
  const file = join(dir, 'nginx.conf')
  writeFileSync(file, config(dir, port, upstream.port))
  const [cmd, args] = pinned(SERVER_CPU, bin, ['-p', dir, '-c', file, '-e', join(dir, 'error.log'), '-g', 'daemon off;'], pin)
  const child = track(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }), 'nginx')
  child.once('error', () => {})
  await waitForPort(port, child)
  return {
    variant: 'nginx',
    port,
    child,
    upstream,
    // The master, its worker and cache processes, and the uncached server behind them.
    pids: () => [child.pid, ...childPids(child.pid), upstream.child.pid],
    async stop () {
      await stopChild(child, { signal: 'SIGQUIT' })
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
