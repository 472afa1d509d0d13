"""`mlgym view`: a local web viewer for live and finished runs.

It reads run folders as `mlgym run` leaves them (run.json, result.json, the event log,
artefacts/, trajectories/) and never writes to them: the event log through `bus.eventlog`'s
readers (safe while the broker writes), scores through `tasks.scoring`. A Starlette app
(`app.py`) serves a plain-JS front end (`static/`) and a JSON/SSE API; docs/viewer.md
describes both, and the files of other tools it shows when they exist.
"""
