"""Topologies: who may send which team messages to whom.

A team declares a preset (`full`, `star`, `pipeline`, `pairs`, `none`) and any extra channels;
`expand` turns them into `Channel`s between member names (the form `RunInfo.channels` carries),
and `allowed` answers "may A send a message of kind K to B?". The agent runtime refuses a
message outside the channels before sending it, and drops one it receives from outside them;
`mlgym analyze` draws the same edges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from mlgym.bus import protocol as P

FORWARD = ("work", "question", "plan", "message", "review")  # down a pipeline
BACKWARD = ("result", "answer", "message", "verdict")  # back up a pipeline


class TopologyError(ValueError):
    """A topology that names members or kinds that do not exist."""


class ChannelSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`from` may send `kinds` to each of `to`; members are named by name, by role, or `*`."""

    sender: str = msgspec.field(name="from")
    to: list[str] = []
    kinds: list[str] = msgspec.field(default_factory=lambda: ["*"])


class Topology(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    kind: Literal["full", "star", "pipeline", "pairs", "none"] = "full"
    hub: str = ""  # star: the centre (a member or a role)
    order: list[str] = []  # pipeline: the stages, first to last
    pairs: list[list[str]] = []  # pairs: [[a, b], ...], each pair talks both ways
    kinds: list[str] = msgspec.field(
        default_factory=lambda: ["*"]
    )  # the kinds the preset's channels carry
    channels: list[ChannelSpec] = []  # more channels, on top of the preset's


def resolve(ref: str, members: dict[str, str]) -> list[str]:
    """Member names for a reference: a member's name, a role's name (all its members) or *."""
    if ref == "*":
        return list(members)
    if ref in members:
        return [ref]
    by_role = [n for n, r in members.items() if r == ref]
    if not by_role:
        raise TopologyError(
            f"{ref!r} is neither a member nor a role of this team (members: {', '.join(members)})"
        )
    return by_role


def _kinds(kinds: Iterable[str], within: Iterable[str] | None = None) -> set[str]:
    ks = set(kinds)
    if within is not None:
        ks = set(within) if "*" in ks else ks & set(within)
    return ks


def expand(top: Topology, members: dict[str, str]) -> list[P.Channel]:
    """The topology as channels between member names, one per sender and set of kinds."""
    edges: dict[tuple[str, str], set[str]] = {}

    def add(senders: Iterable[str], receivers: Iterable[str], kinds: set[str]) -> None:
        for s in senders:
            for r in receivers:
                if s != r and kinds:
                    edges.setdefault((s, r), set()).update(kinds)

    base = _kinds(top.kinds)
    names = list(members)
    if top.kind == "full":
        add(names, names, base)
    elif top.kind == "star":
        if not top.hub:
            raise TopologyError("a star topology needs `hub` (a member or a role)")
        hub = resolve(top.hub, members)
        others = [n for n in names if n not in hub]
        add(hub, others, base)
        add(others, hub, base)
    elif top.kind == "pipeline":
        if len(top.order) < 2:
            raise TopologyError("a pipeline topology needs `order` with at least two stages")
        stages = [resolve(ref, members) for ref in top.order]
        for up, down in zip(stages, stages[1:]):
            add(up, down, _kinds(top.kinds, FORWARD))
            add(down, up, _kinds(top.kinds, BACKWARD))
    elif top.kind == "pairs":
        for pair in top.pairs:
            if len(pair) != 2:
                raise TopologyError(f"pairs: {pair} is not a pair")
            a, b = resolve(pair[0], members), resolve(pair[1], members)
            add(a, b, base)
            add(b, a, base)
    for c in top.channels:
        add(
            resolve(c.sender, members),
            [n for ref in c.to for n in resolve(ref, members)],
            _kinds(c.kinds),
        )
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (s, r), ks in edges.items():
        grouped.setdefault((s, tuple(sorted(ks))), []).append(r)
    order = {n: i for i, n in enumerate(names)}
    if not grouped:  # nothing allowed; an empty list would mean "no topology: anything goes"
        return [P.Channel(sender="", receivers=[], kinds=[])]
    return [
        P.Channel(sender=s, receivers=sorted(rs, key=order.__getitem__), kinds=list(ks))
        for (s, ks), rs in sorted(grouped.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
    ]


def allowed(channels: list[P.Channel] | None, sender: str, receiver: str, kind: str) -> bool:
    """Whether `sender` may send a `kind` message to `receiver`. No channels at all (a run
    from before topologies) allows everything; a topology that allows nothing is one channel
    with no receivers."""
    if not channels:
        return True
    for c in channels:
        if c.sender == sender and receiver in c.receivers and (kind in c.kinds or "*" in c.kinds):
            return True
    return False


def reachable(
    channels: list[P.Channel] | None, sender: str, kind: str, members: Iterable[str]
) -> list[str]:
    """The members `sender` may send a `kind` message to, in member order."""
    return [m for m in members if m != sender and allowed(channels, sender, m, kind)]


def describe(channels: list[P.Channel] | None, sender: str) -> str:
    """What `sender` may send to whom, in words (for refusals and prompts)."""
    if not channels:
        return "anything to anyone"
    mine = [c for c in channels if c.sender == sender]
    if not mine:
        return "nothing to anyone"
    return "; ".join(f"{', '.join(c.kinds)} to {', '.join(c.receivers)}" for c in mine)
