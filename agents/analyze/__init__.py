"""`mlgym analyze`: how a team collaborated, measured from a run's event log (docs/teams.md,
"Analysing runs"). `log` reads the log, `metrics` measures one run, `runs` compares a folder
of runs by team design, `plots` draws, `report` writes the outputs."""

from mlgym.agents.analyze.log import RunLog, read
from mlgym.agents.analyze.metrics import Analysis, analyse

__all__ = ["Analysis", "RunLog", "analyse", "read"]
