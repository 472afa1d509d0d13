# Developer tasks. `just` comes from the rust-just package installed into .venv by install.py.

py := ".venv/bin/python"

# Run the whole test suite.
test *ARGS:
    {{py}} -m pytest {{ARGS}}

# Run the demo (an offline team run).
demo:
    .venv/bin/mlgym demo

# Run every benchmark; each prints one JSON object as its last line.
bench:
    .venv/bin/mlgym bench bus
    .venv/bin/mlgym bench env
    .venv/bin/mlgym bench tasks
    .venv/bin/mlgym bench agents
    .venv/bin/mlgym bench view

# Lint.
lint:
    {{py}} -m pyflakes bus env_server agents tools tasks sweep viewer mlgym tests bench
