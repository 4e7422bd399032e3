"""Readers that turn files, feeds, public datasets and the demo generator into raw records.

Every reader returns a *records frame* (see :mod:`sources.records`): one row per record as it was
received, with the raw text kept for quarantine. Readers never write to the warehouse and never
import Prefect; parsing problems are reported per record in the ``error`` column, never raised.
"""
