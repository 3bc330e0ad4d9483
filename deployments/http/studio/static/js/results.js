// A finished job's result, by kind: players with waveforms, the spectrogram, per-stem players, the
// transcript and subtitles of a voice replacement, facts from the metadata, download links. Which
// models ran with `debug` (random-init) weights is said above every result, from the job's report.

import { call, fetchResultText } from './api.js';
import { el, facts, formatSeconds } from './dom.js';
import { audioPlayer } from './waveform.js';

const isAudio = (entry) => typeof entry?.media_type === 'string' && entry.media_type.startsWith('audio/');
const fileName = (entry) => new URL(entry.url).pathname.split('/').pop();

function link(entry, text) {
  return el('a', { href: entry.url, download: fileName(entry) }, text ?? `Download ${fileName(entry)}`);
}

/** The deployments that ran with `debug` weights, from the job's report (or, if the report cannot be
 * read, from the result's metadata). */
async function debugModels(job) {
  try {
    const report = await call(`/v1/jobs/${encodeURIComponent(job.id)}/report`);
    if (report.debug_weights?.length) return report.debug_weights;
  } catch {
    // fall back on the metadata below
  }
  const meta = job.result?.metadata ?? {};
  const debug = typeof meta.weights === 'string' && meta.weights.startsWith('debug');
  return debug ? [meta.model?.model_id ?? 'the model'] : [];
}

async function debugBanner(job) {
  const names = await debugModels(job);
  if (!names.length) return null;
  return el('p', { class: 'debug-banner', role: 'note', dataset: { debugWeights: names.join(',') } },
    el('strong', {}, 'Debug weights: '),
    `${names.join(', ')} ran with random-init test weights, so this output is not meaningful audio.`);
}

function generation(result) {
  const meta = result.metadata ?? {};
  const parts = [el('h3', {}, meta.prompt ? `“${meta.prompt}”` : 'Result')];
  if (result.audio?.url) parts.push(audioPlayer('Audio', result.audio));
  if (result.spectrogram?.url) {
    parts.push(el('figure', { class: 'player' }, el('figcaption', {}, el('strong', {}, 'Spectrogram')),
      el('img', { class: 'spectrogram', src: result.spectrogram.url, alt: 'Mel spectrogram of the result' })));
  }
  parts.push(facts([
    ['model', meta.model?.model_id], ['weights', meta.weights], ['seed', meta.seed],
    ['duration', meta.duration_s !== undefined ? `${meta.duration_s} s` : null],
    ['loudness', meta.loudness_lufs !== undefined && meta.loudness_lufs !== null ? `${meta.loudness_lufs.toFixed(1)} LUFS` : null],
    ['loopable', meta.loopable ? 'yes' : null],
    ['quality', meta.quality ? `${meta.quality.passed ? 'passed' : 'did not pass'}, ${meta.regenerations} regeneration(s)` : null],
  ]));
  if (result.metadata?.url) parts.push(el('p', {}, link(result.metadata, 'Download metadata.json')));
  return parts;
}

function stems(result) {
  const names = Object.keys(result).filter((name) => isAudio(result[name]));
  const meta = result.metadata ?? {};
  return [
    el('h3', {}, `${names.length} stems`),
    el('div', { class: 'stems' }, names.map((name) => audioPlayer(name, result[name]))),
    facts([['model', meta.model?.model_id], ['weights', meta.weights], ['segments', meta.segments]]),
  ];
}

function transcriptTable(body, target) {
  const rows = (body.lines ?? []).map((line) => el('tr', { class: line.speaker === target ? 'replaced' : null },
    el('td', {}, `${formatSeconds(line.start)}–${formatSeconds(line.end)}`),
    el('td', {}, line.speaker), el('td', {}, line.text)));
  return el('table', { class: 'transcript' },
    el('caption', { class: 'visually-hidden' }, 'Transcript'),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Time'), el('th', { scope: 'col' }, 'Speaker'),
      el('th', { scope: 'col' }, 'Line'))),
    el('tbody', {}, rows));
}

async function transcriptSection(result, target) {
  const section = el('div', { class: 'transcript-section' }, el('h3', {}, 'Transcript'));
  try {
    const body = JSON.parse(await fetchResultText(result.transcript.url));
    section.append(transcriptTable(body, target),
      el('p', { class: 'hint' }, `Lines of ${target} (highlighted) were re-spoken.`));
  } catch (error) {
    section.append(el('p', { class: 'error' }, `The transcript could not be read: ${error.message}`));
  }
  if (result.subtitles?.url) {
    const pre = el('pre', { class: 'srt', tabindex: '0', 'aria-label': 'Subtitles (SRT)' });
    section.append(el('details', {}, el('summary', {}, 'Subtitles (SRT)'), pre));
    fetchResultText(result.subtitles.url).then((text) => { pre.textContent = text; },
      (error) => { pre.textContent = `The subtitles could not be read: ${error.message}`; });
  }
  return section;
}

async function voiceReplacement(result) {
  const meta = result.metadata ?? {};
  const links = ['transcript', 'subtitles', 'report'].filter((name) => result[name]?.url)
    .map((name) => link(result[name]));
  return [
    el('h3', {}, `${meta.target_speaker ?? 'The speaker'} re-spoken as “${meta.voice ?? ''}”`),
    audioPlayer('Result', result.audio),
    facts([['lines replaced', meta.lines_replaced], ['target speaker', meta.target_speaker], ['voice', meta.voice]]),
    await transcriptSection(result, meta.target_speaker),
    el('p', { class: 'links' }, links),
  ];
}

function singleAudio(title, result, metaPairs) {
  return [el('h3', {}, title), audioPlayer(title, result.audio), facts(metaPairs)];
}

function loop(result) {
  const info = result.metadata?.loop ?? {};
  return singleAudio('Loop', result, [
    ['loop', info.start_s !== undefined ? `${formatSeconds(info.start_s)} → ${formatSeconds(info.end_s)}` : null],
    ['method', info.method], ['tempo', info.bpm ? `${info.bpm.toFixed(1)} BPM` : null],
    ['sha256', result.audio?.sha256],
  ]);
}

function pitchShift(result) {
  const meta = result.metadata ?? {};
  return singleAudio('Shifted', result, [
    ['semitones', meta.semitones], ['formants', meta.preserve_formants ? 'preserved' : 'shifted with the pitch'],
  ]);
}

function other(result) {
  return Object.entries(result).filter(([, entry]) => entry?.url)
    .map(([name, entry]) => (isAudio(entry) ? audioPlayer(name, entry) : el('p', {}, link(entry))));
}

const LOOPABLE = new Set(['music', 'sfx', 'pitch-shift', 'voice-replace']);

function loopButton(job) {
  if (!LOOPABLE.has(job.kind) || !job.result?.audio) return null;
  const ask = () => document.dispatchEvent(new CustomEvent('studio:loop-job', { detail: job.id }));
  return el('button', { type: 'button', onclick: ask }, 'Extend this audio as a loop…');
}

const RENDERERS = {
  music: generation, sfx: generation, separate: stems, 'voice-replace': voiceReplacement,
  loop, 'pitch-shift': pitchShift,
};

/** The elements that show `job`'s result (a succeeded job), the debug-weights banner first. */
export async function renderResult(job) {
  const result = job.result ?? {};
  const render = RENDERERS[job.kind] ?? other;
  const [banner, parts] = await Promise.all([debugBanner(job), render(result)]);
  return el('div', { class: 'result', dataset: { kind: job.kind } }, banner, parts, loopButton(job));
}
