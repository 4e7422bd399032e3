"""The leaf every layer may import, and that imports nothing of ours.

- :mod:`core.settings`: the one pydantic-settings object (``NEWSPULSE_*`` environment, ``.env``).
- :mod:`core.processes`: which process a pid names (psutil), for pid files and staging owners.
- :mod:`core.intents`: the 77 BANKING77 intents (the intent labels support data may carry).
- :mod:`core.formats`: the record formats readers (``sources``) produce and the warehouse stages:
  column lists, field aliases, the tasks and labels a gold label may have.

Arrows: ``newspulse`` (CLI, serving) -> ``flows`` -> ``tasks`` -> {``models``, ``warehouse``,
``sources``} -> ``core``.
"""
