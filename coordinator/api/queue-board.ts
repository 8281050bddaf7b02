import type { Queue } from 'bullmq';
import { type RequestHandler, Router } from 'express';
import type { Authenticator } from './auth.ts';

export const QUEUE_BOARD_PATH = '/queues';

/**
 * Bull Board over the coordinator's queues (deadline, completion, maintenance), so an operator sees
 * pending, delayed and failed jobs without a Redis client. Behind the operate scope; the console's
 * session cookie stands in for the header the board's own page cannot send.
 */
export function queueBoard(queues: Queue[], auth: Authenticator): Router {
  // Built at the first authorised request, not at start: the board's packages are some hundred
  // modules, a quarter of a second of every start, and a restarted coordinator's start is the time
  // its in-flight transactions wait for recovery. A failed build is retried at the next request.
  let board: Promise<RequestHandler> | undefined;
  const lazyBoard: RequestHandler = async (req, res, next) => {
    board ??= buildBoard(queues).catch((err: unknown) => {
      board = undefined;
      throw err;
    });
    (await board)(req, res, next);
  };
  const router = Router();
  router.use(QUEUE_BOARD_PATH, auth.requireForQueueBoard('operate'), withoutForeignFonts, lazyBoard);
  return router;
}

async function buildBoard(queues: Queue[]): Promise<RequestHandler> {
  const [{ createBullBoard }, { BullMQAdapter }, { ExpressAdapter }] = await Promise.all([
    import('@bull-board/api'),
    import('@bull-board/api/bullMQAdapter'),
    import('@bull-board/express'),
  ]);
  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(QUEUE_BOARD_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q)),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'tpc queues', miscLinks: [{ text: 'Console', url: '/console/' }] } },
  });
  return serverAdapter.getRouter() as RequestHandler;
}

// The board's page asks Google for its web fonts: an operator's browser would tell a third party
// who looks at the queues and when, and the page waits on a network it may not have. The link is
// taken out of the page as it is rendered; the fonts fall back to the system's.
const FOREIGN_FONTS = /<link[^>]*\bhref="https:\/\/fonts\.(?:googleapis|gstatic)\.com[^>]*>\s*/g;

const withoutForeignFonts: RequestHandler = (_req, res, next) => {
  const render = res.render.bind(res);
  res.render = ((view: string, options?: object) => {
    render(view, options ?? {}, (err: Error | null, html?: string) => {
      if (err) return next(err);
      res.send((html ?? '').replace(FOREIGN_FONTS, ''));
    });
  }) as typeof res.render;
  next();
};
