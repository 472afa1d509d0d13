"""One definition per tool: JSON schemas, Gemini declarations, text help and the text parser
agree; parser edge cases."""

from __future__ import annotations

import re

import jsonschema
import pytest
from google.genai import types
from hypothesis import given
from hypothesis import strategies as st
from mlgym.tools.aci import (
    BUILTIN_TOOLS,
    AciError,
    Arg,
    Call,
    ShellCommand,
    ToolDef,
    coerce,
    gemini_declarations,
    openai_tools,
    parse,
    render_help,
)
from mlgym.tools.aci.parser import body_lines
from mlgym.tools.aci.spec import slots

TOOLS = {t.name: t for t in BUILTIN_TOOLS}
TEXT_TOOLS = [t for t in BUILTIN_TOOLS if t.text_command]


def test_openai_schemas_are_valid_json_schema_and_match_the_definitions():
    specs = openai_tools(BUILTIN_TOOLS)
    assert [s["function"]["name"] for s in specs] == [t.name for t in BUILTIN_TOOLS]
    for spec, tool in zip(specs, BUILTIN_TOOLS):
        assert spec["type"] == "function"
        params = spec["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert set(params["properties"]) == {a.name for a in tool.arguments}
        assert params["required"] == [a.name for a in tool.arguments if a.required]
        assert spec["function"]["description"] == tool.docstring


def test_schemas_accept_what_the_parser_produces_and_reject_bad_calls():
    schema = openai_tools([TOOLS["edit"]])[0]["function"]["parameters"]
    call = parse("edit 3:4\n    x = 1\nend_of_edit", TOOLS)
    jsonschema.validate(call.args, schema)
    assert call.args == {"start_line": 3, "end_line": 4, "replacement_text": "    x = 1\n"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"start_line": 3, "end_line": 4}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**call.args, "extra": 1}, schema)
    for text in [
        'open "my file.py" 10',
        "goto 5",
        "scroll_up",
        "create a.py",
        "insert 0\nx\nend_of_insert",
        'search_dir "def f" src',
        "search_file foo",
        "find_file '*.py' .",
        "validate",
        "submit",
    ]:
        c = parse(text, TOOLS)
        jsonschema.validate(c.args, openai_tools([c.tool])[0]["function"]["parameters"])


def test_gemini_declarations_are_accepted_by_google_genai():
    for decl in gemini_declarations(BUILTIN_TOOLS):
        fd = types.FunctionDeclaration.model_validate(decl)
        assert fd.name == decl["name"]
    edit = types.FunctionDeclaration.model_validate(gemini_declarations([TOOLS["edit"]])[0])
    assert edit.parameters.required == ["start_line", "end_line", "replacement_text"]
    assert edit.parameters.properties["start_line"].type == types.Type.INTEGER


def test_text_help_is_generated_from_the_same_definitions():
    text = render_help(BUILTIN_TOOLS)
    assert "bash:" not in text  # function-calling only: in text, plain commands are shell
    for tool in TEXT_TOOLS:
        block = (
            text.split(f"\n{tool.name}:\n")[-1] if not text.startswith(f"{tool.name}:") else text
        )
        assert f"  signature: {tool.signature}" in block
        for a in tool.arguments:
            need = "required" if a.required else "optional"
            assert f"    - {a.name} ({a.type}) [{need}]: {a.description}" in block
        in_sig = [n for s in slots(tool) for n in s.names]
        optional = {n for s in slots(tool) if s.optional for n in s.names}
        assert in_sig == [a.name for a in tool.arguments if a.name != tool.body]
        assert optional == {a.name for a in tool.arguments if not a.required}
    assert "  signature: edit <start_line>:<end_line>\n<replacement_text>\nend_of_edit\n" in text
    assert "  signature: insert <line_number>\n<text_to_add>\nend_of_insert\n" in text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "t", "signature": "t <x>", "docstring": "d"}, "not an argument"),
        (
            {
                "name": "t",
                "signature": "t [<x>]",
                "docstring": "d",
                "arguments": (Arg(name="x", description="x"),),
            },
            "optional",
        ),
        ({"name": "t", "signature": "other", "docstring": "d"}, "starting with the name"),
        (
            {
                "name": "t",
                "signature": "t",
                "docstring": "d",
                "arguments": (Arg(name="x", description="x"),),
            },
            "signature names",
        ),
        (
            {
                "name": "t",
                "signature": "t",
                "docstring": "d",
                "body": "b",
                "arguments": (Arg(name="b", description="b"),),
            },
            "body and end_name",
        ),
        ({"name": "T-1", "signature": "T-1", "docstring": "d"}, "lower-case"),
        (
            {
                "name": "t",
                "signature": "t <x> <y>",
                "docstring": "d",
                "arguments": (
                    Arg(name="x", description="x", rest_of_line=True),
                    Arg(name="y", description="y"),
                ),
            },
            "last",
        ),
    ],
)
def test_inconsistent_definitions_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ToolDef(**kwargs)


