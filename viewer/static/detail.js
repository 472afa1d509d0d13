// An expanded event: the turn's thought, command and observation; a score with its artefact
// and the diff to the previous validation; a message's text; anything else as its fields.
import {el, clear, pre, pretty, num, dollars, when} from './util.js';
import {get, runPath} from './api.js';

const cache = new Map(); // `${run}#${seq}` -> detail (a few hundred at most)

export async function eventDetail(run, seq) {
  const key = `${run}#${seq}`;
  if (!cache.has(key)) {
    if (cache.size > 300) cache.delete(cache.keys().next().value);
    cache.set(key, get(runPath('event', run), {seq}));
  }
  try {
    return await cache.get(key);
  } catch (e) {
    cache.delete(key);
    throw e;
  }
}

function section(title, body, open = true) {
  const d = el('details', {class: 'sec', open: open || null}, el('summary', {}, title), body);
  return d;
}

function fields(obj, keys) {
  const dl = el('dl', {class: 'kv'});
  for (const k of keys) {
    const v = obj[k];
    if (v == null || v === '' || (typeof v === 'object' && !Object.keys(v).length)) continue;
    dl.append(el('dt', {}, k), el('dd', {}, typeof v === 'object' ? JSON.stringify(v) : String(v)));
  }
  return dl;
}

export function renderDetail(box, run, summary, ctx) {
  clear(box);
  box.append(el('p', {class: 'muted'}, 'Loading…'));
  eventDetail(run, summary.seq).then(d => {
    clear(box);
    const b = d.body || {};
    const kind = b.kind || summary.kind;
    const render = RENDER[kind] || renderOther;
    render(box, b, d, summary, ctx);
    box.append(footer(d, summary, ctx));
  }).catch(err => {
    clear(box);
    box.append(el('p', {class: 'error'}, `Could not load event ${summary.seq}: ${err.message}`));
  });
}

function footer(d, s, ctx) {
  const links = (d.links || []).filter(x => x !== s.seq);
  return el('div', {class: 'foot'},
    el('span', {}, `#${d.seq} · ${d.topic} · from ${d.sender || '?'} · ${when(d.ts)} · epoch ${d.epoch} · ${d.bytes} bytes`),
    links.length ? el('span', {class: 'links'}, 'linked: ', links.map(x =>
      el('a', {href: '#', onclick: ev => { ev.preventDefault(); ctx.goto(x); }}, `#${x}`))) : null);
}

function renderStep(box, b) {
  box.append(fields(b, ['agent', 'role', 'step', 'env_step', 'exit_code', 'prompt_tokens', 'completion_tokens',
    'model_latency_s', 'execution_time']));
  if (b.cost_usd) box.append(el('p', {class: 'muted'}, `cost ${dollars(b.cost_usd)}`));
  if (b.thought) box.append(section('Thought', pre(b.thought, 'thought')));
  box.append(section('Command', pre(b.action, 'command')));
  box.append(section('Observation', pre(b.observation, 'observation')));
  if (b.scores && Object.keys(b.scores).length) box.append(section('Scores', fields(b.scores, Object.keys(b.scores))));
  if (b.response) box.append(section('Model reply (raw)', pre(b.response), false));
  if (b.tool_calls && b.tool_calls.length) box.append(section(`Tool calls (${b.tool_calls.length})`, pretty(b.tool_calls), false));
  if (b.messages && b.messages.length) {
    box.append(section(`Prompt messages added this turn (${b.messages.length})`,
      b.messages.map(m => el('div', {class: 'msg'}, el('b', {}, m.role || '?'), pre(
        typeof m.content === 'string' ? m.content : JSON.stringify(m.content, null, 2)))), false));
  }
}

