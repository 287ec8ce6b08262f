"""The immutable-release library: everything the DAGs call lives here.

Kept import-light: submodules import their heavy dependencies (docker, httpx, scipy) inside
functions, so that parsing a DAG file never pays for them.
"""
