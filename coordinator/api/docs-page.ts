import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type express from 'express';
import { Router } from 'express';

// Swagger UI's own files, from the npm package, served by this process: the page loads nothing
// from elsewhere (no CDN, no fonts, no validator badge), so it works on an isolated network and
// leaks nothing about the API to third parties.
const SWAGGER_UI_DIR = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const SERVED = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png', 'favicon-16x16.png']);

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>tpc API</title>
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <style>body { margin: 0 } .tpc-bar { font: 14px system-ui, sans-serif; padding: .5rem 1rem; background: #1b1f24; color: #eee }
  .tpc-bar a { color: #9cd0ff; margin-right: 1rem }</style>
</head>
<body>
  <div class="tpc-bar"><a href="/console/">Console</a><a href="/openapi.json">openapi.json</a></div>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
`;

// validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
`;

/** Mounted at /docs: the OpenAPI document, readable (Swagger UI), served entirely by this process. */
export function docsPage(): Router {
  const router = Router();
  const page = (_req: express.Request, res: express.Response) => {
    res.type('html').setHeader('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:");
    res.send(PAGE);
  };
  router.get('/', page);
  router.get('/init.js', (_req, res) => {
    res.type('js').send(INIT);
  });
  router.get('/:file', (req, res, next) => {
    if (!SERVED.has(req.params.file)) return next();
    res.sendFile(join(SWAGGER_UI_DIR, req.params.file), { maxAge: 3_600_000 });
  });
  return router;
}
