"""The wire protocol: every message any process exchanges, as msgspec Structs, in one module.

This module is the contract between processes and languages; docs/protocol.md describes the
same thing for people. An `Envelope` carries routing facts (run, topic, sender, sequence
number, broker epoch) and one `body`, a tagged union: the tag (`kind` on the wire) names the
body type. msgpack is the wire encoding; JSON is accepted too, marked by the encoding frame.

Rules that keep old clients working: new bodies may be added; fields are only ever added with
defaults; `PROTOCOL_VERSION` changes only when a field changes meaning.

Every Struct here is declared `gc=False`: the cyclic garbage collector does not track them.
They hold decoded wire data, which cannot form a cycle, and every client decodes every message
it receives: at Python's default collector settings, tracked envelopes made decoding 1.3 to 2
times slower, most of it in young-generation collections walking the envelopes still queued
(`mlgym bench codec`). The one rule this adds: never build a reference cycle through a message
(a body whose dict holds its own envelope); such a cycle would never be freed.
"""

from __future__ import annotations

import base64
import random
import struct
import time
from collections.abc import Callable
from typing import Annotated, Any, Union

import msgspec
import msgspec.structs

PROTOCOL_VERSION = 1
MSGPACK = b"msgpack"
JSON = b"json"
ENCODINGS = (MSGPACK, JSON)
MAX_FRAME_BYTES = 16 * 1024 * 1024  # larger payloads are refused, never buffered
STAMP = struct.Struct(">QQ")  # broker stamp frame: sequence number, epoch (big-endian u64 each)


_B32_TO_ULID = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def new_id() -> str:
    """A 26-character, time-ordered, random id (ULID alphabet) for messages and requests:
    48 bits of milliseconds and 80 random bits, as 26 base-32 digits (the top two bits zero).
    Ids need to be unique, not secret, so the random bits come from `random` (reseeded in
    forked children), and base64's C base-32 coder plus a translation spells them: 1 us where
    os.urandom and a digit loop took 4.4 us, twice per RPC."""
    value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
    return base64.b32encode((value << 6).to_bytes(17, "big"))[:26].translate(_B32_TO_ULID).decode()


class Body(msgspec.Struct, tag_field="kind", omit_defaults=True, forbid_unknown_fields=False,
           gc=False):
    """Base of every message body; the subclass name (tag) is the `kind` on the wire."""


# --------------------------------------------------------------------------- generic


class Note(Body, tag="note"):
    """Free-form typed chatter: demos, logs, human annotations."""

    text: str
    data: dict[str, Any] = {}


class Ping(Body, tag="ping"):
    """Liveness probe; answered by `Pong` on every RPC service."""

    payload: bytes = b""


class Pong(Body, tag="pong"):
    service: str
    epoch: int = 0
    payload: bytes = b""


class Error(Body, tag="error"):
    """A typed failure reply. `code` is stable and machine-readable; `message` is for people."""

    code: str
    message: str
    detail: dict[str, Any] = {}


# --------------------------------------------------------------------------- bus service


class Record(msgspec.Struct, array_like=True, gc=False):
    """One logged bus message exactly as published: [seq, epoch, topic, encoding, payload]."""

    seq: int
    epoch: int
    topic: str
    encoding: str
    payload: bytes


class HistoryRequest(Body, tag="history_request"):
    """Ask the broker for logged messages with seq in [from_seq, to_seq] whose topic starts
    with `prefix`. `to_seq` 0 means "up to the head". Replies come in one or more chunks."""

    from_seq: int = 1
    to_seq: int = 0
    prefix: str = ""
    limit: int = 0  # 0: no limit
    # more prefixes: a topic matches if it starts with any of `prefix` (when non-empty) and
    # `prefixes`; both empty match every topic
    prefixes: list[str] = []


class HistoryChunk(Body, tag="history_chunk"):
    """A batch of logged messages, in seq order. `done` marks the last chunk of a reply;
    `head_seq` is the broker's head (latest seq) when the request started: a client that refills
    a gap reads up to it, then continues live."""

    records: list[Record]
    done: bool
    head_seq: int
    epoch: int


class Publish(Body, tag="publish"):
    """Acknowledged publish through the broker's RPC socket: the broker logs `message`, commits
    the log, publishes it and replies `Published`. Use it for messages that must not be lost.
    Its body may be of any kind: one the broker knows is checked whole, any other (a team's
    own `x_<team>_...`) only for a non-empty string `kind`, as on pub-in."""

    message: AnyEnvelope


