// The tool forms: music and sound effects (JSON bodies), and the audio tools (separate, voice replace,
// loop, pitch shift) whose file is uploaded as soon as it is chosen (`POST /v1/uploads`, validated by
// the API) and then named by its `upload_id`. Errors are the API's, shown under the form.

import { call, uploadFile } from './api.js';
import { formatSeconds } from './dom.js';
import { describe } from './jobview.js';
import { findSpeakers, renderSpeakers } from './voice.js';

/** The named controls of `form` as request fields: numbers as numbers (empty ones left out),
 * checkboxes as booleans, radio groups as their checked value. */
export function fieldsOf(form) {
  const fields = {};
  for (const control of form.elements) {
    if (!control.name || control.disabled || control.type === 'file') continue;
    if (control.type === 'radio') {
      if (control.checked) fields[control.name] = control.value;
    } else if (control.type === 'checkbox') {
      fields[control.name] = control.checked;
    } else if (control.type === 'number') {
      if (control.value !== '') fields[control.name] = Number(control.value);
    } else if (control.value !== '') {
      fields[control.name] = control.value;
    }
  }
  return fields;
}

function asForm(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, String(value));
  return form;
}

class ToolForm {
  constructor(form, onSubmitted) {
    this.form = form;
    this.onSubmitted = onSubmitted;
    this.error = form.querySelector('[data-error]');
    this.button = form.querySelector('button[type="submit"]');
    this.uploads = new Map(); // file input -> the upload the API stored for it
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    for (const input of form.querySelectorAll('input[data-upload]')) {
      input.addEventListener('change', () => this.upload(input));
    }
  }

  get kind() {
    return this.form.dataset.kind;
  }

  showError(message) {
    this.error.textContent = message;
  }

  async upload(input) {
    const status = input.parentElement.querySelector('[data-upload-status]');
    this.uploads.delete(input);
    this.showError('');
    status.classList.remove('bad');
    if (!input.files.length) return (status.textContent = '');
    const file = input.files[0];
    status.textContent = `Uploading ${file.name}…`;
    try {
      const info = await uploadFile(file);
      this.uploads.set(input, info);
      const channels = info.channels === 1 ? 'mono' : `${info.channels} channels`;
      status.textContent = `${file.name}: ${formatSeconds(info.duration_s)}, ${info.sample_rate} Hz, ${channels}`;
      await this.uploaded(info);
    } catch (error) {
      status.classList.add('bad');
      status.textContent = `${file.name} was not accepted.`;
      this.showError(describe(error));
    }
  }

  /** Called once a file is uploaded (voice replacement finds its speakers here). */
  async uploaded() {}

  uploadFor(input) {
    const info = this.uploads.get(input);
    if (!info) throw new Error('choose an audio file first (it is uploaded when chosen)');
    return info.upload_id;
  }

  /** The request for this form: `{json}` or `{form}`. */
  request() {
    const input = this.form.querySelector('input[data-upload]');
    return { form: asForm({ ...fieldsOf(this.form), upload_id: this.uploadFor(input) }) };
  }

  async submit() {
    this.showError('');
    if (!this.form.reportValidity()) return;
    this.button.setAttribute('aria-busy', 'true');
    this.button.disabled = true;
    try {
      const job = await call(`/v1/jobs/${this.kind}`, { method: 'POST', ...this.request() });
      this.onSubmitted(job);
    } catch (error) {
      this.showError(describe(error));
    } finally {
      this.button.disabled = false;
      this.button.removeAttribute('aria-busy');
    }
  }
}

class GenerationForm extends ToolForm {
  request() {
    return { json: fieldsOf(this.form) };
  }
}

class LoopForm extends ToolForm {
  constructor(form, onSubmitted) {
    super(form, onSubmitted);
    for (const radio of form.querySelectorAll('input[name="loop-source"]')) {
      radio.addEventListener('change', () => this.showSource());
    }
    this.showSource();
  }

  get source() {
    return this.form.querySelector('input[name="loop-source"]:checked').value;
  }

  showSource() {
    for (const part of this.form.querySelectorAll('[data-source]')) {
      const shown = part.dataset.source === this.source;
      part.hidden = !shown;
      for (const control of part.querySelectorAll('select')) control.disabled = !shown;
    }
  }

  request() {
    const fields = fieldsOf(this.form);
    delete fields['loop-source'];
    if (this.source === 'upload') fields.upload_id = this.uploadFor(this.form.querySelector('#loop-file'));
    else if (!fields.job_id) throw new Error('choose a finished job (the list shows succeeded audio jobs)');
    return { form: asForm(fields) };
  }

  /** Offer `jobs` (succeeded, with audio) as sources. */
  setJobs(jobs) {
    const select = this.form.querySelector('#loop-job');
    const keep = select.value;
    select.replaceChildren(...jobs.map((job) => {
      const label = `${job.kind} · ${job.request?.prompt ?? job.id.slice(0, 8)}`;
      const option = document.createElement('option');
      option.value = job.id;
      option.textContent = label;
      return option;
    }));
    if (keep) select.value = keep;
  }

  /** Pre-select job `jobId` as the source. */
  useJob(jobId) {
    this.form.querySelector('input[name="loop-source"][value="job"]').checked = true;
    this.showSource();
    const select = this.form.querySelector('#loop-job');
    if (![...select.options].some((o) => o.value === jobId)) {
      const option = document.createElement('option');
      option.value = jobId;
      option.textContent = jobId;
      select.append(option);
    }
    select.value = jobId;
  }
}

class VoiceForm extends ToolForm {
  constructor(form, onSubmitted) {
    super(form, onSubmitted);
    this.speakers = form.querySelector('[data-speakers]');
    this.hint = form.querySelector('[data-speakers-hint]');
    this.again = form.querySelector('#voice-rediarize');
    this.again.addEventListener('click', () => this.diarize(this.current));
  }

  async uploaded(info) {
    this.current = info;
    this.again.disabled = false;
    await this.diarize(info);
  }

  async diarize(info) {
    const count = this.form.querySelector('#voice-num-speakers').value;
    this.speakers.replaceChildren();
    this.hint.textContent = 'Finding the speakers…';
    try {
      const found = await findSpeakers(info.upload_id, count ? Number(count) : null);
      renderSpeakers(this.speakers, found, info.duration_s);
      this.hint.textContent = `${found.num_speakers} speaker(s) found. Pick the one to re-speak:`;
    } catch (error) {
      this.hint.textContent = '';
      this.showError(describe(error));
    }
  }

  request() {
    const fields = fieldsOf(this.form);
    fields.upload_id = this.uploadFor(this.form.querySelector('#voice-file'));
    // The speakers were found on the uploaded mix: the job diarizes the same audio, so the picked
    // label names the same speaker.
    if (fields.separate) fields.analyze = 'input';
    return { form: asForm(fields) };
  }
}

const FORMS = { music: GenerationForm, sfx: GenerationForm, loop: LoopForm, 'voice-replace': VoiceForm };

/** A controller for every tool form in `root`, by kind. */
export function toolForms(root, onSubmitted) {
  const forms = {};
  for (const form of root.querySelectorAll('form[data-kind]')) {
    const Form = FORMS[form.dataset.kind] ?? ToolForm;
    forms[form.dataset.kind] = new Form(form, onSubmitted);
  }
  return forms;
}
