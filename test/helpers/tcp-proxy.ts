// A TCP proxy on 127.0.0.1 for fault tests: what a load balancer, a DNS name or a cloud endpoint
// does in front of Redis. A failover behind one endpoint is `setTarget(newPort)` (new connections
// go to the new server, existing ones stay with the old), a network that stops delivering
// without closing anything is `freeze()`, and a cut is `dropAll()`.
import net from 'node:net'

export interface TcpProxy {
  /** The port clients connect to. */
  readonly port: number
  /** Where new connections go; existing ones keep their server. */
  setTarget (port: number): void
  /** Stops forwarding bytes both ways on every connection (new ones too), closing none. */
  freeze (): void
  /** Forwards again, including what arrived while frozen. */
  thaw (): void
  /** Destroys every current connection, both sides. */
  dropAll (): void
  /** Drops every connection and stops listening. */
  close (): Promise<void>
}

const HOST = '127.0.0.1'

interface Pair { client: net.Socket, server: net.Socket }

export function startTcpProxy (targetPort: number): Promise<TcpProxy> {
  let target = targetPort
  let frozen = false
  const pairs = new Set<Pair>()

  // Paused sockets read nothing, so nothing is forwarded; the kernel buffers hold the bytes.
  const setFlow = (pair: Pair): void => {
    for (const socket of [pair.client, pair.server]) {
      if (frozen) socket.pause()
      else socket.resume()
    }
  }

  // Not pipe(): its backpressure handling would resume a frozen socket on the next 'drain'.
  const forward = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (!to.write(chunk)) from.pause()
    })
    to.on('drain', () => { if (!frozen) from.resume() })
    from.on('end', () => to.end())
  }

  const listener = net.createServer((client) => {
    const server = net.connect({ host: HOST, port: target })
    const pair = { client, server }
    pairs.add(pair)
    const drop = (): void => {
      pairs.delete(pair)
      client.destroy()
      server.destroy()
    }
    client.on('error', drop)
    server.on('error', drop)
    client.on('close', drop)
    server.on('close', drop)
    forward(client, server)
    forward(server, client)
    setFlow(pair)
  })

  return new Promise((resolve, reject) => {
    listener.once('error', reject)
    listener.listen({ port: 0, host: HOST }, () => {
      const address = listener.address() as net.AddressInfo
      const dropAll = (): void => {
        for (const { client, server } of [...pairs]) {
          client.destroy()
          server.destroy()
        }
        pairs.clear()
      }
      resolve({
        port: address.port,
        setTarget (port) { target = port },
        freeze () {
          frozen = true
          for (const pair of pairs) setFlow(pair)
        },
        thaw () {
          frozen = false
          for (const pair of pairs) setFlow(pair)
        },
        dropAll,
        close () {
          dropAll()
          return new Promise<void>((resolve) => listener.close(() => resolve()))
        }
      })
    })
  })
}
