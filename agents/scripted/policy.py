"""Deterministic policies, one per role, for the scripted model. Each reads the transcript it
was given and returns the next (thought, command), like a model would: nothing is kept
between calls, so a restarted agent (its conversation rebuilt from the event log) goes on
exactly where it stopped.

For the game tasks the policies try the known candidate strategies in order, validate each in
the environment, keep the best and submit it. For other tasks they validate and submit the
starting artefact (the baseline), which still exercises the whole pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mlgym.agents import team as T
from mlgym.agents.scripted.games import GAMES, Candidate, Game
from mlgym.agents.scripted.transcript import Transcript, Turn, scores_in

Action = tuple[str, str]  # (thought, command)

_LINES_TOTAL = re.compile(r"\((\d+) lines total\)")
_RESTATED = re.compile(r"Candidate `(\w+)` scored (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|none)")
_CANDIDATE = re.compile(r"candidate `(\w+)`")
_SENT = re.compile(r"Work item (\w+) sent")


@dataclass
class Context:
    role: str
    task: str
    metric: str = "Score"
    direction: str = "max"
    has_literature: bool = True
    baseline_commands: tuple[str, ...] = ()  # the task's own recipe for its baseline artefact
    name: str = ""  # this member's name
    members: dict[str, str] = field(default_factory=dict)  # the team: name -> role
    approvers: tuple[str, ...] = ()  # members whose approval `submit` needs
    workers: tuple[str, ...] = ()  # members that take work items
    baseline: dict[str, float] = field(default_factory=dict)


def game_for(task: str) -> Game | None:
    return GAMES.get(task)


def _better(a: float | None, b: float | None, direction: str) -> bool:
    if a is None:
        return False
    if b is None:
        return True
    return a > b if direction == "max" else a < b


def _fmt(v: float | None) -> str:
    return "none" if v is None else f"{v:.6g}"


def _edit(lines_now: int, code: str) -> str:
    return f"edit 1:{max(lines_now, 1)}\n{code}end_of_edit"


def _lines_from(turn: Turn | None) -> int | None:
    if turn is None:
        return None
    m = _LINES_TOTAL.search(turn.observation or "")
    return int(m.group(1)) if m else None


def _score_of(turns: list[Turn], j: int, key: str, metric: str) -> float | None:
    """The score a validate at turn j gave: from its observation, or (when the history policy
    shortened it) from the next turn's discussion, where the policy restated it."""
    scores = scores_in(turns[j].observation)
    if scores is not None:
        return scores.get(metric)
    if j + 1 < len(turns):
        for k, v in _RESTATED.findall(turns[j + 1].thought):
            if k == key:
                return None if v == "none" else float(v)
    return None


# --------------------------------------------------------------------------- single agent


def single(t: Transcript, ctx: Context) -> Action:
    game = game_for(ctx.task)
    if game is None:
        return _single_generic(t, ctx)
    cands = game.candidates
    turns = t.turns
    n = len(turns)
    if n == 0:
        return ("I will start by listing the files of the workspace.", "ls -la")
    if n == 1:
        return (f"The submission artefact is strategy.py. Let me read the starting strategy for the {game.title}.",
                'open "strategy.py"')
    script: list[tuple[str, int]] = []
    for i in range(len(cands)):
        script.append(("edit", i))
        if i == 0:
            script.append(("practice", i))
        script.append(("validate", i))
    pos = n - 2
    note = ""
    if turns[-1].command.strip() == "validate" and pos - 1 < len(script):
        _, i = script[pos - 1]
        note = f"Candidate `{cands[i].key}` scored {_fmt(_score_of(turns, n - 1, cands[i].key, ctx.metric))}. "
    if pos < len(script):
        kind, i = script[pos]
        c = cands[i]
        if kind == "edit":
            lines_now = _lines_from(turns[1]) if i == 0 else cands[i - 1].lines
            return (f"{note}Next I will try candidate `{c.key}`: {c.description}. I replace the whole file with it.",
                    _edit(lines_now or 1, c.code))
        if kind == "practice":
            return ("The file is updated. A quick local run checks that the strategy works before I validate it.",
                    "python evaluate.py")
        return (f"{note}Now I validate candidate `{c.key}` to get its real score.", "validate")
    # every candidate was tried: keep the best
    results = []
    for j, (kind, i) in enumerate(script):
        if kind == "validate":
            results.append((cands[i], _score_of(turns, j + 2, cands[i].key, ctx.metric)))
    best = _best(results, ctx.direction)
    summary = note + "Scores so far: " + ", ".join(f"`{c.key}` {_fmt(s)}" for c, s in results) + ". "
    edits = sum(1 for turn in turns if turn.command.startswith("edit "))
    if best is not None and best is not cands[-1] and edits == len(cands):
        return (f"{summary}`{best.key}` is the best, so I put it back before submitting.",
                _edit(cands[-1].lines, best.code))
    return (f"{summary}The best candidate is in strategy.py; I submit it.", "submit")


