// The viewer's single page: #/ the run list, #/run/NAME a run, #/compare/A,B,... runs side by
// side. The token (when the viewer needs one) arrives in the URL once and is kept in a cookie
// by the server; it is taken out of the address bar so it is not copied along with it.
import {el, clear} from './util.js';
import {get} from './api.js';
import {ListPage} from './list.js';
import {RunPage} from './run.js';
import {ComparePage} from './compare.js';
import './stats.js';

const main = document.getElementById('app');
const crumbs = document.getElementById('crumbs');
let page = null;
let info = null;

if (new URLSearchParams(location.search).has('token')) {
  history.replaceState(null, '', location.pathname + location.hash);
}

function setCrumbs(parts) {
  clear(crumbs);
  parts.forEach(([text, href], i) => {
    if (i) crumbs.append(el('span', {class: 'sep'}, '/'));
    crumbs.append(href ? el('a', {href}, text) : el('span', {}, text));
  });
}

function route() {
  if (page && page.destroy) page.destroy();
  page = null;
  const hash = location.hash || '#/';
  let m;
  if ((m = hash.match(/^#\/run\/(.+)$/))) {
    page = new RunPage(main, decodeURIComponent(m[1]), setCrumbs);
  } else if ((m = hash.match(/^#\/compare\/(.+)$/))) {
    page = new ComparePage(main, m[1].split(',').map(decodeURIComponent), setCrumbs);
  } else {
    page = new ListPage(main, info, setCrumbs);
  }
}

async function start() {
  try {
    info = await get('/api/info');
  } catch (e) {
    clear(main).append(el('p', {class: 'error pad'}, e.message));
    return;
  }
  document.getElementById('root').textContent = info.root;
  if (info.single && (!location.hash || location.hash === '#/')) {
    history.replaceState(null, '', location.pathname + '#/run/' + encodeURIComponent(info.single));
  }
  window.addEventListener('hashchange', route);
  route();
}

start();
