"""The MLGym-Bench paper's 12 models as fixed scores, so `mlgym score --with-paper` ranks a
user's runs among them on the same AUP scale.

The bundled file (`tasks/_paper/mlgym-bench-v0.json`) holds, per model and task, the Best
Attempt and Best Submission scores of the published runs (12 models x 13 tasks x 4 runs,
MLGym's `trajectories/mlgym_bench_v0`), at full precision, and the published AUP table. It
is derived from those runs by this module:

    python -m mlgym.tasks.paper RUNS... > tasks/_paper/mlgym-bench-v0.json

where RUNS are the runs as run results or MLGym's run folders (methods named as in the paper:
a folder's `metagen-` model prefix is dropped).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mlgym.tasks.scoring import BASELINE, FixedScores, RunResult, collect, load_results

PAPER_FILE = Path(__file__).resolve().parent / "_paper" / "mlgym-bench-v0.json"
SOURCE = ("MLGym-Bench (Nathani et al., 2025), trajectories/mlgym_bench_v0 of "
          "facebookresearch/MLGym: 12 models x 13 tasks x 4 runs")


def load() -> dict[str, Any]:
    return json.loads(PAPER_FILE.read_text())


def tasks() -> list[str]:
    return sorted(load()["tasks"])


def models() -> list[str]:
    return list(load()["models"])


def fixed_scores(rename: dict[str, str] | None = None) -> list[FixedScores]:
    """The paper's models as FixedScores (optionally renamed)."""
    data, rename = load(), rename or {}
    out = []
    for model in data["models"]:
        rows = data["scores"][model]
        out.append(FixedScores(
            method=rename.get(model, model),
            best_attempt={t: r["best_attempt"] for t, r in rows.items()},
            best_submission={t: r["best_submission"] for t, r in rows.items()},
            runs={t: r["runs"] for t, r in rows.items()},
        ))
    return out


def published_aup() -> dict[str, tuple[float, float]]:
    """method -> (Best Attempt AUP, Best Submission AUP) as published (baseline: Baseline)."""
    return {m: (v[0], v[1]) for m, v in load()["published_aup"].items()}


def derive(runs: list[RunResult], published: dict[str, list[float]]) -> dict[str, Any]:
    """The bundled file's content from the published runs."""
    for r in runs:
        r.method = r.method.removeprefix("metagen-")
    report = collect(runs)
    names = [m for m in report.methods if m != BASELINE]
    return {
        "source": SOURCE,
        "models": names,
        "tasks": {t: {"metric": i.metric, "direction": i.direction, "baseline": i.baseline}
                  for t, i in report.tasks.items()},
        "scores": {m: {t: {"best_attempt": report.scores["best_attempt"][t][m],
                           "best_submission": report.scores["best_submission"][t][m],
                           "runs": report.runs[t][m]} for t in report.tasks} for m in names},
        "published_aup": published,
    }


def main(argv: list[str]) -> None:
    published = load()["published_aup"] if PAPER_FILE.exists() else {}
    data = derive(load_results([Path(a) for a in argv]), published)
    sys.stdout.write(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