def _best(results: list[tuple[Candidate, float | None]], direction: str) -> Candidate | None:
    best: tuple[Candidate, float | None] | None = None
    for c, s in results:
        if s is not None and (best is None or _better(s, best[1], direction)):
            best = (c, s)
    return best[0] if best else None


def _single_generic(t: Transcript, ctx: Context) -> Action:
    """No known improvement for this task: reproduce its baseline, validate, submit."""
    steps = [("I will start by listing the files of the workspace.", "ls -la")]
    steps += [(f"I produce the starting artefact with the task's baseline recipe: `{c}`.", c)
              for c in ctx.baseline_commands]
    steps += [("I validate the artefact to see where the baseline stands.", "validate"),
              ("I have no better idea for this task, so I submit the current artefact.", "submit")]
    return steps[min(len(t.turns), len(steps) - 1)]


# --------------------------------------------------------------------------- team: coder


def coder(t: Transcript, ctx: Context) -> Action:
    last = t.last_message()
    if last is None:
        return ("No work item has arrived yet; I look at the workspace meanwhile.", "ls -la")
    idx, text = last
    item = T.parse_item(text) or "?"
    turns = t.turns[idx + 1:]
    first_item = not any(turn.command.startswith("done ") for turn in t.turns[: idx + 1])
    game = game_for(ctx.task)
    m = _CANDIDATE.search(text)
    cand = next((c for c in game.candidates if m and c.key == m.group(1)), None) if game else None
    runs = [ln[2:].strip() for ln in text.splitlines() if ln.startswith("$ ") and ln[2:].strip()]
    if cand is None:
        script = [f"run:{c}" for c in runs] + ["validate", "done"]
    else:
        script = (["memory_read"] if first_item else []) + ["open", "edit"] + (["practice"] if first_item else []) + ["validate", "done"]
    pos = min(len(turns), len(script) - 1)
    kind = script[pos]
    if kind.startswith("run:"):
        return (f"Work item {item} asks me to run `{kind[4:]}`.", kind[4:])
    if kind == "memory_read":
        return (f"Work item {item} asks for candidate `{cand.key}`. First I check the shared memory for findings.",  # type: ignore[union-attr]
                f"memory_read {game.title} strategy")  # type: ignore[union-attr]
    if kind == "open":
        return ("I open the strategy file to see its current length.", 'open "strategy.py"')
    if kind == "edit":
        lines_now = _lines_from(turns[pos - 1]) or 1
        return (f"I replace strategy.py with candidate `{cand.key}`: {cand.description}.", _edit(lines_now, cand.code))  # type: ignore[union-attr]
    if kind == "practice":
        return ("A quick local run checks that the strategy runs.", "python evaluate.py")
    if kind == "validate":
        return ("Now I validate the artefact.", "validate")
    vidx = next((k for k in range(len(turns) - 1, -1, -1) if turns[k].command.strip() == "validate"), None)
    score = None
    if vidx is not None:
        scores = scores_in(turns[vidx].observation)
        score = scores.get(ctx.metric) if scores else None
    what = (f"candidate `{cand.key}` is in strategy.py" if cand else
            f"ran {', '.join(runs)} and validated the artefact" if runs else "validated the current artefact")
    return (f"Candidate `{cand.key if cand else 'current'}` scored {_fmt(score)}. I report back.",
            f"done {what}; validation {ctx.metric} = {_fmt(score)}")