def test_unknown_first_words_are_shell_commands():
    assert parse("ls -la", TOOLS) == ShellCommand("ls -la")
    assert parse("\n  python train.py\n\n", TOOLS) == ShellCommand("  python train.py")
    assert parse("opener x", TOOLS) == ShellCommand("opener x")
    assert parse("bash -c 'open x'", TOOLS) == ShellCommand("bash -c 'open x'")


def test_body_parsing_edge_cases():
    c = parse("edit 1:2\nprint('end_of_edit')\n  end_of_edit is a word\nend_of_edit\n\n", TOOLS)
    assert c.args["replacement_text"] == "print('end_of_edit')\n  end_of_edit is a word\n"
    c = parse("edit 1:2\r\nx\r\nend_of_edit\r\n", TOOLS)  # CRLF from a chat client
    assert c.args["replacement_text"] == "x\n"
    c = parse("edit 4:6\nend_of_edit", TOOLS)
    assert c.args["replacement_text"] == ""
    c = parse("insert 2\n\n    indented\n\nend_of_insert", TOOLS)
    assert c.args["text_to_add"] == "\n    indented\n\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("edit 1:2\nx = 1\n", "Malformed edit command. Please ensure you use the `end_of_edit`"),
        ("edit 1:2\nx\nend_of_insert", "end_of_edit"),
        ("insert 1\nx\n  end_of_insert", "Malformed insert command."),
        ("edit 1:2\nx\nend_of_edit\nls", "more text after end_of_edit"),
        ("open a.py\ngoto 3", "one-line command"),
        ("goto five", "<line_number> must be a number"),
        ("goto -2", "<line_number> must be a number"),
        ("goto", "missing <line_number>"),
        ("goto 1 2", "goto allows only one line number at a time."),
        ("open 'a.py", "check the quotes"),
        ("open a.py && ls", "cannot be combined with shell operators (&&)"),
        ("open a.py|head", "shell operators (|)"),
        ("edit 1-2\nx\nend_of_edit", "Usage: edit <start_line>:<end_line>"),
        ("edit a:2\nx\nend_of_edit", "<start_line> must be a number"),
    ],
)
def test_parse_errors_are_clear(text, message):
    with pytest.raises(AciError) as e:
        parse(text, TOOLS)
    assert message in e.value.message
    assert e.value.kind == "format"
    if text.split()[0] in TOOLS and not e.value.message.startswith(("Malformed", "goto allows")):
        assert e.value.message.startswith(f"Usage: {text.split()[0]}")


def test_quoting_follows_the_shell():
    assert parse('search_dir "def train" src', TOOLS).args == {
        "search_term": "def train",
        "dir": "src",
    }
    assert parse("search_file 'a|b'", TOOLS).args == {"search_term": "a|b"}  # quoted: not a pipe
    assert parse('open "my file.py"', TOOLS).args == {"path": "my file.py"}


def test_rest_of_line_arguments():
    tool = ToolDef(
        name="literature_search",
        signature="literature_search <n> <query>",
        docstring="d",
        arguments=(
            Arg(name="n", type="integer", description="n"),
            Arg(name="query", description="q", rest_of_line=True),
        ),
    )
    tools = {tool.name: tool}
    assert parse("literature_search 5 graph nets; 'survey'", tools).args == {
        "n": 5,
        "query": "graph nets; 'survey'",
    }
    assert parse('literature_search 3 "quoted query"', tools).args == {
        "n": 3,
        "query": "quoted query",
    }
    with pytest.raises(AciError, match="missing <query>"):
        parse("literature_search 3", tools)


def test_coerce_uses_the_definition_types():
    assert coerce(TOOLS["open"], {"path": "a", "line_number": "7"}) == {
        "path": "a",
        "line_number": 7,
    }
    assert coerce(TOOLS["open"], {"path": "a", "line_number": None}) == {"path": "a"}
    assert coerce(TOOLS["validate"], None) == {}
    for bad in ({"path": 3}, {"line_number": 2}, {"path": "a", "x": 1}, ["a"]):
        with pytest.raises(AciError, match=re.escape('Usage: open "<path>" [<line_number>]')):
            coerce(TOOLS["open"], bad)


def test_parse_returns_the_definition_of_the_tool():
    c = parse("scroll_down", TOOLS)
    assert isinstance(c, Call) and c.tool is TOOLS["scroll_down"] and c.args == {}


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        ),
        max_size=8,
    ).filter(lambda lines: all(line.strip() != "end_of_edit" for line in lines))
)
def test_any_body_survives_the_text_form(lines):
    body = "".join(line + "\n" for line in lines)
    c = parse(f"edit 2:3\n{body}end_of_edit", TOOLS)
    assert c.args["replacement_text"] == body
    assert body_lines(body) == lines
