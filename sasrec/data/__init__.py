"""Data: KuaiRec files, the simulator, preparation into sequences and splits, and evaluation tasks.

* :mod:`sasrec.data.kuairec`: schemas, validated readers, parquet cache, cleaning, validation, download.
* :mod:`sasrec.data.simulator`: the KuaiRec-shaped simulator (the embedded default data).
* :mod:`sasrec.data.preparation`: sequences, id maps, the three splits, leakage checks, artifacts.
* :mod:`sasrec.data.contracts`: :class:`PreparedData` and :class:`EvalTask`, what every later stage uses.
* :mod:`sasrec.data.tasks`: evaluation tasks of a split's stage, of the big-to-small test, of recommendation.
"""
