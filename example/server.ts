// `npm start`: the demo on PORT (default 3000), on Redis when REDIS_URL is set, else in memory.
import { buildApp, serverSettings, startupMessage } from './app'

async function main (): Promise<void> {
  const settings = serverSettings(process.env)
  const app = await buildApp({}, { logger: { level: settings.logLevel } })
  await app.listen({ port: settings.port, host: settings.host })
  app.log.info(startupMessage(app, settings, process.env))
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => { app.close().then(() => process.exit(0)) })
  }
}

main().catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
