// Compiled by `npm run test:types`, never run: the `decorator` option, and the augmentation a
// user writes for the name they chose.
import Fastify from 'fastify'
import fastifyRedisCache, { type CacheDecorator, type FastifyCache } from '../../index'

declare module 'fastify' {
  interface FastifyInstance extends CacheDecorator<'redisCache'> {}
  interface FastifyInstance {
    otherCache: FastifyCache
  }
}

const app = Fastify()
app.register(fastifyRedisCache, { decorator: 'redisCache' })
export async function useIt (): Promise<number> {
  await app.redisCache.set('k', 1)
  await app.otherCache.get('k')
  return await app.redisCache.getOrSet('n', () => 1)
}
// @ts-expect-error the decorator is a name
app.register(fastifyRedisCache, { decorator: 5 })
