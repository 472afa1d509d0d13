"""Map the architecture's root folders onto the `mlgym` namespace, and build the bus broker's
optional C loop.

The repository shows one folder per job (bus/, env_server/, ...); installed, they become
`mlgym.bus`, `mlgym.env_server`, ... so no generic top-level names (`tools`, `tasks`) leak
into site-packages. `mlgym.bus._hotpath` is optional: without a C compiler and Python's
headers the install goes on and the broker uses its Python loop (slower, same behaviour).
Everything else lives in pyproject.toml.
"""

from setuptools import Extension, find_namespace_packages, find_packages, setup

ROOTS = ["bus", "env_server", "agents", "tools", "tasks", "sweep", "viewer"]

packages = ["mlgym"] + [f"mlgym.{p}" for p in find_packages("mlgym")]
package_dir = {"mlgym": "mlgym"}
for root in ROOTS:
    package_dir[f"mlgym.{root}"] = root
    packages.append(f"mlgym.{root}")
    # every folder, with or without __init__.py: task folders carry code and data files
    packages += [f"mlgym.{root}.{p}" for p in find_namespace_packages(root, exclude=["*__pycache__*"])]

hotpath = Extension("mlgym.bus._hotpath", ["bus/_hotpath.c"], optional=True,
                    extra_compile_args=["-O2", "-Wall"], libraries=["dl"])

setup(packages=packages, package_dir=package_dir, ext_modules=[hotpath])
