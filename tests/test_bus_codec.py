"""Wire codec: every message type round-trips through msgpack and JSON to equal messages, and
bad frames raise ProtocolError with a stable code."""

from __future__ import annotations

import gc
import json

import msgspec
import msgspec.inspect as mi
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlgym.bus import protocol as P
from mlgym.bus.cli import protocol as protocol_cli

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), FLOATS, TEXT)
ANY = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                   max_leaves=6)


def strategy(t: mi.Type, depth: int = 0) -> st.SearchStrategy:
    """A hypothesis strategy for any msgspec type the protocol uses (fails loudly on others)."""
    if isinstance(t, mi.IntType):
        return st.integers(-(2**63), 2**63 - 1)
    if isinstance(t, mi.FloatType):
        return FLOATS
    if isinstance(t, mi.StrType):
        return TEXT
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.BytesType):
        return st.binary(max_size=16)
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.AnyType):
        return ANY
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        items = st.lists(strategy(t.item_type, depth + 1), max_size=3)
        if isinstance(t, mi.ListType):
            return items
        if isinstance(t, mi.VarTupleType):
            return items.map(tuple)
        return st.frozensets(strategy(t.item_type, depth + 1), max_size=3).map(
            set if isinstance(t, mi.SetType) else frozenset)
    if isinstance(t, mi.TupleType):
        return st.tuples(*(strategy(x, depth + 1) for x in t.item_types))
    if isinstance(t, mi.DictType):
        return st.dictionaries(TEXT, strategy(t.value_type, depth + 1), max_size=3)
    if isinstance(t, mi.UnionType):
        types = t.types
        if depth > 2:  # nested envelopes (Publish.message): keep them shallow
            types = tuple(x for x in types if not isinstance(x, mi.StructType) or x.cls is P.Note) or types[:1]
        return st.one_of(*(strategy(x, depth + 1) for x in types))
    if isinstance(t, mi.StructType):
        fields = {}
        for f in t.fields:
            if t.cls is P.Envelope and f.name == "v":
                fields[f.name] = st.just(P.PROTOCOL_VERSION)
            else:
                fields[f.name] = strategy(f.type, depth + 1)
        return st.builds(t.cls, **fields)
    raise TypeError(f"no strategy for {t!r}: extend tests/test_bus_codec.py")


def envelopes_of(cls: type) -> st.SearchStrategy[P.Envelope]:
    envelope_fields = {f.name: strategy(f.type, 1) for f in mi.type_info(P.Envelope).fields
                       if f.name not in ("body", "v")}
    return st.builds(P.Envelope, body=strategy(mi.type_info(cls)), **envelope_fields)


@pytest.mark.parametrize("cls", P.body_types(), ids=lambda c: c.__struct_config__.tag)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_round_trip_every_body(cls: type, data: st.DataObject) -> None:
    env = data.draw(envelopes_of(cls))
    via_msgpack = P.decode(P.encode(env, P.MSGPACK), P.MSGPACK)
    via_json = P.decode(P.encode(env, P.JSON), P.JSON)
    assert via_msgpack == env
    assert via_json == via_msgpack
    assert via_msgpack.kind == cls.__struct_config__.tag


def test_every_body_in_union_has_a_unique_tag() -> None:
    tags = [c.__struct_config__.tag for c in P.body_types()]
    assert len(tags) == len(set(tags))


def test_protocol_structs_are_not_tracked_by_the_cyclic_gc() -> None:
    """The broker decodes every envelope it validates; untracked structs keep that cheap
    (bus/protocol.py's docstring). A new Struct declared without gc=False fails here."""
    structs = [v for v in vars(P).values()
               if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == P.__name__]
    assert P.Envelope in structs and P.Note in structs and len(structs) > 20
    assert [c.__name__ for c in structs if c.__struct_config__.gc] == []
    env = P.decode(P.encode(P.make(P.Note(text="x", data={"k": [1, {"a": 2}]}), topic="t")))
    assert not gc.is_tracked(env) and not gc.is_tracked(env.body)
    assert gc.is_tracked(env.body.data)  # the containers inside stay tracked


def test_kind_is_the_tag_on_the_wire() -> None:
    raw = msgspec.msgpack.decode(P.encode(P.make(P.Note(text="hi"), topic="t")))
    assert raw["body"]["kind"] == "note"
    assert json.loads(P.encode(P.make(P.Ping(), topic="bus"), P.JSON))["body"]["kind"] == "ping"


