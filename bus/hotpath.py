"""The broker's optional C loop (bus/_hotpath.c): load it and bind it to pyzmq's libzmq.

`load()` returns the bound module, or None when the broker should use its Python loop:
the extension was not built (no C compiler or Python headers at install time), or
MLGYM_BUS_LOOP=python asks for the Python loop (tests run both; benchmarks compare them).
MLGYM_BUS_LOOP=c makes a missing or unusable extension an error instead of a fallback.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import zmq

from mlgym import log
from mlgym.bus import protocol as P

logger = log.get(__name__)

ENV_VAR = "MLGYM_BUS_LOOP"
ABI = 2  # must equal HOTPATH_ABI in _hotpath.c
ENCODING_NAMES = {P.MSGPACK: "msgpack", P.JSON: "json"}  # msgpack first: the C loop packs those


def load() -> ModuleType | None:
    """The bound C module, or None for the Python loop (read from the environment on each
    call, so a test can switch; the binding itself happens once)."""
    choice = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in ("auto", "c", "python"):
        raise ValueError(f"{ENV_VAR} must be auto, c or python, not {choice!r}")
    return None if choice == "python" else _load(choice == "c")


@functools.cache
def _load(required: bool) -> ModuleType | None:
    try:
        import zmq.backend.cython._zmq as pyzmq_backend

        from mlgym.bus import _hotpath  # type: ignore[attr-defined]

        if getattr(_hotpath, "ABI", None) != ABI:
            raise ImportError(f"the built extension is stale (ABI {getattr(_hotpath, 'ABI', None)}, "
                              f"these sources expect {ABI}): rerun python3 install.py")
        found = _hotpath.bind(pyzmq_backend.__file__, tuple(ENCODING_NAMES),
                              tuple(ENCODING_NAMES.values()), P.MAX_FRAME_BYTES)
        if found != zmq.zmq_version_info():
            raise ImportError(f"found libzmq {found}, pyzmq uses {zmq.zmq_version_info()}")
    except ImportError as exc:
        if required:
            raise RuntimeError(f"{ENV_VAR}=c but the broker's C loop is unavailable: {exc}") from exc
        logger.info("broker C loop unavailable; using the Python loop", reason=str(exc))
        return None
    return _hotpath


def name() -> str:
    """"c" or "python": the loop a broker started now would use."""
    return "c" if load() is not None else "python"
