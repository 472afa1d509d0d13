"""What other tools leave beside runs, shown when it is there (docs/viewer.md, "Files the viewer
shows"): `mlgym analyze`'s `analysis/` folder in a run, and a sweep folder's `sweep.json` with
the score tables and performance profiles of `mlgym score` over its runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlgym.viewer.catalog import SWEEP_FILE, read_inside, valid_name
from mlgym.viewer.runs import load_json

ANALYSIS_DIR = "analysis"
SCORE_DIRS = ("score", "report", "scores")  # where a sweep keeps `mlgym score --out` output
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}
MAX_IMAGE = 8 * 1024 * 1024


def _images(folder: Path, prefix: str) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(
        f"{prefix}{p.name}"
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_TYPES and p.is_file() and not p.is_symlink()
    )


def analysis(run_dir: Path) -> dict[str, Any]:
    """Every JSON file of the run's analysis/ folder (by name) and its images."""
    folder = run_dir / ANALYSIS_DIR
    out: dict[str, Any] = {"present": folder.is_dir(), "data": {}, "images": [], "errors": []}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        if path.is_symlink():
            continue
        data, err = load_json(path)
        if err:
            out["errors"].append(err)
        elif data is not None:
            out["data"][path.name] = data
    out["images"] = _images(folder, f"{ANALYSIS_DIR}/")
    return out


def image(folder: Path, relative: str) -> tuple[bytes, str]:
    """An image file under `folder` (analysis plots, score profiles) and its media type."""
    suffix = Path(relative).suffix.lower()
    if not valid_name(relative) or suffix not in IMAGE_TYPES:
        raise FileNotFoundError(relative)
    data, truncated = read_inside(folder, relative, MAX_IMAGE)
    if truncated:
        raise FileNotFoundError(f"{relative} is larger than {MAX_IMAGE // 2**20} MiB")
    return data, IMAGE_TYPES[suffix]


def sweep(root: Path) -> dict[str, Any]:
    """A sweep folder's description, its score report and the plots `mlgym score` made: the
    report found in one of SCORE_DIRS, else computed here from the runs' result.json files
    with the same code as `mlgym score`."""
    spec, err = load_json(root / SWEEP_FILE)
    out: dict[str, Any] = {
        "sweep": spec,
        "errors": [err] if err else [],
        "report": None,
        "report_source": "",
        "images": [],
    }
    for name in SCORE_DIRS:
        report, rep_err = load_json(root / name / "report.json")
        if rep_err:
            out["errors"].append(f"{name}/{rep_err}")
        if isinstance(report, dict):
            out.update(
                report=report,
                report_source=f"{name}/report.json",
                images=_images(root / name, f"{name}/"),
            )
            return out
    from mlgym.tasks import score_report, scoring

    notes: list[str] = []
    try:
        runs = scoring.load_results([root], notes)
        if runs:
            report = scoring.score_runs(runs, notes=notes)
            out["report"] = score_report.report_json(report)
            out["report_source"] = "computed by the viewer (mlgym.tasks.scoring, as mlgym score)"
    except (scoring.ResultsError, ValueError, KeyError) as exc:
        out["errors"].append(f"scoring: {exc}")
    return out