function renderScore(box, b, d, s, ctx) {
  const m = ctx.metric();
  const table = el('table', {class: 'mini'}, el('tr', {}, el('th', {}, 'metric'), el('th', {}, 'score'), el('th', {}, 'baseline')));
  for (const [k, v] of Object.entries(b.scores || {})) {
    table.append(el('tr', {class: m && k === m.name ? 'prio' : null}, el('td', {}, k), el('td', {}, num(v, 6)),
      el('td', {}, num((b.baseline || {})[k], 6))));
  }
  box.append(el('p', {}, `${b.action} at session step ${b.step}` + (s.agent ? ` by ${s.agent}` : '')));
  if (b.error) box.append(el('p', {class: 'error'}, b.error));
  box.append(table);
  if (s.art) {
    const slot = el('div', {class: 'artefact'});
    box.append(section(`Artefact that was scored (${s.art})`, slot));
    artefactView(slot, ctx.run, s.art);
  }
}

export function artefactView(slot, run, label) {
  clear(slot).append(el('p', {class: 'muted'}, 'Loading the artefact…'));
  get(runPath('artefact', run), {label}).then(a => {
    clear(slot);
    if (!a.files.length) slot.append(el('p', {class: 'muted'}, 'The copy holds no file.'));
    for (const f of a.files) {
      slot.append(el('h4', {}, `${f.name} · ${f.bytes} bytes` + (f.truncated ? ' (shown in part)' : '')));
      if (f.text == null) { slot.append(el('p', {class: 'muted'}, `binary file, sha256 ${f.sha256 || '?'}`)); continue; }
      const diff = f.diff != null ? diffView(f.diff) : null;
      slot.append(a.previous
        ? section(diff ? `Diff against ${a.previous}` : `No change against ${a.previous}`, diff || el('span'), true)
        : el('p', {class: 'muted'}, 'The first validated artefact of the run.'));
      slot.append(section('Content', pre(f.text, 'code'), !a.previous));
    }
  }).catch(err => {
    clear(slot).append(el('p', {class: 'muted'}, err.status === 404
      ? 'No copy of this artefact in the run folder (a copy is taken after each scored validation of a file artefact).'
      : `Could not load the artefact: ${err.message}`));
  });
}

export function diffView(text) {
  if (!text) return null;
  const box = el('pre', {class: 'diff'});
  for (const line of text.split('\n')) {
    const c = line.startsWith('+++') || line.startsWith('---') ? 'dh' : line.startsWith('@@') ? 'dr'
      : line.startsWith('+') ? 'da' : line.startsWith('-') ? 'dd' : null;
    box.append(el('span', {class: c}, line || ' '));
  }
  return box;
}

function renderCommand(box, b) {
  box.append(fields(b, ['session', 'step', 'agent']));
  box.append(section('Command', pre(b.command, 'command')));
}

function renderObservation(box, b) {
  box.append(fields(b, ['session', 'step', 'exit_code']));
  box.append(section('Output', pre(b.output, 'observation')));
}

function renderMessage(box, b) {
  const text = b.instructions || b.summary || b.text || b.plan || '';
  box.append(fields(b, ['item', 'title', 'assignee', 'status', 'question_id', 'asker', 'step']));
  if (text) box.append(pre(text, 'message'));
  if (b.sources && b.sources.length) box.append(section('Sources', el('ul', {}, b.sources.map(x => el('li', {}, x)))));
  if (b.scores && Object.keys(b.scores).length) box.append(fields(b.scores, Object.keys(b.scores)));
}

function renderRunInfo(box, b) {
  box.append(fields(b, ['run', 'task', 'team', 'session', 'generation', 'metric', 'reserve_steps']));
  box.append(section('Members', fields(b.members || {}, Object.keys(b.members || {}))));
  box.append(section('Budget', pretty({run: b.budget, agents: b.agent_budgets})));
  box.append(section('Baseline', pretty(b.baseline || {})));
  if (b.observation) box.append(section('The task as the session presented it', pre(b.observation), false));
}

function renderOther(box, b) {
  box.append(pretty(b));
}

const RENDER = {
  agent_step: renderStep, score_event: renderScore, command_event: renderCommand,
  observation_event: renderObservation, work_item: renderMessage, work_result: renderMessage,
  question: renderMessage, answer: renderMessage, plan_update: renderMessage, note: renderMessage,
  run_info: renderRunInfo,
};
