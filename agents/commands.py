"""The commands an agent runs: parsing a command into an environment action or a local one,
the environment round trip (surviving a restart of the environment server), and the commands
the runtime handles itself: research (memory, literature), `read_file` and the team commands
(`plan`, `assign`, `ask`, `wait`, `done`, `answer`). A mixin of `Agent` (agents/runtime.py),
which owns the state these methods use."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mlgym.agents import team
from mlgym.agents.tools import ENV_TOOLS, LOCAL_TOOLS, SHELL_ROLES, call_to_text, is_env_tool
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
            if self.role not in SHELL_ROLES:
                names = ", ".join(t.name for t in self.tools)
                return (f"Error: `{command.split()[0]}` is not one of your commands ({names}); "
                        "you cannot run shell commands."), 1, {}
            return await self._env_act(command)
        assert isinstance(parsed, Call)
        if is_env_tool(parsed.tool.name):
            return await self._env_act(command)
        return await self._local(parsed.tool.name, parsed.args)

    async def _run_call(self, name: str, args: dict[str, Any]) -> Outcome:
        if name not in self.tool_map:
            names = ", ".join(sorted(self.tool_map))
            return f"Error: unknown tool {name!r}. Your tools: {names}.", 1, {}
        if name in LOCAL_TOOLS:
            return await self._local(name, args)
        return await self._env_call(P.ToolCall(session="", tool=name, args=args))

    async def _env_act(self, command: str) -> Outcome:
        return await self._env_call(P.Act(session="", command=command, agent=self.name,
                                          timeout_s=self.o.command_timeout_s))

    async def _env_call(self, body: P.Act | P.ToolCall) -> Outcome:
        """Send one action to the environment; if the session is replaced meanwhile (server
        restart), send it again to the new session once."""
        assert self.env is not None and self.info is not None
        for attempt in range(2):
            body.session, body.token = self.info.session, self.info.session_token
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
        if self.info.session == old:  # the restarted server took the session over as it was
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
                await self.bus.publish("team/plan", P.PlanUpdate(plan=a["plan_text"], step=self.step), acked=True)
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
            case _:
                out, code = f"Error: {name} has no handler.", 1
        return out, code, {}

    async def _read_file(self, path: str) -> tuple[str, int]:
        assert self.env is not None and self.info is not None
        try:
            fc = await self.env.request("env", P.ReadFile(session=self.info.session, path=path, max_bytes=100_000,
                                                         token=self.info.session_token),
                                        timeout=30)
        except (RpcError, TimeoutError) as exc:
            return f"Error: cannot read {path}: {exc}", 1
        assert isinstance(fc, P.FileContent)
        text = fc.data.decode("utf-8", "replace")
        more = f"\n[... {fc.size - len(fc.data)} more bytes not shown]" if fc.truncated else ""
        return f"[{path}]\n{text}{more}", 0

    def _member(self, role: str) -> str | None:
        assert self.info is not None
        return next((n for n, r in self.info.members.items() if r == role), None)

    async def _assign(self, title: str, instructions: str) -> tuple[str, int]:
        assert self.bus is not None
        coder = self._member("coder")
        if coder is None:
            return "Error: there is no coder in this team.", 1
        self.state.assigned += 1
        item = f"w{self.state.assigned}"
        await self.bus.publish("team/work", P.WorkItem(item=item, title=title.strip(), instructions=instructions,
                                                       assignee=coder), acked=True)
        return f"Work item {item} sent to {coder}. Use `wait` to get its result.", 0

    async def _ask(self, question: str) -> tuple[str, int]:
        assert self.bus is not None
        lit = self._member("literature")
        if lit is None:
            return "Error: there is no literature agent in this team.", 1
        qid = f"q{len(self.state.asked) + 1}"
        self.state.asked.append(qid)
        await self.bus.publish("team/question", P.Question(question_id=qid, text=question, asker=self.name), acked=True)
        return f"Question {qid} sent to {lit}. Its answer will arrive as a message (`wait`).", 0

    async def _wait(self) -> tuple[str, int]:
        try:
            env = await self._interruptible(asyncio.wait_for(self._inbox.get(), self.o.wait_timeout_s))
        except TimeoutError:
            return f"No message arrived within {self.o.wait_timeout_s:.0f} s.", 1
        self._consumed.add(env.id)
        self.state.consumed.append(env.id)
        return team.RECEIVED + team.message_text(env.sender, env.body), 0

    async def _done(self, summary: str, status: str) -> tuple[str, int]:
        assert self.bus is not None
        cur = self.state.current
        if not cur.get("item"):
            return "Error: you have no work item in hand.", 1
        await self.bus.publish("team/result", P.WorkResult(item=cur["item"], status=status, summary=summary,
                                                           scores=dict(self.state.item_scores)), acked=True)
        self.state.current = {}
        return f"Result of work item {cur['item']} sent to {cur.get('from') or 'the planner'}.", 0

    async def _answer(self, text: str) -> tuple[str, int]:
        assert self.bus is not None and self.research is not None
        cur = self.state.current
        if not cur.get("question_id"):
            return "Error: you have no question in hand.", 1
        sources = list(dict.fromkeys(self.research.sources))[:10]
        self.research.sources = []
        await self.bus.publish("team/answer", P.Answer(question_id=cur["question_id"], text=text, sources=sources),
                               acked=True)
        self.state.current = {}
        return f"Answer to question {cur['question_id']} sent.", 0


def call_text(name: str, args: dict[str, Any]) -> str:
    """A function call as the command text it stands for (what the turn records)."""
    return call_to_text(ENV_TOOLS.get(name) or LOCAL_TOOLS.get(name), name, args)
