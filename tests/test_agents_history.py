"""History policies: what the model sees turn after turn. `stable:K` keeps the prompt's prefix
byte-identical between its stubbing turns (what prompt caches need), `last:N` changes it every
turn; `shorten` makes the view smaller after a context overflow."""

from __future__ import annotations

import pytest

from mlgym.agents.history import CLIP_MIN, Entry, HistoryPolicy, check_spec
from mlgym.agents.llm import Message


def conversation(turns: int, obs_lines: int = 3) -> list[Entry]:
    out = [Entry(Message.system("system prompt")), Entry(Message.user("the task"))]
    for i in range(turns):
        out.append(Entry(Message.assistant(f"DISCUSSION\nturn {i}\n```\ngoto {i}\n```")))
        body = "\n".join(f"{i}:{j} some file line" for j in range(obs_lines))
        out.append(Entry(Message.user(body), observation=True))
    return out


def prefix_kept(before: list[Message], after: list[Message]) -> int:
    """How many leading messages of `before` are byte-identical at the start of `after`."""
    n = 0
    for a, b in zip(before, after):
        if a != b:
            break
        n += 1
    return n


def full_observations(view: list[Message]) -> int:
    return sum(1 for m in view[2:]
               if m.role == "user" and not m.content.startswith("Old environment"))


def test_last_n_changes_the_prefix_every_turn_once_it_stubs():
    policy = HistoryPolicy("last:5")
    views = [policy.view(conversation(t)) for t in range(1, 31)]
    for t in range(6, 30):  # t+1 observations: the (t-5)-th is stubbed now
        before, after = views[t - 1], views[t]
        assert prefix_kept(before, after) < len(before), t
        assert full_observations(after) == 5


@pytest.mark.parametrize(("spec", "keep", "block"), [("stable:5", 5, 10), ("stable:4:5", 4, 5)])
def test_stable_only_grows_between_stubbing_turns(spec, keep, block):
    policy = HistoryPolicy(spec)
    views = [policy.view(conversation(t)) for t in range(1, 41)]
    changed = []
    for t in range(1, 40):
        before, after = views[t - 1], views[t]
        if prefix_kept(before, after) < len(before):
            changed.append(t + 1)  # observations in the view that changed the prefix
        assert keep <= full_observations(after) <= keep + block - 1 or t + 1 < keep
    # the prefix changes only when a block is stubbed: every `block` turns
    assert changed == list(range(keep + block, 41, block))
    assert all(b - a == block for a, b in zip(changed, changed[1:]))


def test_stable_never_shows_fewer_observations_than_last():
    for turns in range(1, 30):
        conv = conversation(turns)
        assert full_observations(HistoryPolicy("stable:5").view(conv)) >= full_observations(
            HistoryPolicy("last:5").view(conv))


def test_replies_and_team_messages_are_always_kept():
    conv = conversation(12)
    conv.insert(6, Entry(Message.user("MESSAGE FROM planner (work item w1): do it")))
    view = HistoryPolicy("stable:3").view(conv)
    assert [m.content for m in view if m.role == "assistant"] == [
        e.message.content for e in conv if e.message.role == "assistant"]
    assert "MESSAGE FROM planner (work item w1): do it" in [m.content for m in view]


@pytest.mark.parametrize("spec", ["full", "last:5", "stable:5", "stable:2:6"])
def test_specs_are_checked(spec):
    check_spec(spec)
    assert HistoryPolicy(spec).spec == spec


@pytest.mark.parametrize("spec", ["last:0", "last", "recent:3", "", "stable:0", "stable:3:0",
                                  "stable:"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError, match="history policy"):
        HistoryPolicy(spec)


@pytest.mark.parametrize("spec", ["full", "last:5", "stable:5"])
def test_shorten_makes_the_view_smaller_until_nothing_is_left(spec):
    conv = conversation(20, obs_lines=40)
    conv[1] = Entry(Message.user("task " * 5000))  # a huge task description
    policy = HistoryPolicy(spec)
    sizes = [sum(len(m.content) for m in policy.view(conv))]
    while policy.shorten(conv):
        sizes.append(sum(len(m.content) for m in policy.view(conv)))
        assert len(sizes) < 20
    assert all(b <= 0.75 * a for a, b in zip(sizes, sizes[1:-1]))  # each step a real cut
    assert sizes[-1] < sizes[0] / 4
    final = policy.view(conv)
    assert full_observations(final) == 1
    assert final[0].content == "system prompt"  # never clipped
    assert all(len(m.content) <= CLIP_MIN + 60 for m in final[1:])
    assert not policy.shorten(conv)


def test_shortened_policy_stays_short_on_later_turns():
    policy = HistoryPolicy("last:8")
    assert policy.shorten(conversation(10, obs_lines=40))  # half the observations: enough
    assert policy.keep == 4
    assert full_observations(policy.view(conversation(30))) == 4
