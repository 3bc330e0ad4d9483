// A job's live events (`GET /v1/jobs/{id}/events`, Server-Sent Events). EventSource cannot send the
// Authorization header, so the stream is read with fetch() and parsed here; a dropped connection is
// reopened with Last-Event-ID after the server's `retry:` delay, until the `end` event.

import { errorFrom, send } from './api.js';

const DEFAULT_RETRY_MS = 2000;

function parseBlock(block) {
  const event = { data: [] };
  for (const line of block.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'data') event.data.push(value);
    else event[field] = value;
  }
  return event;
}

async function* blocks(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      yield parseBlock(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
    }
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });

/**
 * Call `onEvent(name, data)` for every event of job `jobId` until its `end` event (resolves) or until
 * `signal` aborts (resolves). An error answer (404, 401) rejects with its ApiError.
 */
export async function followJob(jobId, onEvent, signal) {
  const state = { lastId: null, retryMs: DEFAULT_RETRY_MS };
  while (!signal.aborted) {
    const headers = state.lastId ? { 'Last-Event-ID': state.lastId } : {};
    try {
      const response = await send(`/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
      if (!response.ok) throw await errorFrom(response);
      if (await readStream(response.body, state, onEvent)) return;
    } catch (error) {
      if (signal.aborted) return;
      if (error.status) throw error; // an answer, not a dropped connection
    }
    await sleep(state.retryMs, signal);
  }
}

async function readStream(body, state, onEvent) {
  for await (const event of blocks(body)) {
    if (event.retry && /^\d+$/.test(event.retry)) state.retryMs = Number(event.retry);
    if (event.id) state.lastId = event.id;
    if (!event.event) continue;
    onEvent(event.event, JSON.parse(event.data.join('\n')));
    if (event.event === 'end') return true;
  }
  return false;
}
