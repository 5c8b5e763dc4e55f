// Management routes (stats, ping, clear, reset-stats, metrics, dashboard): a child plugin.
import type { FastifyPluginAsync, preHandlerHookHandler } from 'fastify'
import type { CacheManager } from './cache'

export interface ManagementOptions {
  cache: CacheManager
  token: string | undefined
  preHandler: preHandlerHookHandler | undefined
  dashboard: boolean
}

export const managementRoutes: FastifyPluginAsync<ManagementOptions> = async function managementRoutes () {}
