"""Scripted policies for the shipped team designs beyond the default one (docs/teams.md): a
lead that spreads candidates over parallel workers and picks the best (`parallel-3`), a judge
that has two proposers debate (`debate`), the proposers, a reviewer that approves or rejects
before a submit (`reviewer`), and peers that split the candidates without a planner (`flat`).

Like the other policies they read only the transcript (and the team's shape from the
context), so a restarted agent goes on where it stopped.
"""

from __future__ import annotations

import re

from mlgym.agents import team as T
from mlgym.agents.scripted.games import Candidate
from mlgym.agents.scripted.policy import (
    _CANDIDATE,
    _SENT,
    Action,
    Context,
    _better,
    _edit,
    _fmt,
    _lines_from,
    game_for,
)
from mlgym.agents.scripted.transcript import Transcript, scores_in

_DEBATE = re.compile(r"debate it with `([\w-]+)`")
_THEIRS = re.compile(r"candidate `(\w+)`.*?= (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|none)", re.DOTALL)
_VERDICT = re.compile(r"verdict on review request (\w+): (approve|reject)")


def _received(t: Transcript, marker: str) -> list[str]:
    """The `wait` observations holding `marker`, in order."""
    return [
        turn.observation
        for turn in t.turns
        if turn.command.strip() == "wait" and marker in (turn.observation or "")
    ]


def _score(scores: dict[str, float] | None, ctx: Context) -> float | None:
    return (scores or {}).get(ctx.metric)


def _validated(turn_obs: str, ctx: Context) -> float | None:
    return _score(scores_in(turn_obs), ctx)


# --------------------------------------------------------------------------- review gate


def review_gate(t: Transcript, ctx: Context, note: str, what: str) -> Action | None:
    """Before a submit that needs approval: ask for a review, wait for the verdict, and on a
    second rejection stop (the supervisor then submits the best artefact). None: submit."""
    cmds = [turn.command for turn in t.turns]
    reviews = [c for c in cmds if c.startswith("review ")]
    verdicts = [
        m.groups()
        for obs in _received(t, "verdict on review request")
        for m in [_VERDICT.search(obs)]
        if m
    ]
    if len(verdicts) < len(reviews):
        return (f"{note}I wait for the reviewer's verdict.", "wait")
    if verdicts and verdicts[-1][1] == "approve" and len(reviews) == len(verdicts):
        return None
    if len(reviews) >= 2:
        return (
            "The reviewer rejected the artefact twice; I stop here and leave the submission "
            "of the best validated artefact to the supervisor.",
            "finish the reviewer did not approve; the best validated artefact stands",
        )
    again = " again, restating the scores" if reviews else ""
    return (
        f"{note}Submitting needs the reviewer's approval: I ask for it{again}.",
        f"review {what} is the best validated artefact; please approve it for submission.",
    )


# --------------------------------------------------------------------------- lead and judge


def _assignments(ctx: Context, debate: bool) -> list[tuple[str, str, str, str]]:
    """(worker, candidate key, title, instructions) for each work item to send."""
    game = game_for(ctx.task)
    workers = list(ctx.workers)
    if game is None:
        recipe = "".join(f"$ {c}\n" for c in ctx.baseline_commands)
        return [
            (
                workers[0],
                "",
                "Reproduce the baseline",
                f"Run these commands in the workspace:\n{recipe}then validate the artefact and "
                "report the score with done.",
            )
        ]
    out = []
    for i, w in enumerate(workers):
        if i >= len(game.candidates):
            out.append(
                (
                    w,
                    "",
                    "Baseline control",
                    "Validate the starting artefact as it is (a baseline control) and report "
                    "the score with done.",
                )
            )
            continue
        c = game.candidates[i]
        text = f"Replace strategy.py with candidate `{c.key}` ({c.description}), validate it"
        if debate and len(workers) > 1:
            other = workers[1 - i] if len(workers) == 2 else workers[(i + 1) % len(workers)]
            text += (
                f", then debate it with `{other}`: send them your proposal and its score "
                "with `message`, read theirs with `wait`, and report with done which "
                "proposal should win."
            )
        else:
            text += " and report the score with done."
        out.append((w, c.key, f"{'Propose' if debate else 'Candidate'} {c.key}", text))
    return out


