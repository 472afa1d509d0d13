"""Model backends for agents: `create("openai:gpt-4o")`, `create("gemini:gemini-2.0-flash")`,
`create("openai:llama3@http://127.0.0.1:8000/v1")`. See docs/models.md."""

from .base import (
    Completion,
    Message,
    MissingApiKey,
    ModelBackend,
    ModelError,
    Retry,
    ToolCallOut,
    ToolSpec,
    Usage,
    backend_prefixes,
    create,
    parse_spec,
    register_backend,
)
from .limits import DEFAULT_MAX_TOKENS, CallLimits, default_max_tokens
from .prices import Price, PriceTable, default_table

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "CallLimits",
    "Completion",
    "Message",
    "MissingApiKey",
    "ModelBackend",
    "ModelError",
    "Price",
    "PriceTable",
    "Retry",
    "ToolCallOut",
    "ToolSpec",
    "Usage",
    "backend_prefixes",
    "create",
    "default_max_tokens",
    "default_table",
    "parse_spec",
    "register_backend",
]
