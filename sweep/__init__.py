"""Experiments at scale: `mlgym sweep` runs a grid of team designs x models x tasks x seeds,
each run an `mlgym run` subprocess, on this machine or on a Ray cluster; resumable, retrying
infrastructure failures, with a report at the end. See docs/sweeps.md."""