def lead(t: Transcript, ctx: Context, debate: bool = False) -> Action:
    """Spread the work over the workers at once, wait for every result, pick the best into the
    team's workspace, validate it (and have it reviewed), submit."""
    turns = t.turns
    cmds = [turn.command for turn in turns]
    plan = _assignments(ctx, debate)
    game = game_for(ctx.task)
    if not any(c.startswith("plan") for c in cmds):
        lines = "\n".join(f"{i}. {w}: {title}." for i, (w, _, title, _) in enumerate(plan, 1))
        step = len(plan) + 1
        return (
            "I split the work over the workers, to run in parallel, and share the plan.",
            f"plan\n{lines}\n{step}. Pick the best result, validate it and submit it.\nend_of_plan",
        )
    if ctx.has_literature and game and not any(c.startswith("ask ") for c in cmds):
        return ("Meanwhile I ask the literature agent for background.", f"ask {game.question}")
    sent = [c for c in cmds if c.startswith("assign ")]
    if len(sent) < len(plan):
        w, _, title, text = plan[len(sent)]
        return (f"Work item for {w}: {title}.", f"assign @{w} {title}\n{text}\nend_of_assign")
    items: dict[str, str] = {}  # work item id -> candidate key
    for turn in turns:
        m = _SENT.search(turn.observation or "") if turn.command.startswith("assign ") else None
        if m:
            key = _CANDIDATE.search(turn.command)
            items[m.group(1)] = key.group(1) if key else ""
    results: dict[str, float | None] = {}
    for obs in _received(t, "result of work item"):
        item = T.parse_item(obs)
        if item:
            results[item] = _score(T.parse_scores(obs), ctx)
    if len(results) < len(plan):
        return (f"{len(results)} of {len(plan)} results are in; I wait for the others.", "wait")
    best: str | None = None
    for item, v in results.items():
        if v is not None and (best is None or _better(v, results[best], ctx.direction)):
            best = item
    summary = (
        "Results: "
        + ", ".join(f"{i} ({items.get(i) or 'baseline'}) {_fmt(v)}" for i, v in results.items())
        + ". "
    )
    picks = [j for j, c in enumerate(cmds) if c.startswith("pick ")]
    if best is not None and not picks:
        return (
            f"{summary}{best} is the best: I copy its artefact into the team's workspace.",
            f"pick {best}",
        )
    after = picks[-1] if picks else -1
    validated = [j for j, c in enumerate(cmds) if c.strip() == "validate" and j > after]
    if not validated:
        return (f"{summary}I validate the picked artefact in the team's workspace.", "validate")
    if ctx.approvers:
        gate = review_gate(t, ctx, summary, f"The artefact of {best}" if best else "The artefact")
        if gate is not None:
            return gate
    score = _validated(turns[validated[-1]].observation, ctx)
    return (
        f"{summary}The picked artefact validated at {_fmt(score)} in the team's workspace; "
        "I submit it.",
        "submit",
    )


def judge(t: Transcript, ctx: Context) -> Action:
    return lead(t, ctx, debate=True)


# --------------------------------------------------------------------------- proposer


def proposer(t: Transcript, ctx: Context) -> Action:
    """A coder that, when told to debate, tells its opponent its proposal and score, reads
    theirs, and says in its report which should win."""
    from mlgym.agents.scripted.policy import coder

    last = t.last_message()
    if last is None:
        return coder(t, ctx)
    idx, text = last
    other = _DEBATE.search(text)
    game = game_for(ctx.task)
    m = _CANDIDATE.search(text)
    cand = next((c for c in game.candidates if m and c.key == m.group(1)), None) if game else None
    if other is None or cand is None:
        return coder(t, ctx)
    turns = t.turns[idx + 1 :]
    script = ["open", "edit", "validate", "message", "wait", "done"]
    kind = script[min(len(turns), len(script) - 1)]
    if kind == "open":
        return ("I open the strategy file to see its current length.", 'open "strategy.py"')
    if kind == "edit":
        return (
            f"I put my proposal, candidate `{cand.key}`, in place: {cand.description}.",
            _edit(_lines_from(turns[0]) or 1, cand.code),
        )
    if kind == "validate":
        return ("Now I validate my proposal.", "validate")
    mine = _validated(turns[2].observation, ctx) if len(turns) > 2 else None
    if kind == "message":
        return (
            f"My proposal scored {_fmt(mine)}. I make my case to {other.group(1)}.",
            f"message {other.group(1)}\nI propose candidate `{cand.key}` ({cand.description}); "
            f"it validated at {ctx.metric} = {_fmt(mine)}.\nend_of_message",
        )
    if kind == "wait":
        return ("I read my opponent's proposal.", "wait")
    theirs_obs = turns[4].observation if len(turns) > 4 else ""
    tm = _THEIRS.search(theirs_obs or "")
    their_key, their_v = (
        (tm.group(1), None if tm.group(2) == "none" else float(tm.group(2))) if tm else ("?", None)
    )
    verdict = (
        "mine should win"
        if _better(mine, their_v, ctx.direction) or their_v is None
        else f"I concede: `{their_key}` should win"
    )
    return (
        f"Candidate `{cand.key}` scored {_fmt(mine)}; `{their_key}` scored {_fmt(their_v)}. "
        "I report.",
        f"done proposal `{cand.key}` validated at {ctx.metric} = {_fmt(mine)}; the other "
        f"proposal `{their_key}` scored {_fmt(their_v)}: {verdict}",
    )


