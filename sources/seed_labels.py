"""The seed labels: 600 realistic headlines with sentiment labels, written by the NewsPulse developers.

The offline demo has no real labelled text (PhraseBank and the other public sets may not be
shipped: their licences are non-commercial or unclear, so they are read from ``NEWSPULSE_DATA_DIR``
only). A model that learns sentiment from the synthetic stream alone learns its templates; these
headlines (``sources/seed/headlines.csv``, Apache-2.0, see its README) add the event types and
phrasings real wires use. They are ingested like any labelled file (dataset ``newspulse_seed``,
task ``sentiment``) and never overlap the evaluation golden set, which was written separately.
"""

from __future__ import annotations

from pathlib import Path

SEED_HEADLINES = Path(__file__).resolve().parent / "seed" / "headlines.csv"
SEED_DATASET = "newspulse_seed"
