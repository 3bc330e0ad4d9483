// The HTTP API as the page calls it: the key the user entered, JSON and multipart requests, and the
// API's error bodies (`{error: {code, message}}`) as ApiError.

const KEY_NAME = 'soundstage.apiKey';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** What the page shows: status, code and the API's message. */
  describe() {
    const prefix = this.status ? `${this.status} ${this.code}` : this.code;
    const hint = this.status === 401 ? ' (enter the API key at the top of the page)' : '';
    return `${prefix}: ${this.message}${hint}`;
  }
}

/** The key in this tab (sessionStorage) or, if the user chose to remember it, on this device. */
export function apiKey() {
  return sessionStorage.getItem(KEY_NAME) ?? localStorage.getItem(KEY_NAME) ?? '';
}

export function rememberedKey() {
  return localStorage.getItem(KEY_NAME) !== null;
}

export function setApiKey(key, remember) {
  forgetApiKey();
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
}

export function forgetApiKey() {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
}

export function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** The ApiError a failed response stands for (its JSON error body, else its status line). */
export async function errorFrom(response) {
  let code = 'http_error';
  let message = response.statusText || 'the request failed';
  try {
    const body = await response.json();
    const error = body && typeof body === 'object' ? body.error : null;
    if (error && typeof error === 'object') {
      code = String(error.code ?? code);
      message = String(error.message ?? message);
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

function networkError(error) {
  return new ApiError(0, 'network_error', `the server could not be reached (${error.message})`);
}

/** Fetch with the key; a network failure becomes ApiError `network_error`, an abort stays an abort. */
export async function send(url, { method = 'GET', headers = {}, body, signal } = {}) {
  try {
    return await fetch(url, { method, headers: { ...authHeaders(), ...headers }, body, signal });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw networkError(error);
  }
}

/** Call the API: `json` is sent as a JSON body, `form` (FormData) as multipart. The parsed answer. */
export async function call(path, { method = 'GET', json, form, signal } = {}) {
  const headers = json === undefined ? {} : { 'Content-Type': 'application/json' };
  const body = json === undefined ? form : JSON.stringify(json);
  const response = await send(path, { method, headers, body, signal });
  if (!response.ok) throw await errorFrom(response);
  return response.status === 204 ? null : response.json();
}

/** A result file at its presigned URL (no key: the URL is the credential), as text. */
export async function fetchResultText(url) {
  let response;
  try {
    response = await fetch(url, { credentials: 'omit' });
  } catch (error) {
    throw networkError(error);
  }
  if (!response.ok) throw new ApiError(response.status, 'result_unavailable', 'the result file could not be read');
  return response.text();
}

export async function uploadFile(file) {
  const form = new FormData();
  form.append('file', file, file.name);
  return call('/v1/uploads', { method: 'POST', form });
}