# --------------------------------------------------------------------------- reviewer


def reviewer(t: Transcript, ctx: Context) -> Action:
    """Read the diff, then approve an artefact that is not worse than the baseline (by more than
    5% of it), else reject it."""
    last = t.last_message()
    if last is None:
        return ("No review request yet; I check the shared memory.", f"memory_read {ctx.task}")
    idx, text = last
    turns = t.turns[idx + 1 :]
    if not turns:
        return ("A review request: first I read what changed.", "diff")
    score = _score(T.parse_scores(text), ctx)
    base = ctx.baseline.get(ctx.metric)
    if score is None:
        return (
            "The request carries no score: the artefact was not validated.",
            "reject the artefact has no validation score; validate it and ask again",
        )
    tol = 0.05 * abs(base) if base is not None else 0.0
    ok = base is None or _better(score, base, ctx.direction) or abs(score - base) <= tol
    if ok:
        return (
            f"The change validated at {_fmt(score)} against the baseline's {_fmt(base)}.",
            f"approve validated at {ctx.metric} = {_fmt(score)} (baseline {_fmt(base)}); the diff "
            "matches the summary",
        )
    return (
        f"The artefact scores {_fmt(score)}, worse than the baseline's {_fmt(base)}.",
        f"reject {ctx.metric} = {_fmt(score)} is worse than the baseline's {_fmt(base)}; restore "
        "a better artefact",
    )


# --------------------------------------------------------------------------- peers


def peer(t: Transcript, ctx: Context) -> Action:
    """A flat team's member: it takes every n-th candidate (n peers, by name order), validates
    each in its own workspace, tells the others its best, and finishes; the team's merge rule
    submits the best artefact of all."""
    peers = sorted({ctx.name, *(m for m, r in ctx.members.items() if r == ctx.role)})
    i, n = peers.index(ctx.name), len(peers)
    game = game_for(ctx.task)
    turns = t.turns
    script: list[tuple[str, Candidate | str | None]] = []
    if game is not None:
        mine = game.candidates[i::n]
        if mine:
            script.append(("open", None))
            for c in mine:
                script += [("edit", c), ("validate", c)]
    elif i == 0:
        script += [("run", c) for c in ctx.baseline_commands] + [("validate", None)]
    script += [("message", None), ("finish", None)]
    pos = min(len(turns), len(script) - 1)
    kind, what = script[pos]
    scored: list[tuple[str, float | None]] = []
    for j, (k, c) in enumerate(script[:pos]):
        if k == "validate" and j < len(turns):
            scored.append(
                (
                    c.key if isinstance(c, Candidate) else "baseline",
                    _validated(turns[j].observation, ctx),
                )
            )
    if kind == "open":
        return (
            "I take my share of the candidates; first I open the strategy file.",
            'open "strategy.py"',
        )
    if kind == "edit":
        assert isinstance(what, Candidate)
        prev = [c for k, c in script[:pos] if k == "edit"]
        lines = prev[-1].lines if prev else (_lines_from(turns[0]) or 1)  # type: ignore[union-attr]
        return (f"I try candidate `{what.key}`: {what.description}.", _edit(lines, what.code))
    if kind == "run":
        return (f"I produce the artefact with the task's recipe: `{what}`.", str(what))
    if kind == "validate":
        return ("I validate it in my workspace.", "validate")
    best = None
    for key, v in scored:
        if v is not None and (best is None or _better(v, best[1], ctx.direction)):
            best = (key, v)
    found = (
        f"my best: `{best[0]}` at {ctx.metric} = {_fmt(best[1])}"
        if best
        else "nothing validated on my side"
    )
    if kind == "message":
        others = [p for p in peers if p != ctx.name]
        if not others:
            return (f"I am the only peer; {found}.", f"finish {found}")
        return (
            f"I tell the other peers what I found: {found}.",
            f"message all\n{ctx.name}: {found}.\nend_of_message",
        )
    return (f"My share is done; {found}.", f"finish {found}")