class Published(Body, tag="published"):
    seq: int
    epoch: int


class BusStatus(Body, tag="bus_status"):
    """Broker counters, asked for with `StatusRequest` (service "bus")."""

    epoch: int
    head_seq: int
    published: int
    dropped_malformed: int
    dropped_oversized: int
    dropped_version: int
    history_served: int
    endpoints: dict[str, str] = {}
    rpc_errors: int = 0  # RPC requests answered with a protocol error (malformed, bad_version...)
    duplicates_acked: int = 0  # acked publishes of an id logged already: answered, not re-logged


class StatusRequest(Body, tag="status_request"):
    pass


# --------------------------------------------------------------------------- environment server


class Limits(msgspec.Struct, omit_defaults=True, frozen=True, gc=False):
    """Per-session budgets and sandbox limits. 0 means "the task's default"."""

    max_steps: int = 0
    command_timeout_s: float = 0.0
    memory_mb: int = 0
    cpu_seconds: int = 0
    max_processes: int = 0
    network: bool = False
    window: int = 0  # ACI file-viewer window, lines
    disk_mb: int = 0  # the session's disk (workspace + job logs)


class SessionOpen(Body, tag="session_open"):
    task: str
    backend: str = "local"
    limits: Limits = Limits()
    seed: int = 0
    run: str = ""


class SessionInfo(Body, tag="session_info"):
    session: str
    task: str
    backend: str
    workdir: str
    step: int
    max_steps: int
    state: str  # "open" | "submitted" | "closed" | "truncated"
    open_file: str = ""
    best_scores: dict[str, float] = {}
    created: float = 0.0
    warning: str = ""  # the sandbox isolates less than it should (e.g. no bubblewrap): what
    workspace: str = ""  # the workspace as commands see it (/home/agent/workspace, or its host
    # folder where the local sandbox has no namespaces; "" from servers before this field)


class SessionOpened(Body, tag="session_opened"):
    info: SessionInfo
    observation: str
    tools_help: str = ""
    token: str = ""  # the session's secret: every later request for it must carry it


class Act(Body, tag="act"):
    """Run one ACI command in its text form (MLGym/SWE-agent syntax), e.g.
    "open strategy.py" or "edit 3:5\\n...\\nend_of_edit" or "ls -la"."""

    session: str
    command: str
    timeout_s: float = 0.0
    background: bool = False  # run detached (training runs); output streams as OutputChunk
    agent: str = ""  # who acts, for events and per-agent accounting
    token: str = ""  # the token SessionOpened gave


class ToolCall(Body, tag="tool_call"):
    """Run one ACI tool as a structured call, arguments as JSON-compatible values."""

    session: str
    tool: str
    args: dict[str, Any] = {}
    timeout_s: float = 0.0
    token: str = ""  # the token SessionOpened gave


class Observation(Body, tag="observation"):
    """What an action produced. `scores` is set by validate/submit (structured, never parsed
    from stdout); `done` is true once the episode has ended."""

    session: str
    output: str
    exit_code: int
    step: int
    remaining_steps: int
    done: bool = False
    truncated: bool = False
    scores: dict[str, float] = {}
    baseline: dict[str, float] = {}
    info: dict[str, Any] = {}


class ReadFile(Body, tag="read_file"):
    """Reply: FileContent with at most `max_bytes` (0: as much as the server gives, at most
    8 MiB) from byte `offset`; `size` is the whole file's, `truncated` says more follows."""

    session: str
    path: str
    max_bytes: int = 0
    offset: int = 0
    token: str = ""  # the token SessionOpened gave


class FileContent(Body, tag="file_content"):
    session: str
    path: str
    data: bytes
    size: int
    truncated: bool = False


class ReadArtefact(Body, tag="read_artefact"):
    """The exact copy of the submission artefact that validate/submit evaluated at `step`
    (file artefacts only; the server keeps the last few). Reading the workspace after a
    score event races with the agent's next edit; this does not. Reply: FileContent."""

    session: str
    step: int
    token: str = ""  # the token SessionOpened gave


class WriteFile(Body, tag="write_file"):
    session: str
    path: str
    data: bytes
    token: str = ""  # the token SessionOpened gave


class FileWritten(Body, tag="file_written"):
    session: str
    path: str
    size: int


class SessionClose(Body, tag="session_close"):
    session: str
    token: str = ""  # the token SessionOpened gave


