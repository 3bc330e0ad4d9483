// An audio player with a waveform: the result is fetched from its presigned URL, decoded with Web
// Audio's decodeAudioData, and drawn on a canvas as one min/max bar per pixel column. The canvas shows
// what has played and seeks on click or with the arrow keys; the <audio> element beside it plays.

import { el, formatBytes, formatSeconds } from './dom.js';

// Longer or larger results (a 10 h loop) are played and downloaded, but not fetched to be drawn.
const MAX_DRAWN_S = 900;
const MAX_DRAWN_BYTES = 128 * 1024 * 1024;
const COLOURS = { background: '#15171c', wave: '#5b8def', played: '#f2a541', cursor: '#ffffff' };

/** Per-column [min, max] of all channels of `buffer` over `columns` columns. */
export function columnPeaks(buffer, columns) {
  const channels = Array.from({ length: buffer.numberOfChannels }, (_, c) => buffer.getChannelData(c));
  const perColumn = buffer.length / columns;
  const low = new Float32Array(columns);
  const high = new Float32Array(columns);
  for (let x = 0; x < columns; x += 1) {
    const start = Math.floor(x * perColumn);
    const end = Math.max(start + 1, Math.floor((x + 1) * perColumn));
    let lo = 0;
    let hi = 0;
    for (const data of channels) {
      for (let i = start; i < end && i < data.length; i += 1) {
        if (data[i] < lo) lo = data[i];
        if (data[i] > hi) hi = data[i];
      }
    }
    low[x] = lo;
    high[x] = hi;
  }
  return { low, high };
}

function draw(canvas, peaks, fraction) {
  const context = canvas.getContext('2d');
  const { width, height } = canvas;
  const middle = height / 2;
  const playedTo = fraction * width;
  context.fillStyle = COLOURS.background;
  context.fillRect(0, 0, width, height);
  for (let x = 0; x < peaks.low.length; x += 1) {
    const top = middle - Math.min(1, peaks.high[x]) * middle;
    const bottom = middle - Math.max(-1, peaks.low[x]) * middle;
    context.fillStyle = x < playedTo ? COLOURS.played : COLOURS.wave;
    context.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
  context.fillStyle = COLOURS.cursor;
  context.fillRect(Math.min(width - 1, Math.round(playedTo)), 0, 1, height);
}

async function decode(url, sampleRate) {
  const response = await fetch(url, { credentials: 'omit' });
  if (!response.ok) throw new Error(`the file answered ${response.status}`);
  const bytes = await response.arrayBuffer();
  // The context's rate is the file's, so decoding does not resample.
  const context = new OfflineAudioContext(1, 1, sampleRate || 44100);
  return context.decodeAudioData(bytes);
}

class Waveform {
  constructor(canvas, audio, note, figure) {
    Object.assign(this, { canvas, audio, note, figure, buffer: null, peaks: null });
  }

  get duration() {
    return Number.isFinite(this.audio.duration) ? this.audio.duration : this.buffer?.duration ?? 0;
  }

  async load(url, entry) {
    const tooLong = (entry.duration_s ?? 0) > MAX_DRAWN_S || (entry.bytes ?? 0) > MAX_DRAWN_BYTES;
    if (tooLong) return this.settle('skipped', 'Waveform not drawn for a file this long: play or download it.');
    try {
      this.buffer = await decode(url, entry.sample_rate);
    } catch (error) {
      // The object store must allow this page's origin (CORS) for the bytes to be read.
      return this.settle('failed', `Waveform unavailable: ${error.message}`);
    }
    this.resize();
    return this.settle('drawn', '');
  }

  settle(state, message) {
    this.figure.dataset.waveform = state;
    this.note.textContent = message;
  }

  resize() {
    if (!this.buffer) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
    if (width === this.canvas.width && this.peaks) return this.redraw();
    this.canvas.width = width;
    this.canvas.height = Math.round(this.canvas.clientHeight * ratio) || 88;
    this.peaks = columnPeaks(this.buffer, width);
    return this.redraw();
  }

  redraw() {
    const duration = this.duration;
    const now = this.audio.currentTime;
    if (this.peaks) draw(this.canvas, this.peaks, duration ? now / duration : 0);
    this.canvas.setAttribute('aria-valuemax', duration.toFixed(1));
    this.canvas.setAttribute('aria-valuenow', now.toFixed(1));
    this.canvas.setAttribute('aria-valuetext', `${formatSeconds(now)} of ${formatSeconds(duration)}`);
  }

  seek(seconds) {
    const duration = this.duration;
    if (!duration) return;
    this.audio.currentTime = Math.min(duration, Math.max(0, seconds));
    this.redraw();
  }

  onKey(event) {
    const step = event.shiftKey ? 10 : 2;
    const moves = {
      ArrowLeft: () => this.seek(this.audio.currentTime - step),
      ArrowRight: () => this.seek(this.audio.currentTime + step),
      Home: () => this.seek(0),
      End: () => this.seek(this.duration),
      ' ': () => (this.audio.paused ? this.audio.play() : this.audio.pause()),
    };
    if (!moves[event.key]) return;
    event.preventDefault();
    moves[event.key]();
  }

  animate() {
    this.redraw();
    if (!this.audio.paused) requestAnimationFrame(() => this.animate());
  }
}

/**
 * A <figure> that plays and draws the audio result `entry` (`{url, duration_s, sample_rate, channels,
 * media_type, bytes?}`), titled `label`, with a download link.
 */
export function audioPlayer(label, entry) {
  const name = new URL(entry.url).pathname.split('/').pop();
  const canvas = el('canvas', {
    role: 'slider', tabindex: '0', 'aria-label': `Waveform of ${label}: arrow keys seek, space plays`,
    'aria-valuemin': '0', 'aria-valuemax': '0', 'aria-valuenow': '0', height: '88',
  });
  const audio = el('audio', { controls: true, preload: 'metadata', src: entry.url, 'aria-label': `Play ${label}` });
  const note = el('p', { class: 'note', role: 'status' });
  const described = [
    formatSeconds(entry.duration_s),
    entry.sample_rate ? `${entry.sample_rate} Hz` : null,
    entry.channels ? (entry.channels === 1 ? 'mono' : `${entry.channels} ch`) : null,
    entry.bytes ? formatBytes(entry.bytes) : null,
  ].filter(Boolean).join(' · ');
  const figure = el('figure', { class: 'player', dataset: { waveform: 'loading' } },
    el('figcaption', {}, el('strong', {}, label), el('span', {}, described)),
    canvas, audio, note,
    el('div', { class: 'links' }, el('a', { href: entry.url, download: name }, `Download ${name}`)));
  const waveform = new Waveform(canvas, audio, note, figure);
  canvas.addEventListener('click', (event) => {
    const box = canvas.getBoundingClientRect();
    waveform.seek(((event.clientX - box.left) / box.width) * waveform.duration);
  });
  canvas.addEventListener('keydown', (event) => waveform.onKey(event));
  for (const name of ['timeupdate', 'seeked', 'loadedmetadata']) audio.addEventListener(name, () => waveform.redraw());
  audio.addEventListener('play', () => waveform.animate());
  new ResizeObserver(() => waveform.resize()).observe(canvas);
  waveform.load(entry.url, entry);
  return figure;
}
