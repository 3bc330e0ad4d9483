// DOM helpers. Every text from the API goes in as a text node, every URL through safeUrl: the page
// never parses API data as HTML.

const URL_ATTRIBUTES = new Set(['href', 'src']);

/** A http(s) URL as an absolute string; anything else (javascript:, data:) is refused. */
export function safeUrl(value) {
  const url = new URL(String(value), window.location.href);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`refusing a ${url.protocol} URL`);
  }
  return url.href;
}

function setAttribute(node, name, value) {
  if (value === null || value === undefined || value === false) return;
  if (name === 'class') node.className = value;
  else if (name === 'dataset') Object.assign(node.dataset, value);
  else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
  else if (URL_ATTRIBUTES.has(name)) node.setAttribute(name, safeUrl(value));
  else node.setAttribute(name, value === true ? '' : String(value));
}

/** `el('p', {class: 'x'}, 'text', child)`: an element with attributes and text or element children. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) setAttribute(node, name, value);
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Seconds as `m:ss.s`. */
export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds)) return '–';
  const minutes = Math.floor(seconds / 60);
  const rest = (seconds - minutes * 60).toFixed(1).padStart(4, '0');
  return `${minutes}:${rest}`;
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return '';
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

/** An epoch time (seconds) as local date and time. */
export function formatTime(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleString();
}

/** A definition list of `[term, value]` pairs, skipping empty values. */
export function facts(pairs) {
  const list = el('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === '') continue;
    list.append(el('dt', {}, term), el('dd', {}, value));
  }
  return list;
}
