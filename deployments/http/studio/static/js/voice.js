// Voice replacement's choices: the speakers of the uploaded audio (from `POST /v1/diarize`, or its job
// for long audio) to pick the target from, and the voice to speak in (stock or registered; a new one
// can be registered here).

import { call, fetchResultText } from './api.js';
import { el, formatSeconds } from './dom.js';
import { followJob } from './events.js';
import { describe } from './jobview.js';

const SPEAKER_COLOURS = ['#5b8def', '#f2a541', '#58c48b', '#e06c9f', '#b48ef0', '#4fc1c9', '#d9d36a', '#ff7a7a'];

async function diarizeJobTurns(job) {
  const done = {};
  await followJob(job.id, (name, data) => Object.assign(done, name === 'result' ? data : {}),
    new AbortController().signal);
  if (!done.result?.turns?.url) throw new Error('the diarization job did not succeed');
  return JSON.parse(await fetchResultText(done.result.turns.url));
}

/** `{turns: [{start, end, speaker}], num_speakers}` of upload `uploadId`. */
export async function findSpeakers(uploadId, numSpeakers) {
  const form = new FormData();
  form.append('upload_id', uploadId);
  if (numSpeakers) form.append('num_speakers', String(numSpeakers));
  const answer = await call('/v1/diarize', { method: 'POST', form });
  return answer.turns ? answer : diarizeJobTurns(answer);
}

function speakerTotals(turns) {
  const totals = new Map();
  for (const turn of turns) {
    const entry = totals.get(turn.speaker) ?? { seconds: 0, turns: 0 };
    entry.seconds += turn.end - turn.start;
    entry.turns += 1;
    totals.set(turn.speaker, entry);
  }
  return [...totals.entries()].sort(([a], [b]) => a.localeCompare(b));
}

function timeline(turns, colours, duration) {
  const bar = el('div', { class: 'turns', 'aria-hidden': 'true' });
  for (const turn of turns) {
    const span = el('span', { title: `${turn.speaker} ${formatSeconds(turn.start)}–${formatSeconds(turn.end)}` });
    span.style.left = `${(100 * turn.start) / duration}%`;
    span.style.width = `${Math.max(0.3, (100 * (turn.end - turn.start)) / duration)}%`;
    span.style.background = colours.get(turn.speaker);
    bar.append(span);
  }
  return bar;
}

function option(value, label, checked, colour) {
  const input = el('input', { type: 'radio', name: 'target_speaker', value, checked });
  const swatch = colour ? el('span', { 'aria-hidden': 'true' }, '■') : null;
  if (swatch) swatch.style.color = colour;
  return el('li', {}, el('label', { class: 'check' }, input, swatch, label));
}

/** The speaker choices for `diarization` in `container` (radio buttons named `target_speaker`). */
export function renderSpeakers(container, diarization, duration) {
  const totals = speakerTotals(diarization.turns);
  const colours = new Map(totals.map(([speaker], i) => [speaker, SPEAKER_COLOURS[i % SPEAKER_COLOURS.length]]));
  const choices = [option('auto', 'auto: the speaker with the most speech', true, null)];
  for (const [speaker, total] of totals) {
    const label = `${speaker}: ${total.seconds.toFixed(1)} s in ${total.turns} turn${total.turns === 1 ? '' : 's'}`;
    choices.push(option(speaker, label, false, colours.get(speaker)));
  }
  const end = Math.max(duration || 0, ...diarization.turns.map((t) => t.end), 0.001);
  container.replaceChildren(el('ul', {}, choices), timeline(diarization.turns, colours, end));
}

/** Fill `select` with the stock and registered voices; keep (or set) the selected one. */
export async function loadVoices(select, choose) {
  const voices = await call('/v1/voices');
  const keep = choose ?? select.value;
  const stock = el('optgroup', { label: 'Stock voices' },
    (voices.stock ?? []).map((name) => el('option', { value: name }, name)));
  const registered = el('optgroup', { label: 'Registered voices' },
    (voices.registered ?? []).map((p) => el('option', { value: p.voice_id }, `${p.name} (${p.voice_id.slice(0, 8)})`)));
  select.replaceChildren(stock, ...(voices.registered?.length ? [registered] : []));
  if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
}

/** Wire the "Register a voice" controls: upload the clip as a voice, then select it. */
export function wireRegistration({ file, name, transcript, button, status, select }) {
  button.addEventListener('click', async () => {
    if (!file.files.length) {
      status.textContent = 'Choose a reference clip first.';
      return;
    }
    const form = new FormData();
    form.append('file', file.files[0], file.files[0].name);
    form.append('name', name.value.trim() || 'voice');
    if (transcript.value.trim()) form.append('transcript', transcript.value.trim());
    button.setAttribute('aria-busy', 'true');
    status.classList.remove('bad');
    status.textContent = 'Registering…';
    try {
      const profile = await call('/v1/voices', { method: 'POST', form });
      await loadVoices(select, profile.voice_id);
      status.textContent = `Registered “${profile.name}”; it is now the chosen voice.`;
    } catch (error) {
      status.classList.add('bad');
      status.textContent = describe(error);
    } finally {
      button.removeAttribute('aria-busy');
    }
  });
}
