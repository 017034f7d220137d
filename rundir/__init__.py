"""The run directory contract (docs/run-directory.md) as code: the one place writers and readers meet.

A leaf package: it imports nothing else of bridgestorm, so the load, chaos,
the stack and the analysis can all depend on it. Import the part you need:

- ``rundir.schema``: folder names, pyarrow schemas, file names, ``RunDirError``
- ``rundir.masking``: passwords and secret-looking values masked (run.json, logs, reports)
- ``rundir.write``: batches, ``run.json``, ``BatchWriter`` (pyarrow only, no pandas: every Locust worker imports it)
- ``rundir.journal``: ``FaultRecord``/``FaultJournal`` and ``ExperimentRecord``/``ExperimentJournal``, the one
  writer and reader of ``chaos.jsonl`` and ``experiments.jsonl``
- ``rundir.read``: everything back, as pyarrow tables or pandas frames (the analysis)
"""
