'use strict'
// A TCP proxy in front of a redis-server, standing for one endpoint (a load balancer, a cloud
// "primary endpoint"). It can move every open connection to another server without closing the
// client's side (`switchTo`), and it can stop forwarding bytes on open connections without
// closing them (`freeze`), which is what a dead peer behind a NAT or a half-open link looks like.
const net = require('node:net')
const { HOST, sleep } = require('./redis')

/** Milliseconds a switch waits for replies already on their way from the old server. */
const DRAIN_MS = 100
const open = new Set()

class TcpProxy {
  constructor (targetPort) {
    this.target = targetPort
    this.pairs = new Set()
    this.server = net.createServer((client) => this.accept(client))
    open.add(this)
  }

  listen () {
    return new Promise((resolve) => {
      this.server.listen({ port: 0, host: HOST }, () => {
        this.port = this.server.address().port
        resolve(this.port)
      })
    })
  }

  get url () { return `redis://${HOST}:${this.port}` }

  accept (client) {
    // held: bytes from the client kept during a switch; frozen: nothing is forwarded any more.
    const pair = { client, upstream: null, held: null, frozen: false, subscriber: false }
    this.pairs.add(pair)
    client.setNoDelay(true)
    client.on('data', (chunk) => {
      if (!pair.subscriber && /subscribe/i.test(chunk.toString('latin1'))) pair.subscriber = true
      if (pair.frozen) return
      if (pair.held !== null) pair.held.push(chunk)
      else pair.upstream.write(chunk)
    })
    const end = () => {
      this.pairs.delete(pair)
      pair.upstream?.destroy()
      client.destroy()
    }
    client.on('error', end)
    client.on('close', end)
    this.attach(pair, this.target)
  }

  attach (pair, port) {
    const upstream = net.connect({ port, host: HOST })
    upstream.setNoDelay(true)
    pair.upstream = upstream
    upstream.on('data', (chunk) => {
      if (!pair.frozen && pair.upstream === upstream) pair.client.write(chunk)
    })
    const end = () => {
      // An upstream replaced by a switch ends without its client.
      if (pair.upstream === upstream) pair.client.destroy()
    }
    upstream.on('error', end)
    upstream.on('close', end)
  }

  /**
   * Points the endpoint at `port`: new connections go there, and every open one is moved there
   * without its client noticing a close (what it had sent is kept, replies on their way from
   * the old server are let through first).
   */
  async switchTo (port) {
    this.target = port
    const moving = [...this.pairs].filter((pair) => !pair.frozen)
    for (const pair of moving) pair.held = []
    await sleep(DRAIN_MS)
    for (const pair of moving) {
      if (!this.pairs.has(pair)) continue
      const old = pair.upstream
      this.attach(pair, port)
      old.destroy()
      for (const chunk of pair.held) pair.upstream.write(chunk)
      pair.held = null
    }
  }

  /** Stops forwarding on the open connections that `which` picks; nothing is closed. */
  freeze (which = () => true) {
    let frozen = 0
    for (const pair of this.pairs) {
      if (which(pair)) {
        pair.frozen = true
        frozen++
      }
    }
    return frozen
  }

  close () {
    open.delete(this)
    for (const pair of this.pairs) {
      pair.upstream?.destroy()
      pair.client.destroy()
    }
    this.pairs.clear()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

async function startProxy (targetPort) {
  const proxy = new TcpProxy(targetPort)
  await proxy.listen()
  return proxy
}

async function closeAllProxies () {
  for (const proxy of [...open]) await proxy.close()
}

module.exports = { TcpProxy, startProxy, closeAllProxies }
