// The viewer's JSON API (docs/viewer.md). Run names may hold '/', each part is encoded.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function runPath(what, name) {
  return `/api/${what}/` + name.split('/').map(encodeURIComponent).join('/');
}

export async function get(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) url.searchParams.set(k, v);
  let r;
  try {
    r = await fetch(url, {credentials: 'same-origin'});
  } catch (e) {
    throw new ApiError(0, 'network', 'the viewer does not answer (is `mlgym view` still running?)');
  }
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    const err = (body && body.error) || {};
    throw new ApiError(r.status, err.code || 'http_' + r.status, err.message || r.statusText);
  }
  return r.json();
}
