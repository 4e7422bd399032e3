"""DuckDB warehouse: schema migrations, connections, staging, validation, commits and views.

No Prefect imports here (the tasks layer adds orchestration and the writer lock) and no imports
from ``models``. Public entry points:

- :func:`warehouse.connection.connect` / :func:`warehouse.connection.connect_readonly`
- :func:`warehouse.migrate.migrate`
- :mod:`warehouse.staging` -> :mod:`warehouse.validation` -> :mod:`warehouse.commit`: one ingest batch
- :func:`warehouse.query.run_readonly`: the analyst SQL path
"""