@pytest.mark.parametrize(
    ("payload", "encoding", "code"),
    [
        (b"\xc1\xc1", P.MSGPACK, "malformed"),  # 0xc1 is never valid msgpack
        (b"{not json", P.JSON, "malformed"),
        (P.encode(P.make(P.Note(text="x")))[:-3], P.MSGPACK, "malformed"),  # truncated
        (msgspec.msgpack.encode({"v": 1, "body": {"kind": "no_such_kind"}}), P.MSGPACK, "invalid"),
        (msgspec.msgpack.encode({"v": 99, "body": {"kind": "no_such_kind"}}), P.MSGPACK, "bad_version"),
        (msgspec.json.encode({"v": 2, "body": {"kind": "note"}}), P.JSON, "bad_version"),
        (b"\x80", b"xml", "bad_encoding"),
        (b"\x00" * (P.MAX_FRAME_BYTES + 1), P.MSGPACK, "oversized"),
    ],
    ids=["garbage", "bad-json", "truncated", "unknown-kind", "version-99", "version-2-json", "encoding",
         "oversized"],
)
def test_bad_frames_raise_typed_errors(payload: bytes, encoding: bytes, code: str) -> None:
    with pytest.raises(P.ProtocolError) as err:
        P.decode(payload, encoding)
    assert err.value.code == code


def test_valid_shape_with_other_version_is_rejected_by_check_version() -> None:
    env = P.decode(P.encode(P.Envelope(body=P.Note(text="x"), v=2)))
    with pytest.raises(P.ProtocolError) as err:
        P.check_version(env)
    assert err.value.code == "bad_version"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    raw = {"v": 1, "topic": "t", "future": [1, 2], "body": {"kind": "note", "text": "x", "later": True}}
    env = P.decode(msgspec.msgpack.encode(raw))
    assert env.body == P.Note(text="x")


def test_schema_command_prints_every_body() -> None:
    result = CliRunner().invoke(protocol_cli, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert schema["title"].startswith("MLGym bus protocol")
    names = set(schema["$defs"])
    for cls in P.body_types():
        assert cls.__name__ in names


def test_ids_are_ulids_time_ordered_and_unique(monkeypatch):
    alphabet = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    ids = [P.new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids) and all(len(i) == 26 and set(i) <= alphabet for i in ids)
    # the first 10 characters are the milliseconds, big-endian base 32 (ULID layout)
    monkeypatch.setattr(P.time, "time_ns", lambda: 1_700_000_000_123 * 1_000_000)
    stamp = P.new_id()[:10]
    assert sum("0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(c) << 5 * (9 - k) for k, c in enumerate(stamp)) \
        == 1_700_000_000_123
    monkeypatch.setattr(P.time, "time_ns", lambda: 1_700_000_000_124 * 1_000_000)
    assert P.new_id()[:10] > stamp


def test_envelope_head_mirrors_the_envelope() -> None:
    """What the bus checks (`EnvelopeHead`) is the envelope field for field, the body aside
    (it is built from Envelope, so a field added there is checked too), and `check` takes any
    body that is a map with a string kind."""
    full, head = msgspec.inspect.type_info(P.Envelope), msgspec.inspect.type_info(P.EnvelopeHead)
    assert [(f.name, f.type, f.default) for f in full.fields if f.name != "body"] == \
        [(f.name, f.type, f.default) for f in head.fields if f.name != "body"]
    env = P.make(P.Note(text="x", data={"k": 1}), topic="t/x", run="r", sender="s")
    for enc in P.ENCODINGS:
        got = P.check(P.encode(env, enc), enc)
        assert (got.body.kind, got.topic, got.id, got.run, got.sender, got.ts) == \
            ("note", "t/x", env.id, "r", "s", env.ts)
    for body, code in [({"kind": "x_new", "n": [1]}, None), ({"kind": "note", "text": 5}, None),
                       ({"text": "x"}, "invalid"), ({"kind": ""}, "invalid"), (["note"], "invalid")]:
        payload = msgspec.msgpack.encode({"topic": "t", "body": body})
        if code is None:
            assert P.check(payload).body.kind == body["kind"]
        else:
            with pytest.raises(P.ProtocolError) as err:
                P.check(payload)
            assert err.value.code == code
    with pytest.raises(P.ProtocolError) as err:
        P.check(msgspec.msgpack.encode({"v": 2, "topic": "t", "body": {"kind": "x_new"}}))
    assert err.value.code == "bad_version"
