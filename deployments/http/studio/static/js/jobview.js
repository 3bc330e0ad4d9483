// The job panel: one job's status, live progress from its event stream, its error, and its result.

import { ApiError, call } from './api.js';
import { el, formatTime } from './dom.js';
import { followJob } from './events.js';
import { renderResult } from './results.js';

const FINISHED = new Set(['succeeded', 'failed', 'cancelled']);

class JobPanel {
  constructor(root, onFinished) {
    Object.assign(this, { root, onFinished, follow: null, job: null });
  }

  /** Show `job` (a job view) and, until it finishes, follow its events. */
  show(job) {
    this.follow?.abort();
    this.follow = new AbortController();
    this.job = job;
    this.build(job);
    if (FINISHED.has(job.status)) this.finish(job);
    else this.listen(job.id, this.follow.signal);
  }

  async open(jobId) {
    try {
      this.show(await call(`/v1/jobs/${encodeURIComponent(jobId)}`));
    } catch (error) {
      this.root.replaceChildren(el('p', { class: 'error', role: 'alert' }, describe(error)));
    }
  }

  build(job) {
    this.statusText = el('span', { class: `status status-${job.status}`, dataset: { status: job.status } }, job.status);
    this.bar = el('progress', { max: '1', value: String(job.progress ?? 0), 'aria-label': 'Job progress' });
    this.progressText = el('p', { class: 'progress-text', role: 'status', 'aria-live': 'polite' });
    this.cancel = el('button', { type: 'button', onclick: () => this.requestCancel() }, 'Cancel job');
    this.body = el('div', { class: 'job-body' });
    this.root.replaceChildren(
      el('div', { class: 'job-head', dataset: { jobId: job.id } },
        el('strong', {}, job.kind), this.statusText, el('code', {}, job.id),
        el('small', {}, `created ${formatTime(job.created_at)}`), this.cancel),
      this.bar, this.progressText, this.body);
    this.update({ ...job });
  }

  update(change) {
    Object.assign(this.job, change);
    const { status, progress, stage, segments } = this.job;
    this.statusText.textContent = status;
    this.statusText.className = `status status-${status}`;
    this.statusText.dataset.status = status;
    this.bar.value = progress ?? 0;
    const parts = [`${Math.round((progress ?? 0) * 100)} %`];
    if (stage) parts.push(`stage ${stage}`);
    if (segments?.total) parts.push(`${segments.done}/${segments.total} segments`);
    if (this.job.retries) parts.push(`${this.job.retries} retries`);
    if (this.job.cancel_requested && !FINISHED.has(status)) parts.push('cancelling');
    this.progressText.textContent = parts.join(' · ');
    this.cancel.hidden = FINISHED.has(status);
  }

  async listen(jobId, signal) {
    const handlers = {
      status: (data) => this.update(data),
      stage: (data) => this.update(data),
      progress: (data) => this.update(data),
      retry: (data) => this.update({ retries: data.retries }),
      result: (data) => this.update(data),
      error: (data) => this.update({ error: data }),
      end: (data) => this.update(data),
    };
    try {
      await followJob(jobId, (name, data) => handlers[name]?.(data), signal);
    } catch (error) {
      this.body.replaceChildren(el('p', { class: 'error', role: 'alert' }, describe(error)));
      return;
    }
    if (!signal.aborted && FINISHED.has(this.job.status)) this.finish(this.job);
  }

  async finish(job) {
    const view = this.body;
    if (job.status === 'failed' && job.error) {
      const where = job.error.stage ? ` (stage ${job.error.stage})` : '';
      view.replaceChildren(el('p', { class: 'error', role: 'alert' }, `${job.error.code}${where}: ${job.error.message}`));
    } else if (job.status === 'cancelled') {
      view.replaceChildren(el('p', {}, 'The job was cancelled.'));
    } else if (job.status === 'succeeded' && !job.result) {
      view.replaceChildren(el('p', {}, 'The outputs of this job have expired (retention).'));
    } else if (job.status === 'succeeded') {
      view.replaceChildren(el('p', { class: 'hint' }, 'Loading the result…'));
      view.replaceChildren(await renderResult(job));
    }
    this.progressText.textContent = `${job.status}${job.finished_at ? ` at ${formatTime(job.finished_at)}` : ''}`;
    this.onFinished(job);
  }

  async requestCancel() {
    try {
      this.update(await call(`/v1/jobs/${encodeURIComponent(this.job.id)}`, { method: 'DELETE' }));
    } catch (error) {
      this.progressText.textContent = describe(error);
    }
  }
}

export function describe(error) {
  return error instanceof ApiError ? error.describe() : `Error: ${error.message}`;
}

export function jobPanel(root, onFinished) {
  return new JobPanel(root, onFinished);
}