# --------------------------------------------------------------------------- team: literature


def literature(t: Transcript, ctx: Context) -> Action:
    last = t.last_message()
    if last is None:
        return ("No question yet; I check the shared memory.", f"memory_read {ctx.task}")
    idx, text = last
    question = text.split("): ", 1)[-1].strip()
    turns = t.turns[idx + 1:]
    query = " ".join(re.findall(r"[A-Za-z]{3,}", question))[:200] or ctx.task
    if not turns:
        return ("I search the literature for this question.", f'literature_search "{query}" 3')
    found = turns[0].observation or ""
    first = next((ln.split(". ", 1)[-1] for ln in found.splitlines() if re.match(r"^1\. ", ln)), "")
    snippet = ""
    lines = found.splitlines()
    for k, ln in enumerate(lines):
        if re.match(r"^1\. ", ln):
            for nxt in lines[k + 1:k + 5]:
                s = nxt.strip()
                if s and not s.startswith(("Authors:", "URL:", "[source")) and not re.match(r"^\d+\. ", s):
                    snippet = s[:300]
                    break
            break
    if len(turns) == 1:
        if first:
            return ("The search found relevant work; I save the main finding to the shared memory.",
                    f"memory_write {ctx.task}: {first}. {snippet}".strip())
        return ("The search found nothing useful; I note that in the shared memory.",
                f"memory_write {ctx.task}: no literature found for: {query}")
    if first:
        return ("I answer the question with the finding.", f"answer See {first}: {snippet}".strip())
    return ("I answer that the literature search found nothing.", f"answer The literature search found nothing for: {query}")


# --------------------------------------------------------------------------- team: planner


