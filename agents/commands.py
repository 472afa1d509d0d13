"""The commands an agent runs: parsing a command into an environment action or a local one,
the environment round trip (surviving a restart of the environment server), and the commands
the runtime handles itself: research (memory, literature), `read_file` and the team commands
(`plan`, `assign`, `ask`, `wait`, `done`, `answer`, `message`, `review`, `approve`, `reject`,
`diff`, `pick`, `finish`). Every team message goes only where the team's channels allow
(agents/topology.py); one outside them is refused with an observation that says what this
member may send to whom. A mixin of `Agent` (agents/runtime.py), which owns the state these
methods use; the artefact copies of `pick` live in agents/artefacts.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mlgym.agents import artefacts, team
from mlgym.agents import roles as R
from mlgym.agents import topology as T
from mlgym.agents.tools import ENV_TOOLS, LOCAL_TOOLS, call_to_text, is_env_tool
from mlgym.bus import protocol as P
from mlgym.bus.base import RpcError
from mlgym.tools.aci import AciError, Call, ShellCommand, parse

WORKSPACE = "/home/agent/workspace"
ENV_MARGIN_S = 120.0  # an env request may take the command's own timeout plus this

Outcome = tuple[str, int, dict[str, Any]]  # (observation text, exit code, info)


class Stopped(Exception):
    """The supervisor (or a signal) asked this agent to stop."""


class SessionLost(Exception):
    """The environment session went away (server restarted); a new one is announced."""


class Commands:
    async def _run_text(self, command: str) -> Outcome:
        try:
            parsed = parse(command, self.tool_map)
        except AciError as exc:
            return exc.result().output, 1, {}
        if isinstance(parsed, ShellCommand):
            if not self.r.shell:
                names = ", ".join(t.name for t in self.tools)
                return (f"Error: `{command.split()[0]}` is not one of your commands ({names}); "
                        "you cannot run shell commands."), 1, {}
            return await self._env_act(command)
        assert isinstance(parsed, Call)
        if parsed.tool.name == "submit":
            refused = await self._before_submit()
            if refused:
                return refused, 1, {}
        if is_env_tool(parsed.tool.name):
            return await self._env_act(command)
        return await self._local(parsed.tool.name, parsed.args)

    async def _run_call(self, name: str, args: dict[str, Any]) -> Outcome:
        if name not in self.tool_map:
            names = ", ".join(sorted(self.tool_map))
            return f"Error: unknown tool {name!r}. Your tools: {names}.", 1, {}
        if name in LOCAL_TOOLS:
            return await self._local(name, args)
        if name == "submit":
            refused = await self._before_submit()
            if refused:
                return refused, 1, {}
        return await self._env_call(P.ToolCall(session="", tool=name, args=args))

    async def _env_act(self, command: str) -> Outcome:
        return await self._env_call(P.Act(session="", command=command, agent=self.name,
                                          timeout_s=self.o.command_timeout_s))

    async def _env_call(self, body: P.Act | P.ToolCall) -> Outcome:
        """Send one action to the environment; if the session is replaced meanwhile (server
        restart), send it again to the new session once."""
        assert self.env is not None and self.info is not None
        for attempt in range(2):
            body.session, body.token = self.session()
            timeout = (self.o.command_timeout_s or 1800.0) + ENV_MARGIN_S
            t0 = time.perf_counter()
            try:
                obs = await self._interruptible(self.env.request("env", body, timeout=timeout), session=True)
            except SessionLost:
                self._on_new_session(body.session)
                continue
            except RpcError as exc:
                if exc.code in ("no_session",) and attempt == 0:
                    if await self._await_new_session(body.session):
                        continue
                if exc.code == "episode_over":
                    return f"The episode is over: {exc.message}", 1, {"done": True, "exit_status": "episode_over"}
                return f"Error from the environment ({exc.code}): {exc.message}", 1, {}
            except TimeoutError:
                if attempt == 0 and await self._await_new_session(body.session):
                    continue
                return "Error: the environment did not answer in time.", 1, {}
            assert isinstance(obs, P.Observation)
            return self._observe(obs, time.perf_counter() - t0)
        return "Error: the environment was restarted twice during this command; try again.", 1, {}

    def _on_new_session(self, old: str) -> None:
        self._session_changed.clear()
        assert self.info is not None
        self.state.generation = self.info.generation
        if self.session()[0] == old:  # the restarted server took the session over as it was
            self.notes.append(
                "The environment server was restarted while your command ran; your session and "
                "workspace were kept as you left them and the command was sent again. If it "
                "changes files, check that it was not applied twice.")
        else:
            self.notes.append(
                "The environment server was restarted: you now work in a new session whose "
                "workspace was restored from the latest validated artefact. Check your files "
                "before going on.")

    async def _await_new_session(self, old: str, timeout: float = 60.0) -> bool:
        try:
            await self._interruptible(asyncio.wait_for(self._session_changed.wait(), timeout))
        except TimeoutError:
            return False
        self._on_new_session(old)
        return True

    def _observe(self, obs: P.Observation, seconds: float) -> Outcome:
        s = self.state
        s.env_step = obs.step
        reserve = self.info.reserve_steps if self.info else 0
        s.remaining = max(obs.remaining_steps - reserve, 0)
        s.open_file = str(obs.info.get("open_file", "") or "")
        s.cwd = str(obs.info.get("cwd", "") or WORKSPACE)
        info: dict[str, Any] = {"done": obs.done, "exit_status": obs.info.get("exit_status", ""),
                                "command_s": float(obs.info.get("seconds", 0.0) or 0.0), "env_s": seconds}
        if obs.scores:
            s.last_scores = dict(obs.scores)
            s.item_scores = dict(obs.scores)
            info["scores"] = dict(obs.scores)
            s.last_validated = {"session": obs.session, "step": obs.step,
                                "scores": dict(obs.scores)}
            if s.current.get("item"):
                s.item_validated = dict(s.last_validated)
        return obs.output, obs.exit_code, info

    async def _local(self, name: str, a: dict[str, Any]) -> Outcome:
        r = self.research
        assert r is not None and self.bus is not None and self.info is not None
        match name:
            case "memory_write":
                out, code = await r.memory_write(a["text"])
            case "memory_read":
                out, code = await r.memory_read(a["query"])
            case "literature_search":
                out, code = await self._interruptible(r.literature_search(a["query"], a.get("num_results") or 5))
            case "parse_pdf_url":
                out, code = await self._interruptible(r.parse_pdf_url(a["url"]))
            case "read_file":
                out, code = await self._read_file(a["path"])
            case "plan":
                to = self._audience("plan")
                await self._send(P.PlanUpdate(plan=a["plan_text"], step=self.step, to=to))
                out, code = "Plan shared with the team.", 0
            case "assign":
                out, code = await self._assign(a["title"], a["instructions"])
            case "ask":
                out, code = await self._ask(a["question"])
            case "wait":
                out, code = await self._wait()
            case "done":
                out, code = await self._done(a["summary"], "done")
            case "answer":
                out, code = await self._answer(a["text"])
            case "message":
                out, code = await self._message(a["to"], a["text"])
            case "review":
                out, code = await self._review(a["summary"])
            case "approve" | "reject":
                out, code = await self._verdict(name, a["comment"])
            case "diff":
                out, code = await self._diff()
            case "pick":
                out, code = await self._pick(a["item"])
            case "finish":
                return (f"You finished: {a['summary']}", 0,
                        {"done": True, "exit_status": "finished"})
            case _:
                out, code = f"Error: {name} has no handler.", 1
        return out, code, {}

    async def _read_file(self, path: str) -> tuple[str, int]:
        assert self.env is not None and self.info is not None
        session, token = self.session()
        try:
            fc = await self.env.request("env", P.ReadFile(session=session, path=path,
                                                         max_bytes=100_000, token=token),
                                        timeout=30)
        except (RpcError, TimeoutError) as exc:
            return f"Error: cannot read {path}: {exc}", 1
        assert isinstance(fc, P.FileContent)
        text = fc.data.decode("utf-8", "replace")
        more = f"\n[... {fc.size - len(fc.data)} more bytes not shown]" if fc.truncated else ""
        return f"[{path}]\n{text}{more}", 0

    # ------------------------------------------------------------------ addressing

    async def _send(self, body: P.Body) -> None:
        """Publish a team message (acked: it must survive a crash) on its kind's topic."""
        assert self.bus is not None
        kind = team.kind_of(body)
        assert kind is not None
        await self.bus.publish(team.TOPIC_OF[kind], body, acked=True)

    def _audience(self, kind: str) -> list[str]:
        """Every member this one may send a `kind` message to that takes such messages."""
        assert self.info is not None
        return [m for m in T.reachable(self.info.channels, self.name, kind, self.info.members)
                if self._takes(m, kind)]

    def _role_of(self, member: str) -> R.Role | None:
        """A member's role definition (None: a role this side does not know)."""
        assert self.info is not None
        try:
            return R.lookup(self.info.roles, self.info.members.get(member, ""))
        except R.RoleError:
            return None

    def _takes(self, member: str, kind: str) -> bool:
        r = self._role_of(member)
        return r is None or r.takes(kind)  # a role this side does not know: let it decide

    def _refusal(self, kind: str, receivers: list[str]) -> str:
        assert self.info is not None
        return (f"Error: the team's channels do not let you ({self.name}) send {kind} messages to "
                f"{', '.join(receivers)}. You may send: "
                f"{T.describe(self.info.channels, self.name)}.")

    def _blocked(self, kind: str, receivers: list[str]) -> list[str]:
        assert self.info is not None
        return [r for r in receivers if not T.allowed(self.info.channels, self.name, r, kind)]

    def _members_named(self, ref: str) -> list[str]:
        """`ref` as member names: names or roles, comma-separated, or `all`."""
        assert self.info is not None
        out: list[str] = []
        for part in (p.strip() for p in ref.split(",")):
            if not part:
                continue
            if part in ("all", "*"):
                return [m for m in self.info.members if m != self.name]
            try:
                out += [m for m in T.resolve(part, self.info.members) if m != self.name]
            except T.TopologyError as exc:
                raise ValueError(str(exc)) from None
        return list(dict.fromkeys(out))

    def _member(self, role: str) -> str | None:
        assert self.info is not None
        return next((n for n, r in self.info.members.items() if r == role), None)

    def _received(self, env: P.Envelope) -> None:
        """Bookkeeping for a message taken in (by `wait`, or with the next turn)."""
        b, s = env.body, self.state
        if isinstance(b, P.WorkResult):
            s.outstanding.pop(b.item, None)
            s.results[b.item] = {"from": env.sender, "status": b.status, "session": b.session,
                                 "step": b.step, "scores": dict(b.scores)}
            if b.session and b.step and b.session == self.session()[0] and b.scores:
                s.last_validated = {"session": b.session, "step": b.step, "scores": dict(b.scores)}
        elif isinstance(b, P.Review) and b.verdict == "approve":
            s.approved = {"session": b.session, "step": b.step, "by": env.sender}
        elif isinstance(b, P.Review):
            s.approved = {}

    # ------------------------------------------------------------------ team commands

    async def _assign(self, title: str, instructions: str) -> tuple[str, int]:
        """A work item to a free worker, or to the one named by a leading `@name` in the title."""
        assert self.info is not None
        title = title.strip()
        workers = [m for m in self.info.members if m != self.name and self._wakes_on(m, "work")]
        if not workers:
            return "Error: there is no coder in this team.", 1
        if title.startswith("@"):
            head, _, title = title.partition(" ")
            try:
                named = self._members_named(head[1:])
            except ValueError as exc:
                return f"Error: {exc}", 1
            bad = [m for m in named if m not in workers]
            if len(named) != 1 or bad:
                return (f"Error: `assign @NAME <title>` names one worker ({', '.join(workers)}); "
                        f"got {head!r}."), 1
            worker = named[0]
        else:
            allowed = [w for w in workers if T.allowed(self.info.channels, self.name, w, "work")]
            if not allowed:
                return self._refusal("work", workers), 1
            busy = {w: list(self.state.outstanding.values()).count(w) for w in allowed}
            worker = min(allowed, key=lambda w: busy[w])  # a free one, else the least loaded
        if self._blocked("work", [worker]):
            return self._refusal("work", [worker]), 1
        self.state.assigned += 1
        item = f"w{self.state.assigned}"
        self.state.outstanding[item] = worker
        await self._send(P.WorkItem(item=item, title=title, instructions=instructions,
                                    assignee=worker, to=[worker]))
        who = (worker if len(workers) == 1
               else f"{worker} ({len(workers)} workers: {', '.join(workers)})")
        return f"Work item {item} sent to {who}. Use `wait` to get its result.", 0

    def _wakes_on(self, member: str, kind: str) -> bool:
        r = self._role_of(member)
        return r is not None and kind in r.wakes_on

    async def _ask(self, question: str) -> tuple[str, int]:
        assert self.info is not None
        takers = [m for m in self.info.members if m != self.name and self._takes(m, "question")
                  and self._wakes_on(m, "question")]
        if not takers:
            return "Error: there is no literature agent in this team.", 1
        to = [m for m in takers if T.allowed(self.info.channels, self.name, m, "question")]
        if not to:
            return self._refusal("question", takers), 1
        qid = f"q{len(self.state.asked) + 1}"
        self.state.asked.append(qid)
        await self._send(P.Question(question_id=qid, text=question, asker=self.name, to=to))
        return (f"Question {qid} sent to {', '.join(to)}. Its answer will arrive as a message "
                "(`wait`)."), 0

    async def _wait(self) -> tuple[str, int]:
        try:
            env = await self._interruptible(asyncio.wait_for(self._inbox.get(), self.o.wait_timeout_s))
        except TimeoutError:
            return f"No message arrived within {self.o.wait_timeout_s:.0f} s.", 1
        self._consumed.add(env.id)
        self.state.consumed.append(env.id)
        self._received(env)
        return team.RECEIVED + team.message_text(env.sender, env.body, self.r.message_template), 0

    async def _done(self, summary: str, status: str) -> tuple[str, int]:
        cur = self.state.current
        if not cur.get("item"):
            return "Error: you have no work item in hand.", 1
        to = cur.get("from") or ""
        if to and self._blocked("result", [to]):
            return self._refusal("result", [to]), 1
        v = self.state.item_validated
        await self._send(P.WorkResult(item=cur["item"], status=status, summary=summary,
                                      scores=dict(self.state.item_scores), to=[to] if to else [],
                                      session=str(v.get("session", "")),
                                      step=int(v.get("step", 0))))
        self.state.current = {}
        return f"Result of work item {cur['item']} sent to {to or 'the planner'}.", 0

    async def _answer(self, text: str) -> tuple[str, int]:
        assert self.research is not None
        cur = self.state.current
        if not cur.get("question_id"):
            return "Error: you have no question in hand.", 1
        to = cur.get("from") or ""
        if to and self._blocked("answer", [to]):
            return self._refusal("answer", [to]), 1
        sources = list(dict.fromkeys(self.research.sources))[:10]
        self.research.sources = []
        await self._send(P.Answer(question_id=cur["question_id"], text=text, sources=sources,
                                  to=[to] if to else []))
        self.state.current = {}
        return f"Answer to question {cur['question_id']} sent.", 0

    async def _message(self, ref: str, text: str) -> tuple[str, int]:
        assert self.info is not None
        try:
            named = self._members_named(ref)
        except ValueError as exc:
            return f"Error: {exc}", 1
        if ref.strip() in ("all", "*"):
            named = self._audience("message")
        if not named:
            return (f"Error: nobody to send to ({ref!r}). Members: "
                    f"{', '.join(self.info.members)}."), 1
        blocked = self._blocked("message", named)
        if blocked:
            return self._refusal("message", blocked), 1
        await self._send(P.TeamMessage(text=text.rstrip(), to=named))
        return f"Message sent to {', '.join(named)}.", 0

    async def _review(self, summary: str) -> tuple[str, int]:
        assert self.info is not None
        reviewers = list(self.info.approvers) or [
            m for m in self.info.members if m != self.name and self._wakes_on(m, "review")]
        if not reviewers:
            return "Error: there is no reviewer in this team.", 1
        blocked = self._blocked("review", reviewers)
        if blocked:
            return self._refusal("review", blocked), 1
        v = self.state.last_validated
        if not v.get("step"):
            return ("Error: nothing in your workspace has been validated yet: `validate` (or have "
                    "it validated) first, then ask for a review."), 1
        self.state.reviews += 1
        rid = f"r{self.state.reviews}"
        await self._send(P.ReviewRequest(request_id=rid, summary=summary, session=v["session"],
                                         step=int(v["step"]), scores=dict(v.get("scores", {})),
                                         to=reviewers))
        return (f"Review request {rid} (the artefact validated at step {v['step']}) sent to "
                f"{', '.join(reviewers)}. Their verdict will arrive as a message (`wait`)."), 0

    async def _verdict(self, verdict: str, comment: str) -> tuple[str, int]:
        cur = self.state.current
        if not cur.get("review"):
            return "Error: you have no review request in hand.", 1
        to = cur.get("from") or ""
        if to and self._blocked("verdict", [to]):
            return self._refusal("verdict", [to]), 1
        await self._send(P.Review(request_id=cur["review"], verdict=verdict, comment=comment,
                                  session=cur.get("session", ""), step=int(cur.get("step", 0)),
                                  to=[to] if to else []))
        self.state.current = {}
        return f"Verdict `{verdict}` on review request {cur['review']} sent to {to}.", 0

    async def _before_submit(self) -> str:
        """A team with approvers submits only an approved artefact: the one approved is put
        back (a later edit must not slip in), then the submit goes ahead. "" = go ahead."""
        assert self.info is not None and self.env is not None
        if not self.info.approvers or self.name in self.info.approvers:
            return ""
        ok = self.state.approved
        latest = self.state.last_validated
        if not ok.get("step") or ok.get("step") != latest.get("step"):
            what = (f"the latest validated artefact (step {latest['step']})" if latest.get("step")
                    else "nothing validated yet")
            return (f"Error: submitting needs the approval of {', '.join(self.info.approvers)}, "
                    f"and {what} has not been approved. Ask with `review <summary>`, then `wait` "
                    "for the verdict.")
        session, token = self.session()
        if self.info.submission_kind == "file" and ok.get("session") == session:
            try:
                await artefacts.restore(self.env, session, token, int(ok["step"]),
                                        self.info.submission)
            except artefacts.CopyError as exc:
                return f"Error: could not put the approved artefact back: {exc}"
        return ""

    async def _diff(self) -> tuple[str, int]:
        assert self.info is not None and self.env is not None
        cur = self.state.current
        if not cur.get("review"):
            return "Error: you have no review request in hand.", 1
        if self.info.submission_kind != "file":
            return (f"The artefact is a folder ({self.info.submission}/): there is no diff; use "
                    "`read_file` on its files."), 0
        token = self._token_for(cur.get("session", ""))
        try:
            text = await artefacts.diff(self.env, cur.get("session", ""), token,
                                        int(cur.get("step", 0)), self.info.task,
                                        self.info.submission)
        except artefacts.CopyError as exc:
            return f"Error: {exc}", 1
        return text, 0

    def _token_for(self, session: str) -> str:
        assert self.info is not None
        if session == self.info.session:
            return self.info.session_token
        for ms in self.info.sessions.values():
            if ms.session == session:
                return ms.token
        return ""

    async def _pick(self, item: str) -> tuple[str, int]:
        """Copy the artefact behind a work item's result into this member's workspace."""
        assert self.info is not None and self.env is not None and self.bus is not None
        item = item.strip()
        res = self.state.results.get(item)
        if res is None:
            known = ", ".join(self.state.results) or "none yet"
            return f"Error: no result received for work item {item!r} (results: {known}).", 1
        if not res.get("step") or not res.get("session"):
            return f"Error: the result of {item} names no validated artefact: nothing to pick.", 1
        session, token = self.session()
        if res["session"] == session:
            return (f"The artefact of {item} was validated in your own workspace; it is there "
                    "unless changed since."), 0
        try:
            copy = await artefacts.copy(
                self.env, src=(res["session"], self._token_for(res["session"])),
                dst=(session, token),
                step=int(res["step"]), path=self.info.submission, kind=self.info.submission_kind,
                agent=self.name)
        except artefacts.CopyError as exc:
            return f"Error: could not copy the artefact of {item}: {exc}", 1
        copy.item = item
        await self.bus.publish("team/artefact", copy, acked=True)
        self.state.last_validated = {}  # what is now in the workspace has not been validated here
        self.state.approved = {}
        return (f"Copied the artefact of work item {item} ({res.get('from')}, validated at its "
                f"step {res['step']}, scores {res.get('scores')}) into your workspace: "
                f"{self.info.submission} ({copy.files} file(s), {copy.size} bytes). Validate it "
                "before you submit."), 0


def call_text(name: str, args: dict[str, Any]) -> str:
    """A function call as the command text it stands for (what the turn records)."""
    return call_to_text(ENV_TOOLS.get(name) or LOCAL_TOOLS.get(name), name, args)
