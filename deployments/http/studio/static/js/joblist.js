// The job list: the caller's jobs, newest first, paged with `after`; each row opens its job.

import { call } from './api.js';
import { el, formatTime } from './dom.js';
import { describe } from './jobview.js';

const PAGE = 15;
const AUDIO_KINDS = new Set(['music', 'sfx', 'pitch-shift', 'voice-replace', 'loop']);

/** A short description of what a job was asked to do. */
function summary(job) {
  const r = job.request ?? {};
  if (r.prompt) return `${r.prompt} (${r.duration_s} s, ${r.model})`;
  if (job.kind === 'separate') return `${r.mode} stems`;
  if (job.kind === 'pitch-shift') return `${r.semitones > 0 ? '+' : ''}${r.semitones} semitones`;
  if (job.kind === 'voice-replace') return `${r.target_speaker} → ${r.voice}`;
  if (job.kind === 'loop') return `loop to ${r.target_duration_s} s`;
  return '';
}

export class JobList {
  constructor({ rows, error, older, onOpen, onJobs }) {
    Object.assign(this, { rows, error, older, onOpen, onJobs, next: null, jobs: [], current: null });
    older.addEventListener('click', () => this.load(this.next));
  }

  async refresh() {
    await this.load(null);
  }

  async load(after) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (after) query.set('after', after);
    try {
      const page = await call(`/v1/jobs?${query}`);
      this.jobs = after ? [...this.jobs, ...page.jobs] : page.jobs;
      this.next = page.next_after;
      this.error.textContent = '';
    } catch (error) {
      this.error.textContent = describe(error);
      return;
    }
    this.render();
  }

  select(jobId) {
    this.current = jobId;
    for (const row of this.rows.children) {
      row.setAttribute('aria-current', String(row.dataset.jobId === jobId));
    }
  }

  render() {
    this.rows.replaceChildren(...this.jobs.map((job) => this.row(job)));
    if (!this.jobs.length) {
      this.rows.append(el('tr', {}, el('td', { colspan: '5', class: 'hint' }, 'No jobs yet.')));
    }
    this.older.hidden = !this.next;
    this.select(this.current);
    this.onJobs(this.jobs.filter((job) => job.status === 'succeeded' && AUDIO_KINDS.has(job.kind)));
  }

  row(job) {
    const what = summary(job);
    return el('tr', { dataset: { jobId: job.id } },
      el('td', {}, formatTime(job.created_at)),
      el('td', {}, job.kind),
      el('td', {}, el('span', { class: `status status-${job.status}` }, job.status)),
      el('td', { class: 'what', title: what }, what),
      el('td', {}, el('button', {
        type: 'button', 'aria-label': `Open ${job.kind} job ${job.id}`, onclick: () => this.onOpen(job.id),
      }, 'Open')));
  }
}
