// `npm start`: the demo on PORT (default 3000), on Redis when REDIS_URL is set, else in memory.
import { buildApp } from './app'

async function main (): Promise<void> {
  const app = await buildApp({}, { logger: { level: process.env.LOG_LEVEL ?? 'info' } })
  const port = Number(process.env.PORT ?? 3000)
  await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' })
  const store = app.cache.getStatistics().store === 'redis'
    ? `Redis (${process.env.REDIS_URL ?? process.env.REDIS_HOST})`
    : 'in-process memory (set REDIS_URL to use Redis)'
  app.log.info(`demo items API on http://127.0.0.1:${port}/items, cache store: ${store}`)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { app.close().then(() => process.exit(0)) })
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
