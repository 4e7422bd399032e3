"""Prefect tasks: thin ``@task`` wrappers around plain functions in ``sources`` and ``warehouse``.

Tasks take and return paths, ids and small dicts, never DataFrames, connections or models.
Every DuckDB write happens inside :func:`tasks.warehouse.writer_slot` (Prefect global
concurrency limit ``duckdb-writer``, limit 1), so flows on any worker never fight for the lock.
"""
