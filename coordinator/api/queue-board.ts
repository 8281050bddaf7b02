import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import { Router } from 'express';
import type { Authenticator } from './auth.ts';

export const QUEUE_BOARD_PATH = '/queues';

/**
 * Bull Board over the coordinator's queues (deadline, completion, maintenance), so an operator sees
 * pending, delayed and failed jobs without a Redis client. Behind the operate scope; the console's
 * session cookie stands in for the header the board's own page cannot send.
 */
export function queueBoard(queues: Queue[], auth: Authenticator): Router {
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(QUEUE_BOARD_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'tpc queues', miscLinks: [{ text: 'Console', url: '/console/' }] } },
  });
  const router = Router();
  router.use(QUEUE_BOARD_PATH, auth.requireForQueueBoard('operate'), serverAdapter.getRouter() as Router);
  return router;
}
