"""A Gymnasium environment over the environment server.

    import gymnasium, mlgym.env_server.gym_env  # registers mlgym/<taskId>-v0
    env = gymnasium.make("mlgym/prisonersDilemma-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step("validate")

Observations and actions are text: an action is one ACI command in MLGym syntax; an observation
is its output followed by MLGym's state lines. With no `endpoint`, an embedded server is started
in a background thread (and stopped with the env); it logs warnings and errors only, unless
`log_level` (or $MLGYM_LOG_LEVEL) asks for more.

Outside the gymnasium API, and never counted as steps: `read_file(path)` and
`write_file(path, data)` on the session's workspace (set-up, inspection), and `session_info()`
(step, budget, state, best scores, the workspace path, any sandbox warning).

Reward: the change of the task's baseline-normalised priority score, paid at `validate` and
`submit` (0 for every other action). The normalised score is score/baseline for metrics where
higher is better and baseline/score where lower is better, so the baseline itself is 1.0; the
first evaluated score is compared with 1.0, later ones with the previous evaluated score, so an
episode's rewards add up to (last normalised score - 1). A failed evaluation pays 0.
When the step budget is exhausted the episode is truncated and the artefact auto-submitted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import string
import tempfile
import threading
from pathlib import Path
from typing import Any

import gymnasium
from gymnasium import spaces

import msgspec

from mlgym.bus import protocol as p
from mlgym.bus.base import RpcError
from mlgym.bus.rpc import RpcClient
from mlgym.tools.turn import format_turn

MAX_TEXT = 1 << 22


class UnicodeText(spaces.Space[str]):
    """Any text up to `max_length` characters (gymnasium's Text space only admits a fixed
    character set; observations here are arbitrary program output)."""

    def __init__(self, max_length: int = MAX_TEXT, seed: int | None = None):
        super().__init__(shape=None, dtype=None, seed=seed)
        self.max_length = max_length

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def sample(self, mask: Any = None, probability: Any = None) -> str:  # noqa: ARG002
        # harmless words: sampled actions reach a real shell
        n = int(self.np_random.integers(1, 12))
        return "".join(self.np_random.choice(list(string.ascii_lowercase), size=n))

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"UnicodeText({self.max_length})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnicodeText) and other.max_length == self.max_length


class _LoopThread:
    """An asyncio loop in a daemon thread, so a synchronous Env can drive async clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mlgym-gym", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class MLGymEnv(gymnasium.Env[str, str]):
    metadata = {"render_modes": ["ansi"]}

    def __init__(
        self,
        task: str,
        *,
        endpoint: str | None = None,
        backend: str = "local",
        max_steps: int = 0,
        command_timeout_s: float = 0.0,
        render_mode: str | None = None,
        request_timeout_s: float = 3600.0,
        keys: str | None = None,
        key_name: str = "client",
        log_level: str | None = None,
    ):
        self.task = task
        self.backend = backend
        self.limits = p.Limits(max_steps=max_steps, command_timeout_s=command_timeout_s)
        self.render_mode = render_mode
        self.request_timeout_s = request_timeout_s
        self.observation_space = UnicodeText()
        self.action_space = UnicodeText()
        self._loop = _LoopThread()
        self._server_task: asyncio.Future | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        if endpoint is None:
            endpoint = self._start_embedded(log_level)
        self.endpoint = endpoint
        curve = None
        if keys is not None:  # CURVE for a remote server on tcp:// (`mlgym keys init DIR`)
            from mlgym.bus.security import client_curve

            curve = client_curve(keys, key_name)
        self._client = RpcClient(endpoint, curve=curve)
        self.session: str | None = None
        self._token = ""  # the session's token (SessionOpened): every request carries it
        self._closed = False
        self._last_norm = 1.0
        self._last_obs = ""
        self._baseline: dict[str, float] = {}
        self._priority: tuple[str, str] | None = None

    # -------------------------------------------------------------- embedded server

    def _start_embedded(self, log_level: str | None) -> str:
        from mlgym import log
        from mlgym.env_server.server import run_server

        log.get(__name__)  # configured first, so the level set here stays
        level = (log_level or os.environ.get("MLGYM_LOG_LEVEL") or "warning").upper()
        logging.getLogger("mlgym").setLevel(level)  # the server shares this process

        self._tmp = tempfile.TemporaryDirectory(prefix="mlgym-gym-")
        root = Path(self._tmp.name)
        endpoint = f"ipc://{root}/env.sock"
        ready = asyncio.Event()

        async def start() -> None:
            self._server_task = asyncio.ensure_future(run_server(endpoint, root / "sessions", backend=self.backend, ready=ready))
            await asyncio.wait_for(ready.wait(), 30)

        self._loop.run(start(), timeout=60)
        return endpoint

    # -------------------------------------------------------------- workspace and session

    def read_file(self, path: str, max_bytes: int = 0) -> bytes:
        """A file of the workspace (relative to it, or under /home/agent/workspace); at most
        `max_bytes` of it when that is not 0. Not a step. Raises RpcError (`not_found`, `path`
        for paths outside the workspace)."""
        fc = self._request(p.ReadFile(session=self._need_session(), path=path, max_bytes=max_bytes))
        assert isinstance(fc, p.FileContent)
        return fc.data

    def write_file(self, path: str, data: bytes | str) -> int:
        """Create or replace a workspace file (folders are made); returns its size. Not a
        step: for setting up an episode; the agent's own edits go through `step`."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        done = self._request(p.WriteFile(session=self._need_session(), path=path, data=raw))
        assert isinstance(done, p.FileWritten)
        return done.size

    def session_info(self) -> dict[str, Any]:
        """The session as the server sees it: `session`, `task`, `backend`, `step`,
        `max_steps`, `state` (open, submitted, truncated, closed), `open_file`, `best_scores`,
        `workspace` (the path commands see), `workdir` (its host folder), `warning` (set when
        the sandbox isolates less than it should) and `created`."""
        info = self._request(p.SessionStatus(session=self._need_session()))
        assert isinstance(info, p.SessionInfo)
        out = msgspec.to_builtins(info)
        out.pop("kind", None)
        return out

    def _need_session(self) -> str:
        if self.session is None:
            raise RuntimeError("call reset() first: there is no session yet")
        return self.session

    # -------------------------------------------------------------- gymnasium API

    def _request(self, body: p.Body) -> p.Body:
        return self._loop.run(self._client.request("env", body, timeout=self.request_timeout_s))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        self._close_session()
        reply = self._request(p.SessionOpen(task=self.task, backend=self.backend, limits=self.limits, seed=seed or 0))
        assert isinstance(reply, p.SessionOpened)
        self.session, self._token = reply.info.session, reply.token
        self._last_norm = 1.0
        self._priority = None
        self._last_obs = reply.observation
        info = {"session": self.session, "tools_help": reply.tools_help, "max_steps": reply.info.max_steps,
                "task": self.task}
        return reply.observation, info

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        try:
            obs = self._request(p.Act(session=self.session, command=action, token=self._token))
        except RpcError as exc:
            if exc.code == "episode_over":
                raise RuntimeError("the episode is over: call reset()") from None
            raise
        assert isinstance(obs, p.Observation)
        reward = 0.0
        if obs.scores and obs.info.get("action") in ("validate", "submit") or (obs.truncated and obs.scores):
            norm = self._normalised(obs.scores, obs.baseline)
            if norm is not None:
                reward = norm - self._last_norm
                self._last_norm = norm
        text = format_turn(obs.output, obs.step, obs.remaining_steps, obs.info.get("open_file", ""),
                           obs.info.get("cwd", ""))
        self._last_obs = text
        terminated = obs.done and not obs.truncated
        info = {"scores": obs.scores, "baseline": obs.baseline, "exit_code": obs.exit_code, **obs.info}
        return text, float(reward), bool(terminated), bool(obs.truncated), info

    def _normalised(self, scores: dict[str, float], baseline: dict[str, float]) -> float | None:
        if self._priority is None:
            from mlgym.tasks import registry

            spec = registry.load_task(self.task).spec
            self._priority = (spec.priority_metric, spec.priority.direction)
        name, direction = self._priority
        if name not in scores or not baseline.get(name):
            return None
        s, b = scores[name], baseline[name]
        if direction == "max":
            return s / b
        return b / s if s else None

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last_obs
        return None

    def _close_session(self) -> None:
        if self.session is not None:
            try:
                self._request(p.SessionClose(session=self.session, token=self._token))
            except (RpcError, TimeoutError):
                pass
            self.session = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close_session()
        finally:
            try:
                self._loop.run(self._client.close(), timeout=10)
            except Exception:
                pass
            if self._server_task is not None:
                self._loop.loop.call_soon_threadsafe(self._server_task.cancel)
                try:
                    self._loop.run(asyncio.sleep(0.2), timeout=10)
                except Exception:
                    pass
            self._loop.close()
            if self._tmp is not None:
                self._tmp.cleanup()
        super().close()


def register_all() -> list[str]:
    """Register `mlgym/<taskId>-v0` for every task; returns the ids."""
    from mlgym.tasks import registry

    ids = []
    for task in registry.list_tasks():
        env_id = f"mlgym/{task.spec.id}-v0"
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="mlgym.env_server.gym_env:MLGymEnv",
                               kwargs={"task": task.spec.id}, disable_env_checker=True)
        ids.append(env_id)
    return ids


register_all()
