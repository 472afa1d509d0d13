"""How team messages read inside a conversation, and which kind each body is. One place for
the wording, because the runtime writes it and the scripted policies (like any model) read it
back. A role may word the header itself (`message_template`, docs/teams.md); the parts below
({about}, {text}) stay the same."""

from __future__ import annotations

import re

from mlgym.agents.roles import MESSAGE
from mlgym.bus import protocol as P

MESSAGE_PREFIX = "MESSAGE FROM "
RECEIVED = "Received: "
_SCORES = re.compile(r"Scores: (\{[^}]*\})")
_ITEM = re.compile(r"work item (\w+)")
_NUMBER = re.compile(r"'?([A-Za-z0-9_ %-]+)'?\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|-?inf)")

# body type -> the kind a channel, `wakes_on` or `accepts` names (docs/teams.md)
KIND_OF: dict[type, str] = {
    P.WorkItem: "work", P.WorkResult: "result", P.Question: "question", P.Answer: "answer",
    P.PlanUpdate: "plan", P.TeamMessage: "message", P.ReviewRequest: "review",
    P.Review: "verdict",
}
TOPIC_OF: dict[str, str] = {
    "work": "team/work", "result": "team/result", "question": "team/question",
    "answer": "team/answer", "plan": "team/plan", "message": "team/message",
    "review": "team/review", "verdict": "team/verdict",
}


def kind_of(body: P.Body) -> str | None:
    return KIND_OF.get(type(body))


def parts(sender: str, body: P.Body) -> tuple[str, str, str]:
    """(sender as shown, what it is about, its text) of a team message."""
    match body:
        case P.WorkItem():
            return sender, f"work item {body.item}", f"{body.title}\n{body.instructions.rstrip()}"
        case P.WorkResult():
            return (sender, f"result of work item {body.item}, {body.status}",
                    f"{body.summary}\nScores: {dict(body.scores)}")
        case P.Question():
            return body.asker or sender, f"question {body.question_id}", body.text
        case P.Answer():
            src = ("\nSources: " + "; ".join(body.sources)) if body.sources else ""
            return sender, f"answer to question {body.question_id}", f"{body.text}{src}"
        case P.PlanUpdate():
            return sender, "plan update", body.plan
        case P.TeamMessage():
            return sender, "message", body.text
        case P.ReviewRequest():
            return (sender, f"review request {body.request_id}, validation at step {body.step}",
                    f"{body.summary}\nScores: {dict(body.scores)}")
        case P.Review():
            return (sender, f"verdict on review request {body.request_id}: {body.verdict}",
                    body.comment)
    return sender, type(body).__name__, repr(body)


def message_text(sender: str, body: P.Body, template: str = MESSAGE) -> str:
    who, about, text = parts(sender, body)
    return template.format(sender=who, about=about, text=text, kind=kind_of(body) or "")


def parse_scores(text: str) -> dict[str, float] | None:
    m = _SCORES.search(text or "")
    if not m:
        return None
    return {k.strip(): float(v) for k, v in _NUMBER.findall(m.group(1))}


def parse_item(text: str) -> str | None:
    m = _ITEM.search(text or "")
    return m.group(1) if m else None


def work_item_text(sender: str, w: P.WorkItem) -> str:
    return message_text(sender, w)


def work_result_text(sender: str, r: P.WorkResult) -> str:
    return message_text(sender, r)