class SessionClosed(Body, tag="session_closed"):
    session: str
    info: SessionInfo


class SessionList(Body, tag="session_list"):
    """Lists the session `token` belongs to; the server's admin token lists them all."""

    token: str = ""


class Sessions(Body, tag="sessions"):
    sessions: list[SessionInfo]


class SessionStatus(Body, tag="session_status"):
    session: str
    token: str = ""  # the token SessionOpened gave


# events the environment server publishes on topic env/<session>/...


class CommandEvent(Body, tag="command_event"):
    session: str
    step: int
    command: str
    agent: str = ""


class ObservationEvent(Body, tag="observation_event"):
    session: str
    step: int
    output: str
    exit_code: int


class OutputChunk(Body, tag="output_chunk"):
    """A piece of a long or background command's output, in order per (session, job)."""

    session: str
    job: str
    offset: int
    data: str
    final: bool = False


class ScoreEvent(Body, tag="score_event"):
    session: str
    step: int
    action: str  # "validate" | "submit" | "autosubmit"
    scores: dict[str, float]
    baseline: dict[str, float] = {}
    error: str = ""
    seed: int = 0  # the evaluation's seed: the task's for validate, a held-out one at the end


# --------------------------------------------------------------------------- agent team


class WorkItem(Body, tag="work_item"):
    """A unit of work, sent to one worker (`assignee`; `to` names it too)."""

    item: str
    title: str
    instructions: str
    assignee: str = "coder"
    to: list[str] = []  # receivers (member names); every team body has it (docs/teams.md)


class WorkResult(Body, tag="work_result"):
    """Worker -> the member that sent the item: its outcome. `session` and `step` name the
    validation behind `scores` (so a planner can `pick` that artefact)."""

    item: str
    status: str  # "done" | "failed" | "budget"
    summary: str
    scores: dict[str, float] = {}
    to: list[str] = []
    session: str = ""  # the session the worker validated in
    step: int = 0  # the session step of that validation (0: none)


class Question(Body, tag="question"):
    """Any agent -> the members that take questions (the literature agent)."""

    question_id: str
    text: str
    asker: str = ""
    to: list[str] = []


class Answer(Body, tag="answer"):
    question_id: str
    text: str
    sources: list[str] = []
    to: list[str] = []


class PlanUpdate(Body, tag="plan_update"):
    plan: str
    step: int = 0
    to: list[str] = []


class TeamMessage(Body, tag="team_message"):
    """A free message between members (`message` command), to the members in `to`."""

    text: str
    to: list[str] = []


class ReviewRequest(Body, tag="review_request"):
    """A member asks reviewers to approve the artefact validated at `step` of `session`
    (`scores`) before it is submitted."""

    request_id: str
    summary: str
    session: str = ""
    step: int = 0
    scores: dict[str, float] = {}
    to: list[str] = []


class Review(Body, tag="review"):
    """A reviewer's verdict on a `ReviewRequest`: "approve" or "reject", with a comment."""

    request_id: str
    verdict: str  # "approve" | "reject"
    comment: str = ""
    session: str = ""
    step: int = 0
    to: list[str] = []


class ArtefactCopy(Body, tag="artefact_copy"):
    """Topic `team/artefact`: an artefact was copied between sessions (a member's `pick`, or
    the supervisor's merge/auto-submission); analyses follow authorship through it."""

    source_session: str
    source_step: int  # the validation whose artefact was copied (0: the workspace as it was)
    target_session: str
    path: str
    artefact_kind: str = "file"  # "file" | "dir"
    item: str = ""  # the work item whose result it was, if any
    files: int = 1
    size: int = 0


class AgentStatus(Body, tag="agent_status"):
    """Agent -> topic `status/<name>`: what the agent is doing, with its running usage (the
    supervisor enforces token and dollar budgets on these totals), and what it is. `state`:
    "working", "idle" (waiting for a message), "calling" (waiting for the model since `since`),
    "retrying" (the model call failed with `error` and is tried again: retry `retry` of
    `max_retries`), "stopped" (for good: `exit` is the typed exit, `detail` says why),
    "crashed". `model`: the model it runs (a model spec such as `openai:gpt-4o`, or what
    stands in for one); `implementation`: language/program (e.g. `python/mlgym-bus 0.1.0`,
    `c/myagent 1.2`); the run's results credit both."""

    agent: str
    role: str
    state: str
    step: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    detail: str = ""
    since: float = 0.0  # unix time the state began (calling, retrying)
    retry: int = 0
    max_retries: int = 0
    error: str = ""  # retrying: the failed try's error code (timeout, rate_limited, ...)
    exit: str = ""  # stopped: submitted, model_unreachable, context_overflow, ...
    cached_tokens: int = 0  # of the prompt tokens in `tokens`, those read from a prompt cache
    model: str = ""
    implementation: str = ""