def planner(t: Transcript, ctx: Context) -> Action:
    if len(ctx.workers) > 1:  # parallel workers: agents/scripted/teams.py
        from mlgym.agents.scripted.teams import lead

        return lead(t, ctx)
    game = game_for(ctx.task)
    cands: tuple[Candidate, ...] = game.candidates if game else ()
    turns = t.turns
    cmds = [turn.command for turn in turns]
    if not any(c.startswith("plan") for c in cmds):
        if cands:
            steps = "\n".join(f"{i}. Have the coder implement and validate candidate `{c.key}`: {c.description}."
                              for i, c in enumerate(cands, 1))
            text = f"{steps}\n{len(cands) + 1}. Keep the best candidate (restore it if needed), validate, submit."
        else:
            text = "1. Have the coder reproduce the baseline artefact and validate it.\n2. Submit it."
        return ("I write down the plan and share it with the team.", f"plan\n{text}\nend_of_plan")
    if ctx.has_literature and game and not any(c.startswith("ask ") for c in cmds):
        return ("Meanwhile I ask the literature agent for background.", f"ask {game.question}")
    # assignments and their results, in order
    assigned: list[tuple[int, str]] = []  # (turn index, candidate key or "")
    for j, c in enumerate(cmds):
        if c.startswith("assign "):
            m = _CANDIDATE.search(c)
            assigned.append((j, m.group(1) if m else ""))
    results: list[tuple[str, dict[str, float] | None]] = []  # per assignment, in order
    for j, turn in enumerate(turns):
        if turn.command.strip() != "wait":
            continue
        obs = turn.observation or ""
        if "result of work item" in obs:
            results.append((T.parse_item(obs) or "", T.parse_scores(obs)))
        elif obs.startswith("Old environment output") and j + 1 < len(turns) and _RESTATED.search(turns[j + 1].thought):
            results.append(("", None))  # shortened: the score is restated in the next discussion
    note = ""
    if turns and turns[-1].command.strip() == "wait":
        obs = turns[-1].observation or ""
        if "result of work item" in obs and assigned and len(results) <= len(assigned):
            key = assigned[len(results) - 1][1]
            s = (results[-1][1] or {}).get(ctx.metric)
            note = f"Candidate `{key}` scored {_fmt(s)}. "
        elif "answer to question" in obs:
            note = "The literature agent answered; that fits the plan. "
    if len(assigned) > len(results):
        return (f"{note}I wait for the coder's result.", "wait")
    scored: dict[str, float | None] = {}
    for (j, key), (_, sc) in zip(assigned, results):
        v = (sc or {}).get(ctx.metric)
        if v is None:  # shortened observation: use what was restated
            for k, val in (m for turn in turns[j:] for m in _RESTATED.findall(turn.thought)):
                if k == key and val != "none":
                    v = float(val)
        if key:
            scored[key] = v
    tried = [key for _, key in assigned]
    for c in cands:
        if c.key not in tried:
            return (f"{note}Next: candidate `{c.key}`.",
                    f"assign Candidate {c.key}\nReplace strategy.py with candidate `{c.key}` ({c.description}), "
                    f"validate it and report the score with done.\nend_of_assign")
    if not cands and not assigned:
        recipe = "".join(f"$ {c}\n" for c in ctx.baseline_commands)
        return ("I ask the coder to reproduce the baseline artefact and validate it.",
                f"assign Reproduce the baseline\nRun these commands in the workspace:\n{recipe}"
                "then validate the artefact and report the score with done.\nend_of_assign")
    summary = note + ("Scores: " + ", ".join(f"`{k}` {_fmt(v)}" for k, v in scored.items()) + ". " if scored else "")
    best = _best([(c, scored.get(c.key)) for c in cands], ctx.direction) if cands else None
    current = tried[-1] if tried else ""
    if best is not None and best.key != current:
        return (f"{summary}`{best.key}` is the best but not the current artefact: the coder restores it.",
                f"assign Restore candidate {best.key}\nPut candidate `{best.key}` back into strategy.py, validate it "
                f"and report with done.\nend_of_assign")
    if not any(c.startswith("memory_write") for c in cmds) and best is not None:
        return (f"{summary}I record the outcome in the shared memory for later runs.",
                f"memory_write {ctx.task}: best candidate {best.key} scored {_fmt(scored.get(best.key))} "
                f"({ctx.metric}, validated by the team)")
    last_scored = bool(results) and (results[-1][1] or {}).get(ctx.metric) is not None
    if not last_scored and not any(c.strip() == "validate" for c in cmds):
        return (f"{summary}The current artefact has no score yet; I validate it before submitting.", "validate")
    if ctx.approvers:
        from mlgym.agents.scripted.teams import review_gate

        what = f"Candidate `{best.key}`" if best else "The current artefact"
        gate = review_gate(t, ctx, summary, what)
        if gate is not None:
            return gate
    return (f"{summary}The current artefact is the best and is validated; I submit.", "submit")


def _team_policies() -> dict:
    from mlgym.agents.scripted import teams

    return {"reviewer": teams.reviewer, "judge": teams.judge, "proposer": teams.proposer,
            "peer": teams.peer}


POLICIES = {"single": single, "coder": coder, "planner": planner, "literature": literature,
            **_team_policies()}


def bench_step(turn: int, chatter: int = 0) -> Action:
    """For `mlgym bench agents`: cheap ACI commands forever (the framework's cost dominates),
    and with `chatter` a message to the team every `chatter` turns."""
    if chatter and turn and turn % chatter == 0:
        return ("Tell the team.", f"message all\nping {turn}\nend_of_message")
    if turn == 0:
        return ("Open the file once.", 'open "strategy.py"')
    return ("Move the window.", f"goto {1 + turn % 3}")