class Control(Body, tag="control"):
    """Supervisor -> agents: "stop", "submit" (budget exhausted), "pause", "resume", "warn".
    `generation` is the run's generation (its latest `RunInfo`) when the order was given: an
    agent obeys only orders of the generation it joined in or later, so one started by a
    resume (a new generation) ignores the old `stop` it reads back from the log."""

    action: str
    reason: str = ""
    target: str = ""  # agent name, or "" for everyone
    generation: int = 0


class Channel(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """`sender` may send team messages of `kinds` (work, result, question, answer, plan,
    message, review, verdict, or a custom `x_...` kind) to each member in `receivers`."""

    sender: str
    receivers: list[str]
    kinds: list[str]


class MemberSession(msgspec.Struct, frozen=True, gc=False):
    """A member's own environment session (a parallel worker): its id and token."""

    session: str
    token: str


class RunInfo(Body, tag="run_info"):
    """Supervisor -> everyone, topic `run/info` (acked, so late joiners read it from history):
    what an agent needs to join a run. A new one (higher `generation`) replaces the session
    after the environment server was restarted."""

    run: str
    task: str
    session: str
    env: str  # endpoint of the environment service (RPC "env")
    session_token: str = ""  # the session's token: env requests for `session` carry it
    memory: str = ""  # endpoint of the memory service (RPC "memory")
    observation: str = ""  # the task as the session presented it
    tools_help: str = ""
    team: str = ""
    members: dict[str, str] = {}  # agent name -> role
    budget: dict[str, float] = {}  # run budget: steps, tokens, dollars, wall_clock_s (0 = none)
    agent_budgets: dict[str, dict[str, float]] = {}
    baseline: dict[str, float] = {}
    directions: dict[str, str] = {}  # metric -> "max" | "min"
    metric: str = ""  # the task's priority metric
    reserve_steps: int = 0  # session steps beyond the team's budget (the supervisor's own)
    generation: int = 1
    started: float = 0.0
    roles: dict[str, dict[str, Any]] = {}  # role name -> its definition (docs/teams.md)
    channels: list[Channel] = []  # who may send which team messages to whom (none: anyone)
    sessions: dict[str, MemberSession] = {}  # members with a session of their own
    approvers: list[str] = []  # members whose approval `submit` needs
    submission: str = ""  # the task's submission artefact, relative to the workspace
    submission_kind: str = "file"  # "file" | "dir"


class AgentStep(Body, tag="agent_step"):
    """Agent -> topic `agents/<name>/step` (acked): one turn, enough to rebuild the agent's
    conversation after a crash, to replay the model's replies and to export a `.traj`.
    `messages` are the prompt messages added to the conversation before this turn's model
    call (role/content dicts); `response` is the raw model reply."""

    agent: str
    role: str
    step: int
    action: str
    observation: str
    response: str = ""
    thought: str = ""
    messages: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    execution_time: float = 0.0
    model_latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, those the provider read from its prompt cache
    cost_usd: float = 0.0
    exit_code: int = 0
    env_step: int = 0
    scores: dict[str, float] = {}
    state: dict[str, Any] = {}
    done: bool = False


class RunEnd(Body, tag="run_end"):
    """Supervisor -> topic `run/end` (acked): the run is over, with its outcome."""

    run: str
    exit_status: str
    scores: dict[str, float] = {}
    best_scores: dict[str, float] = {}
    baseline: dict[str, float] = {}
    reason: str = ""


class MemoryWrite(Body, tag="memory_write"):
    text: str
    tags: list[str] = []
    author: str = ""
    task: str = ""


class MemoryWritten(Body, tag="memory_written"):
    """`count` > 1: the note was already stored (the same words, or nearly) and was merged
    into entry `memory_id`, which has now been written `count` times."""

    memory_id: int
    count: int = 1


class MemorySearch(Body, tag="memory_search"):
    query: str
    k: int = 5
    task: str = ""


class MemoryHit(msgspec.Struct, gc=False):
    """`score`: relevance in [0, 1], the share of the query's words (stop words aside) the
    entry holds times its bm25 relative to the best hit of this search (1 = the best hit, with
    every word); `bm25`: FTS5's raw value (negative, lower is better). `count`: how many times
    the note was written (merged duplicates); `sources`: the distinct authors who wrote it."""

    memory_id: int
    text: str
    tags: list[str]
    author: str
    score: float
    created: float
    count: int = 1
    sources: list[str] = []
    bm25: float = 0.0


class MemoryHits(Body, tag="memory_hits"):
    hits: list[MemoryHit]


AnyBody = Union[
    Note,
    Ping,
    Pong,
    Error,
    HistoryRequest,
    HistoryChunk,
    Publish,
    Published,
    BusStatus,
    StatusRequest,
    SessionOpen,
    SessionInfo,
    SessionOpened,
    Act,
    ToolCall,
    Observation,
    ReadFile,
    ReadArtefact,
    FileContent,
    WriteFile,
    FileWritten,
    SessionClose,
    SessionClosed,
    SessionList,
    Sessions,
    SessionStatus,
    CommandEvent,
    ObservationEvent,
    OutputChunk,
    ScoreEvent,
    WorkItem,
    WorkResult,
    Question,
    Answer,
    PlanUpdate,
    TeamMessage,
    ReviewRequest,
    Review,
    ArtefactCopy,
    AgentStatus,
    Control,
    RunInfo,
    AgentStep,
    RunEnd,
    MemoryWrite,
    MemoryWritten,
    MemorySearch,
    MemoryHits,
]


class Envelope(msgspec.Struct, omit_defaults=True, gc=False):
    """Routing facts plus one body.

    `seq` and `epoch` are assigned by the broker: publishers leave them 0, and the broker's stamp
    frame (see docs/protocol.md) is authoritative on delivery. For RPC, `topic` names the
    service ("bus", "env", "memory") and a reply's `reply_to` holds the request's `id`.
    """

    body: AnyBody
    v: int = PROTOCOL_VERSION
    id: str = ""
    run: str = ""
    topic: str = ""
    sender: str = ""
    seq: int = 0
    epoch: int = 0
    ts: float = 0.0
    reply_to: str = ""
    more: bool = False  # on an RPC reply: more replies to the same request follow (a stream)

    @property
    def kind(self) -> str:
        return type(self.body).__struct_config__.tag  # type: ignore[return-value]


class BodyHead(msgspec.Struct, gc=False):
    """A body as the bus checks it: a map with a non-empty string `kind`. Every other field is
    the receiver's to check (see `EnvelopeHead`)."""

    kind: Annotated[str, msgspec.Meta(min_length=1)]


EnvelopeHead = msgspec.defstruct(
    "EnvelopeHead",
    [("body", BodyHead)]
    + [(f.name, f.type, f.default) for f in msgspec.structs.fields(Envelope) if f.name != "body"],
    omit_defaults=True, gc=False, module=__name__,
)
EnvelopeHead.__doc__ = """An envelope as the bus checks it before giving it a sequence number
(the broker, the MQTT recorder): `Envelope`'s fields, built from it, with the body only a
`BodyHead`.

Why not the whole Envelope: a router must pass body kinds newer than itself (the versioning
rule above lets clients add kinds without upgrading the broker), and decoding every body was
the largest single cost of the broker's check (docs/performance.md). Receivers decode bodies
and count what they cannot read."""


AnyEnvelope = msgspec.defstruct(
    "AnyEnvelope",
    [("body", dict[str, Any])]
    + [(f.name, f.type, f.default) for f in msgspec.structs.fields(Envelope) if f.name != "body"],
    omit_defaults=True, gc=False, module=__name__,
)
AnyEnvelope.__doc__ = """An envelope whose body is any map with a `kind`, known here or not: the
message of an acknowledged `publish` (see `publishable`)."""

KINDS = frozenset(t.__struct_config__.tag for t in AnyBody.__args__)  # type: ignore[attr-defined]


class ProtocolError(Exception):
    """A frame that cannot be decoded, or carries the wrong protocol version."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_mp_encoder = msgspec.msgpack.Encoder()
_mp_decoder = msgspec.msgpack.Decoder(Envelope)
_js_encoder = msgspec.json.Encoder()
_js_decoder = msgspec.json.Decoder(Envelope)


_mp_head_decoder = msgspec.msgpack.Decoder(EnvelopeHead)
_js_head_decoder = msgspec.json.Decoder(EnvelopeHead)


class _Version(msgspec.Struct, gc=False):
    v: int = PROTOCOL_VERSION


_mp_version = msgspec.msgpack.Decoder(_Version)
_js_version = msgspec.json.Decoder(_Version)


def make(body: Body, *, topic: str = "", run: str = "", sender: str = "", reply_to: str = "") -> Envelope:
    """A fresh envelope with a new id and the current time."""
    return Envelope(
        body=body, id=new_id(), topic=topic, run=run, sender=sender, ts=time.time(), reply_to=reply_to
    )


def encode(env: Envelope, encoding: bytes = MSGPACK) -> bytes:
    if encoding == MSGPACK:
        return _mp_encoder.encode(env)
    if encoding == JSON:
        return _js_encoder.encode(env)
    raise ProtocolError("bad_encoding", f"unknown encoding {encoding!r}")


def decode(payload: bytes | memoryview, encoding: bytes = MSGPACK) -> Envelope:
    """Decode and validate one envelope; raises ProtocolError with a stable code."""
    return _decode(payload, encoding, _mp_decoder, _js_decoder)


def check(payload: bytes | memoryview, encoding: bytes = MSGPACK) -> EnvelopeHead:
    """What the bus checks before it logs a message: the envelope's fields and protocol
    version, and that the body is a map with a `kind` (any kind, known here or not). Raises
    ProtocolError with the same codes as `decode`."""
    head = _decode(payload, encoding, _mp_head_decoder, _js_head_decoder)
    check_version(head)
    return head


def _decode(payload: bytes | memoryview, encoding: bytes, mp: Any, js: Any) -> Any:
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError("oversized", f"frame of {len(payload)} bytes > {MAX_FRAME_BYTES}")
    if encoding == MSGPACK:
        dec, ver = mp, _mp_version
    elif encoding == JSON:
        dec, ver = js, _js_version
    else:
        raise ProtocolError("bad_encoding", f"unknown encoding {bytes(encoding)[:16]!r}")
    try:
        return dec.decode(payload)
    except msgspec.ValidationError as exc:
        try:
            v = ver.decode(payload).v
        except Exception:  # any failure here only means "version unknown"
            v = PROTOCOL_VERSION
        if v != PROTOCOL_VERSION:
            raise ProtocolError(
                "bad_version", f"protocol version {v} not supported (this side speaks {PROTOCOL_VERSION})"
            ) from None
        raise ProtocolError("invalid", f"invalid message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed", f"malformed frame: {exc}") from None
    except Exception as exc:  # hostile bytes, e.g. RecursionError on deep nesting
        raise ProtocolError("malformed",
                            f"undecodable frame ({type(exc).__name__}: {exc})") from None


def raw_head_decoder(encoding: bytes) -> Callable[[bytes], EnvelopeHead]:
    """The bare `check` decode for an encoding: msgspec's own errors, no size, version or
    error mapping (the broker's hot path; everything else uses `check`)."""
    return {MSGPACK: _mp_head_decoder, JSON: _js_head_decoder}[encoding].decode


def publishable(message: Any) -> Any:
    """The message of an acknowledged publish, ready to log: an `Envelope` when its kind is
    one of ours (checked whole, as a typed decode would), else the `AnyEnvelope` as given once
    its `kind` is a non-empty string. Raises ProtocolError("invalid") otherwise."""
    if isinstance(message, Envelope):
        return message
    kind = message.body.get("kind") if isinstance(message.body, dict) else None
    if not isinstance(kind, str) or not kind:
        raise ProtocolError("invalid", "the message's body needs a non-empty string `kind`")
    if kind not in KINDS:
        return message
    try:
        return msgspec.convert(msgspec.structs.asdict(message), Envelope)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid", f"invalid message: {exc}") from None


def check_version(env: Envelope | EnvelopeHead) -> None:
    if env.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "bad_version", f"protocol version {env.v} not supported (this side speaks {PROTOCOL_VERSION})"
        )


def body_types() -> list[type[Body]]:
    return list(AnyBody.__args__)  # type: ignore[attr-defined]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the envelope and every body, for `mlgym protocol schema`."""
    (schema,), components = msgspec.json.schema_components([Envelope], ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"MLGym bus protocol v{PROTOCOL_VERSION}",
        **schema,
        "$defs": components,
    }
