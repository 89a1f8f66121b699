"""The two-stage study step: retrievers fitted on training events, a LightGBM ranker trained on the validation
period, the pipeline evaluated on test exactly like every other model.

* Stage 1 is fitted as every model of the study (:func:`sasrec.training.loop.policy_mask` through
  :func:`~sasrec.study.comparisons.fit_baselines`; the sequential retriever is the trained model with the best
  validation NDCG of ``training.json``, its test-stage checkpoint the policy's).
* The ranker's examples are the validation task's candidates (input: training events only), labelled from the
  validation targets (:func:`sasrec.models.ranker.graded_labels`); the pair features of each stage read only
  that stage's input events (:func:`sasrec.data.features.pairs.pair_context`), and the feature table's cut
  keeps both held-out periods out of the daily aggregates.
* The test pipeline (retrievers of the test stage, test-stage pair features, the same ranker) is evaluated with
  :func:`~sasrec.study.comparisons.evaluate_models` on the same tasks as its retrievers and the single-stage
  models, and paired (:func:`~sasrec.study.comparisons.paired_comparisons`) against its best retriever and the
  best single model (both chosen by validation NDCG@K).
* The other protocols run the same core (:func:`_rank_and_compare`) on their own tasks: item cold-start
  (:func:`run_cold_start`: stage 1 and the pair features without the withheld videos' events, tested on the
  protocol's task of every model) and big-to-small (:func:`run_big_to_small`: fitted on big_matrix, tested on
  the fully observed small matrix); their rows join ``metrics/two_stage.json`` in ``protocol_*`` tables with a
  ``setting`` column (:meth:`TwoStageResult.add`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.errors import ConfigError, MissingDataError
from sasrec.evaluation.sampling import csr_entries
from sasrec.inference.two_stage import Candidates, TwoStage
from sasrec.models.ranker import LightGBMRanker, graded_labels
from sasrec.study import comparisons

logger = logging.getLogger(__name__)

#: The retriever name that stands for the best trained sequential model (by validation NDCG@K).
SEQUENTIAL = "sequential"
SETTINGS = ("retrievers", "num_candidates", "ranker", "baselines", "single_models", "batch_size", "features")


@dataclass(frozen=True)
class TwoStageSettings:
    """The ``two_stage:`` mapping of ``params/*/09_two_stage.yaml``.

    Attributes:
        retrievers: ``sequential`` (the best trained model) and/or baseline names (``itemknn``, ``pop``,
            ``content``...).
        num_candidates: N, the top-N of each retriever in the union.
        ranker: LightGBM parameters (:data:`sasrec.models.ranker.DEFAULTS`).
        baselines: keyword parameters of retriever baselines by name (``content`` gets its side features).
        single_models: further single-stage baselines evaluated beside (name -> parameters).
        batch_size: task rows per batch.
        features: use the feature table (pair crosses and side features); False: event aggregates only.
    """

    retrievers: tuple[str, ...] = (SEQUENTIAL, "itemknn", "pop")
    num_candidates: int = 200
    ranker: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    single_models: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 256
    features: bool = True

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any] | None) -> TwoStageSettings:
        """Validated settings (unknown keys refused, naming the section)."""
        given = dict(mapping or {})
        unknown = sorted(set(given) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"two_stage has no setting {unknown[0]!r}; accepted: {', '.join(SETTINGS)}")
        retrievers = given.get("retrievers", cls.retrievers)
        if isinstance(retrievers, str):
            retrievers = [r.strip() for r in retrievers.split(",") if r.strip()]
        settings = cls(
            retrievers=tuple(dict.fromkeys(retrievers)),
            num_candidates=given.get("num_candidates", 200),
            ranker=dict(given.get("ranker") or {}),
            baselines={k: dict(v or {}) for k, v in (given.get("baselines") or {}).items()},
            single_models={k: dict(v or {}) for k, v in (given.get("single_models") or {}).items()},
            batch_size=int(given.get("batch_size", 256)),
            features=bool(given.get("features", True)),
        )
        if not settings.retrievers:
            raise ConfigError("two_stage.retrievers must name at least one retriever")
        n = settings.num_candidates
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"two_stage.num_candidates must be a positive integer; got {n!r}")
        return settings


@dataclass
class TwoStageResult:
    """What the step produced (:meth:`to_json` is ``metrics/two_stage.json``)."""

    setup: dict[str, Any]
    recall: pd.DataFrame
    table: pd.DataFrame
    per_user: pd.DataFrame
    paired: pd.DataFrame
    importance: pd.DataFrame
    seconds: dict[str, float]
    pipelines: dict[str, TwoStage]
    protocols: list[ProtocolResult] = field(default_factory=list)

    def add(self, *results: ProtocolResult | None) -> TwoStageResult:
        """Add the results of other protocols (:func:`run_cold_start`, :func:`run_big_to_small`); None skipped."""
        self.protocols.extend(r for r in results if r is not None)
        return self

    def to_json(self) -> dict[str, Any]:
        """JSON payload (per-user rows are not stored). The within-matrix results keep the top-level keys; the
        other protocols' rows are in ``protocol_*`` tables with a ``setting`` column (``within`` included)."""
        within = ProtocolResult("within", "test", self.setup, self.recall, self.table, self.per_user,
                                self.paired, self.importance, self.seconds)  # fmt: skip
        every = [within, *self.protocols]
        return {**self.setup, "recall": self.recall, "table": self.table, "paired": self.paired,
                "importance": self.importance, "seconds": self.seconds,
                "protocol_setup": {r.setting: {**r.setup, "test_task_key": r.test_task, "seconds": r.seconds}
                                   for r in every},
                "protocol_recall": _tagged(every, "recall"), "protocol_table": _tagged(every, "table"),
                "protocol_paired": _tagged(every, "paired"),
                "protocol_importance": _tagged(every, "importance", head=30)}  # fmt: skip


@dataclass
class ProtocolResult:
    """The pipeline under one evaluation protocol (``setting``: ``within``, ``cold_items``, ``big_to_small``).

    Attributes:
        test_task: the task the pipeline is tested (and paired) on, among ``table``'s ``task`` values.
    """

    setting: str
    test_task: str
    setup: dict[str, Any]
    recall: pd.DataFrame
    table: pd.DataFrame
    per_user: pd.DataFrame
    paired: pd.DataFrame
    importance: pd.DataFrame
    seconds: dict[str, float]


def _tagged(results: list[ProtocolResult], name: str, head: int | None = None) -> pd.DataFrame:
    """The ``name`` frames of ``results`` stacked, each with its ``setting`` first (``head``: rows of each)."""
    frames = []
    for result in results:
        frame = getattr(result, name)
        frame = frame.head(head) if head is not None else frame
        frames.append(frame.assign(setting=result.setting)[["setting", *frame.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------------- stage 1
def feature_table(data: PreparedData, split: str, enabled: bool = True) -> Any:
    """The dataset's cached feature table of ``split``, or None (disabled, or no side files recorded)."""
    if not enabled:
        return None
    from sasrec.data.features.cache import cached_feature_table

    try:
        return cached_feature_table(data, split)
    except MissingDataError as exc:
        logger.warning("two-stage: no feature table (%s); pair features from events only", exc)
        return None


def content_features(table: Any) -> Any:
    """``ItemSideFeatures`` of the content retriever from the table's tags and categories."""
    from sasrec.models.content import ItemSideFeatures

    if table is None:
        raise ConfigError("the content retriever needs the feature table (side files beside the dataset)")
    arrays = {name: table.groups[name].values for name in ("tags", "categories") if name in table.groups}
    return ItemSideFeatures.from_arrays(**arrays, data_fingerprint=table.data_fingerprint)


def best_sequential(training: dict[str, Any], k: int) -> str:
    """The trained model with the highest validation ``ndcg@k`` in a training summary."""
    scores = {name: float((info.get("valid") or {}).get(f"ndcg@{k}", float("-inf")))
              for name, info in training["models"].items()}  # fmt: skip
    if not scores:
        raise ConfigError("training.json lists no trained model: run notebook 03_train first")
    return max(scores, key=lambda name: (scores[name], name))


def fit_stage_one(
    data: PreparedData,
    training: dict[str, Any],
    settings: TwoStageSettings,
    *,
    split: str,
    fit_on: str,
    k: int,
    seed: int,
    table: Any,
    cold_start: Any = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``({retriever: {stage: scorer}}, {retriever: what it is})`` fitted under the policy (and the
    ``cold_start`` protocol's removed events, :class:`~sasrec.data.cold_start.ColdStart`, for baselines)."""
    params = {}
    for name in settings.retrievers:
        if name == SEQUENTIAL:
            continue
        params[name] = dict(settings.baselines.get(name) or {})
        if name == "content":
            params[name].setdefault("features", content_features(table))
    fitted = comparisons.fit_baselines(data, params, split=split, fit_on=fit_on, seed=seed,
                                       cold_start=cold_start) if params else {}  # fmt: skip
    described = {name: f"baseline {name}" for name in params}
    if SEQUENTIAL in settings.retrievers:
        best = best_sequential(training, k)
        fitted[SEQUENTIAL] = comparisons.trained_scorers({"models": {best: training["models"][best]}}, data)[
            best
        ]
        described[SEQUENTIAL] = f"trained {best} (best validation ndcg@{k})"
    return {name: fitted[name] for name in settings.retrievers}, described


# ------------------------------------------------------------------------------------ examples, recall
def _lookup(keys: np.ndarray, table_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, position) of ``keys`` in sorted ``table_keys``."""
    if len(table_keys) == 0:
        return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), dtype=np.int64)
    index = np.minimum(np.searchsorted(table_keys, keys), len(table_keys) - 1)
    return table_keys[index] == keys, index


def _target_keys(matrix: Any, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys ``row * C + item`` of a task CSR's stored entries and their values."""
    csr = matrix.tocsr().sorted_indices()
    rows, _ = csr_entries(csr)
    return rows * n_cols + csr.indices.astype(np.int64), np.asarray(csr.data)


def batch_labels(
    task: EvalTask, found: Candidates, *, like_threshold: float, relevance_threshold: float
) -> np.ndarray:
    """(valid slots,) graded labels 0..3 of the candidates from the task's targets (watch_ratio levels)."""
    batch_row, items = found.pairs()
    n_cols = task.num_items + 1
    keys = batch_row * n_cols + items  # (P,) batch row * C + item
    t_keys, t_wr = _target_keys(task.targets[found.rows], n_cols)
    hit, index = _lookup(keys, t_keys)
    return graded_labels(hit, np.where(hit, t_wr[index], np.nan), like_threshold=like_threshold,
                         relevance_threshold=relevance_threshold)  # fmt: skip


def batch_recall_counts(task: EvalTask, found: Candidates, n: int) -> np.ndarray:
    """(B, R + 2) per batch row: relevant rankable targets, hits of each retriever's top N, hits of the union."""
    n_cols = task.num_items + 1
    rel = task.relevant[found.rows].tocsr()
    rel.eliminate_zeros()
    rel_rows, rel_items = csr_entries(rel.sorted_indices())
    if task.candidates is not None:
        keep = task.candidates[rel_items]
        rel_rows, rel_items = rel_rows[keep], rel_items[keep]
    batch_row, items = found.pairs()
    slot = np.nonzero(found.valid)[1]
    cand_keys = batch_row * n_cols + items  # sorted: row-major, increasing items
    hit, index = _lookup(rel_rows * n_cols + rel_items, cand_keys)
    n_r = found.ranks.shape[2]
    counts = np.zeros((len(found.rows), n_r + 2), dtype=np.float64)
    counts[:, 0] = np.bincount(rel_rows, minlength=len(found.rows))
    ranks = found.ranks[batch_row[index], slot[index]]  # (T, R)
    for r in range(n_r):
        counts[:, 1 + r] = np.bincount(rel_rows, weights=hit & (ranks[:, r] <= n), minlength=len(found.rows))
    counts[:, -1] = np.bincount(rel_rows, weights=hit, minlength=len(found.rows))
    return counts


def stage_pass(
    pipeline: TwoStage,
    task: EvalTask,
    batch_size: int,
    *,
    labels: dict[str, float] | None = None,
    drop_items: np.ndarray | None = None,
) -> dict[str, Any]:
    """One pass over ``task``'s rows: recall counts, candidate counts and, with ``labels`` (the thresholds),
    the ranker's examples (features, labels, groups; users without a positive candidate are left out).

    ``drop_items``: (I+1,) bool videos left out of the examples (their labels are unknown: the withheld
    videos of item cold-start, whose validation events were removed); recall counts keep them."""
    counts, sizes, xs, ys, groups = [], [], [], [], []
    seconds = {"candidates": 0.0, "features": 0.0}
    for start in range(0, len(task), batch_size):
        rows = np.arange(start, min(start + batch_size, len(task)))
        started = time.perf_counter()
        found = pipeline.candidates(task, rows)
        seconds["candidates"] += time.perf_counter() - started
        counts.append(batch_recall_counts(task, found, pipeline.num_candidates))
        per_retriever = ((found.ranks <= pipeline.num_candidates) & found.valid[:, :, None]).sum(
            axis=1
        )  # (B, R)
        sizes.append(np.concatenate([per_retriever, found.valid.sum(axis=1, keepdims=True)], axis=1))
        if labels is None:
            continue
        started = time.perf_counter()
        x = pipeline.features(task, found)
        seconds["features"] += time.perf_counter() - started
        y = batch_labels(task, found, **labels)
        row_of, items = found.pairs()  # row-major: each row's slots together
        kept = np.ones(len(items), dtype=bool) if drop_items is None else ~drop_items[items]
        per_row = np.bincount(row_of[kept], minlength=len(rows))
        positive = np.bincount(row_of[kept], weights=y[kept] > 0, minlength=len(rows)) > 0
        keep = kept & positive[row_of]
        xs.append(x[keep])
        ys.append(y[keep])
        groups.append(per_row[positive])
    out: dict[str, Any] = {
        "counts": np.concatenate(counts),
        "sizes": np.concatenate(sizes),
        "seconds": seconds,
    }
    if labels is not None:
        out.update(features=np.concatenate(xs), labels=np.concatenate(ys), groups=np.concatenate(groups))
    return out


def recall_rows(counts: np.ndarray, sizes: np.ndarray, names: list[str], stage: str, n: int) -> pd.DataFrame:
    """retriever, stage, n, recall@N (mean over users with a relevant rankable target), users, mean candidates
    per user (``union``: after de-duplication)."""
    users = counts[:, 0] > 0
    rows = []
    for j, name in enumerate([*names, "union"]):
        recall = counts[users, 1 + j] / counts[users, 0]
        rows.append(
            {
                "retriever": name,
                "stage": stage,
                "n": n,
                f"recall@{n}": float(recall.mean()) if users.any() else float("nan"),
                "users": int(users.sum()),
                "mean_candidates": float(sizes[:, j].mean()) if len(sizes) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------- the step
def _thresholds(data: PreparedData) -> dict[str, float]:
    """The like and relevance thresholds of the graded labels (preparation's)."""
    return {"like_threshold": float(data.meta.get("like_threshold", 0.7)),
            "relevance_threshold": float(data.meta.get("relevance_threshold", 2.0))}  # fmt: skip


def _train_ranker(
    pipeline: TwoStage,
    task: EvalTask,
    data: PreparedData,
    settings: TwoStageSettings,
    table: Any,
    ranker_path: Any,
    drop_items: np.ndarray | None,
    seconds: dict[str, float],
    name: str,
) -> tuple[LightGBMRanker, Any, dict[str, Any]]:
    """Fit the ranker on ``task``'s candidates (the validation period) and save it; (ranker, path, the pass)."""
    valid = stage_pass(pipeline, task, settings.batch_size, labels=_thresholds(data), drop_items=drop_items)
    seconds[f"{name}_candidates"] = valid["seconds"]["candidates"]
    seconds[f"{name}_features"] = valid["seconds"]["features"]
    if not len(valid["groups"]):
        raise ConfigError(f"two-stage: no user of {task.name} has a target among the candidates; "
                          "raise two_stage.num_candidates")  # fmt: skip
    ranker = LightGBMRanker(settings.ranker)
    schema = {"table": None if table is None else table.schema(), "columns": list(pipeline.columns)}
    ranker.fit(valid["features"], valid["labels"], valid["groups"], pipeline.columns,
               feature_schema=schema, feature_digest=None if table is None else table.digest())  # fmt: skip
    seconds["ranker_fit"] = ranker.fit_seconds
    return ranker, ranker.save(ranker_path), valid


def _references(table_rows: pd.DataFrame, task: str, metric: str, retrievers: list[str]) -> tuple[str, str]:
    """The best retriever and the best single model (neither random nor oracle) by ``metric`` on ``task``."""
    scores = table_rows[(table_rows["task"] == task) & (table_rows["metric"] == metric)].set_index("model")[
        "mean"
    ]
    single = [m for m in scores.index if m != "two_stage" and m not in comparisons.REFERENCE_MODELS]
    return str(scores.reindex(retrievers).idxmax()), str(scores.reindex(single).idxmax())


def _rank_and_compare(
    study: Any,
    data: PreparedData,
    settings: TwoStageSettings,
    config: Any,
    *,
    retrievers: dict[str, dict[str, Any]],
    names: dict[str, str],
    tasks: dict[str, EvalTask],
    contexts: dict[str, Any],
    rivals: dict[str, dict[str, Any]],
    table: Any,
    ranker_path: Any,
    drop_items: np.ndarray | None = None,
    choose_on: str = "valid",
) -> dict[str, Any]:
    """The shared core of every protocol: train the ranker on the first task (the validation period), test
    on the second, evaluate the pipeline, its retrievers and ``rivals`` on both with the same machinery and
    pair the pipeline against its best retriever and the best single model (by NDCG@K on ``choose_on``).

    Args:
        data: the dataset stage 1 and the ranker are fitted on (its thresholds label the examples).
        retrievers: retriever -> {task name: scorer}, fitted as the policy says for each task.
        names: retriever -> model name in the tables (``sequential`` -> the trained model's name).
        tasks: ``{validation task name: task, test task name: task}`` (in this order).
        contexts: task name -> :class:`~sasrec.data.features.pairs.PairContext` of that task's input events.
        rivals: further single-stage models, name -> {task name: scorer}.
        ranker_path: where the ranker is saved.
        drop_items: videos left out of the ranker's examples (:func:`stage_pass`).
        choose_on: ``valid`` (the references chosen on the validation task) or ``test`` (on the test task,
            as :func:`sasrec.study.comparisons.within_matrix` and ``cross_dataset`` choose theirs: the
            strongest rival in hindsight, for protocols whose validation period does not measure what the
            test does).
    """
    valid_name, test_name = list(tasks)
    k, n = config.k, settings.num_candidates
    order = list(retrievers)
    seconds: dict[str, float] = {}
    pipelines = {name: TwoStage({r: retrievers[r][name] for r in order}, n, pairs=contexts[name])
                 for name in tasks}  # fmt: skip
    ranker, saved, valid = _train_ranker(pipelines[valid_name], tasks[valid_name], data, settings, table, ranker_path,
                                         drop_items, seconds, valid_name)  # fmt: skip
    for pipeline in pipelines.values():
        pipeline.ranker = ranker
    test = stage_pass(pipelines[test_name], tasks[test_name], settings.batch_size)
    recall = pd.concat([recall_rows(valid["counts"], valid["sizes"], order, valid_name, n),
                        recall_rows(test["counts"], test["sizes"], order, test_name, n)],
                       ignore_index=True)  # fmt: skip
    two_stage_scorers = {name: pipeline.scorer() for name, pipeline in pipelines.items()}
    scorers: dict[str, Any] = {"two_stage": two_stage_scorers}
    scorers.update({names[r]: retrievers[r] for r in order})
    scorers.update({name: s for name, s in rivals.items() if name not in scorers})
    started = time.perf_counter()
    table_rows, per_user = comparisons.evaluate_models(scorers, tasks, config, protocols=["full"])
    seconds["evaluation"] = time.perf_counter() - started
    for name, scorer in two_stage_scorers.items():
        for part, value in scorer.seconds.items():
            seconds[f"{name}_two_stage_{part}"] = value
    metric = f"ndcg@{k}"
    if choose_on not in ("valid", "test"):
        raise ConfigError(f"choose_on must be valid or test; got {choose_on!r}")
    chosen_on = valid_name if choose_on == "valid" else test_name
    best_retriever, best_single = _references(table_rows, chosen_on, metric, [names[r] for r in order])
    references = list(dict.fromkeys([best_retriever, best_single]))
    paired = comparisons.paired_comparisons(per_user, test_name, references, config,
                                            metrics=(metric, f"recall@{k}", f"graded_ndcg@{k}"))  # fmt: skip
    paired = paired[paired["model"] == "two_stage"].reset_index(drop=True) if len(paired) else paired
    setup = {
        "num_candidates": n,
        "ranker": ranker.params,
        "ranker_path": str(saved),
        "feature_columns": list(ranker.columns),
        "feature_digest": ranker.feature_digest,
        "training_examples": {
            "task": tasks[valid_name].name,
            "rows": int(len(valid["labels"])),
            "users": int(len(valid["groups"])),
            "label_counts": np.bincount(valid["labels"], minlength=4).tolist(),
        },
        "test_task": {"name": tasks[test_name].name, "users": len(tasks[test_name])},
        "references": {
            "best_retriever": best_retriever,
            "best_single_model": best_single,
            "chosen_on": tasks[chosen_on].name,
        },  # fmt: skip
        "single_models": [m for m in scorers if m != "two_stage"],
    }
    return {"setup": setup, "recall": recall, "table": table_rows, "per_user": per_user, "paired": paired,
            "ranker": ranker, "seconds": seconds, "pipelines": pipelines}  # fmt: skip


# ----------------------------------------------------------------------------------------- the steps
def run_two_stage(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    evaluation: dict[str, Any],
    two_stage: dict[str, Any],
    *,
    split: str | None = None,
    fit_on: str = "train",
    maxlen: int = 200,
    compare: bool = True,
) -> TwoStageResult:
    """Within-matrix: fit stage 1 on training events, train the ranker on the validation period, test.

    Args:
        study: the notebook's :class:`~sasrec.study.context.Study` (anything with ``models_dir``: where the
            ranker file goes).
        data: the prepared dataset the trained models were trained on.
        training: ``metrics/training.json`` (split, fitting policy, checkpoints).
        evaluation: the ``evaluation:`` mapping (K, bootstrap).
        two_stage: the ``two_stage:`` mapping (:class:`TwoStageSettings`).
        split, fit_on, maxlen: used only when ``training`` lists no model (no sequential retriever; the
            command line); otherwise read from the trained models' checkpoints.
        compare: also evaluate every trained model and ``single_models`` and pair the pipeline against its
            best retriever and the best single model (False: the pipeline and its retrievers only).
    """
    from sasrec.data.features.pairs import pair_context

    settings = TwoStageSettings.from_mapping(two_stage)
    config = comparisons.evaluation_config(evaluation)
    split, fit_on, maxlen = _trained_setting(training, split, fit_on, maxlen)
    k = config.k
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table = feature_table(data, split, settings.features)
    seconds["feature_table"] = time.perf_counter() - started
    started = time.perf_counter()
    retrievers, described = fit_stage_one(data, training, settings, split=split, fit_on=fit_on, k=k,
                                          seed=config.seed, table=table)  # fmt: skip
    seconds["stage1_fit"] = time.perf_counter() - started
    tasks = comparisons.stage_tasks(data, split, maxlen, config)
    started = time.perf_counter()
    contexts = {stage: pair_context(data, data.stage_masks(split, stage)[0], table) for stage in tasks}
    seconds["pair_context"] = time.perf_counter() - started
    singles = comparisons.fit_baselines(data, settings.single_models, split=split, fit_on=fit_on,
                                        seed=config.seed) if compare else {}  # fmt: skip
    trained = comparisons.trained_scorers(training, data) if compare else {}
    out = _rank_and_compare(study, data, settings, config, retrievers=retrievers,
                            names=_display_names(settings.retrievers, training, k), tasks=tasks,
                            contexts=contexts, rivals={**singles, **trained}, table=table,
                            ranker_path=study.models_dir / f"{data.name}_two_stage" / "ranker.json")  # fmt: skip
    seconds.update(out["seconds"])
    setup = {"dataset": data.name, "split": split, "fit_on": fit_on, "k": k, "retrievers": described,
             **out["setup"]}  # fmt: skip
    return TwoStageResult(setup, out["recall"], out["table"], out["per_user"], out["paired"],
                          out["ranker"].importance(), seconds, out["pipelines"])  # fmt: skip


def _trained_setting(
    training: dict[str, Any], split: str | None, fit_on: str, maxlen: int
) -> tuple[str, str, int]:
    """(split, fit_on, maxlen) of the trained models' checkpoints, or the given ones without a model."""
    from sasrec.study.steps import trained_setting

    if training.get("models"):
        maxlen = max(int(info["config"]["maxlen"]) for info in training["models"].values())
        return trained_setting(training, "split"), trained_setting(training, "fit_on"), maxlen
    if split is None:
        raise ConfigError("two-stage without trained models needs split (and fit_on, maxlen)")
    return split, fit_on, maxlen


def _display_names(retrievers: tuple[str, ...], training: dict[str, Any], k: int) -> dict[str, str]:
    """retriever -> its model name in the tables (``sequential``: the best trained model's name)."""
    return {r: best_sequential(training, k) if r == SEQUENTIAL else r for r in retrievers}


def cold_start_retrievers(settings: TwoStageSettings) -> TwoStageSettings:
    """The settings of the item cold-start protocol: the retrievers without ``sequential`` (the trained
    checkpoints were fit on the withheld videos' events); ``content`` is the one that can propose a withheld
    video (a warning without it)."""
    from dataclasses import replace

    kept = tuple(r for r in settings.retrievers if r != SEQUENTIAL)
    if not kept:
        raise ConfigError(
            "item cold-start two-stage needs a baseline retriever besides sequential (e.g. content)"
        )
    if "content" not in kept:
        logger.warning(
            "two-stage item cold-start without the content retriever: no candidate is a withheld video"
        )
    return replace(settings, retrievers=kept)


def cold_start_contexts(
    data: PreparedData, split: str, spec: Any, table: Any, stages: tuple[str, ...] = ("valid", "test")
) -> dict[str, Any]:
    """stage -> pair context of the stage's input events minus the protocol's removed events (the task's own
    history), the withheld videos' behavioural side features unknown: nothing of a withheld video's
    behaviour reaches a feature."""
    from sasrec.data.features.pairs import pair_context

    selection = spec.select(data, split)
    return {stage: pair_context(data, data.stage_masks(split, stage)[0] & selection.keep, table,
                                blank_items=selection.items) for stage in stages}  # fmt: skip


def cold_start_tasks(
    data: PreparedData, split: str, maxlen: int, config: Any, spec: Any
) -> dict[str, EvalTask]:
    """``{"valid:<protocol>": task, "test:<protocol>": task}``: the protocol's tasks, built as for every model
    (:func:`sasrec.study.preferences.protocol_tasks`)."""
    from sasrec.study.preferences import protocol_tasks

    return protocol_tasks(data, split, maxlen, config, {spec.protocol: spec})


def run_cold_start(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    evaluation: dict[str, Any],
    two_stage: dict[str, Any],
    cold_start: dict[str, Any],
    *,
    split: str = "temporal",
    fit_on: str = "train",
    maxlen: int = 200,
) -> ProtocolResult:
    """Item cold-start: a seeded ``frac`` of the videos withheld (:mod:`sasrec.data.cold_start`).

    Stage 1 (:func:`cold_start_retrievers`: baselines and ``content``) and ``single_models`` are fitted
    without the withheld videos' events; the pair features read the tasks' input events only (the withheld
    videos' events removed, their behavioural side features unknown, :func:`cold_start_contexts`); the
    ranker is trained on the protocol's validation period (withheld candidates, whose labels were removed,
    left out of its examples) and tested on the protocol's test task (targets: the withheld videos' test
    events), the same task objects as every model of the protocol.

    Paired against the best retriever and the best single model on the test task itself: the protocol's
    validation period has no withheld target, so it cannot tell which model handles withheld videos.

    Args:
        cold_start: ``{protocol: items, frac, seed}``.
        split, fit_on, maxlen: used only when ``training`` lists no model.
    """
    from sasrec.study.preferences import cold_start_spec

    given = dict(cold_start or {})
    protocol = given.pop("protocol", "items")
    if protocol != "items":
        raise ConfigError(f"two-stage cold_start.protocol must be items; got {protocol!r}")
    spec = cold_start_spec(protocol, given)
    assert spec is not None
    settings = cold_start_retrievers(TwoStageSettings.from_mapping(two_stage))
    config = comparisons.evaluation_config(evaluation)
    split, fit_on, maxlen = _trained_setting(training, split, fit_on, maxlen)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table = feature_table(data, split, settings.features)
    seconds["feature_table"] = time.perf_counter() - started
    tasks = cold_start_tasks(data, split, maxlen, config, spec)
    stages = {name: name.split(":")[0] for name in tasks}  # task -> stage
    started = time.perf_counter()
    fitted, described = fit_stage_one(data, {"models": {}}, settings, split=split, fit_on=fit_on,
                                      k=config.k, seed=config.seed, table=table, cold_start=spec)  # fmt: skip
    seconds["stage1_fit"] = time.perf_counter() - started
    started = time.perf_counter()
    by_stage = cold_start_contexts(data, split, spec, table)
    contexts = {name: by_stage[stage] for name, stage in stages.items()}
    seconds["pair_context"] = time.perf_counter() - started
    singles = comparisons.fit_baselines(data, settings.single_models, split=split, fit_on=fit_on,
                                        seed=config.seed, cold_start=spec)  # fmt: skip
    withheld = spec.select(data, split).items
    out = _rank_and_compare(
        study, data, settings, config,
        retrievers=comparisons.for_tasks(fitted, stages), names={r: r for r in settings.retrievers},
        tasks=tasks, contexts=contexts, rivals=comparisons.for_tasks(singles, stages), table=table,
        ranker_path=study.models_dir / f"{data.name}_two_stage" / f"ranker_cold_{protocol}.json",
        drop_items=withheld, choose_on="test",
    )  # fmt: skip
    seconds.update(out["seconds"])
    setup = {"dataset": data.name, "split": split, "fit_on": fit_on, "k": config.k, "retrievers": described,
             "cold_start": {**spec.to_dict(), **tasks[f"test:{protocol}"].meta.get("cold_start", {})},
             "sequential": "left out: the trained checkpoints were fit on the withheld videos' events",
             **out["setup"]}  # fmt: skip
    return ProtocolResult(f"cold_{protocol}", f"test:{protocol}", setup, out["recall"], out["table"],
                          out["per_user"], out["paired"], out["ranker"].importance(), seconds)  # fmt: skip


def optional_summary(study: Any, name: str) -> dict[str, Any] | None:
    """``metrics/<name>.json`` of ``study`` (e.g. ``training_big``, written by notebook 05), or None when
    it was not written (a damaged file is still refused)."""
    try:
        return study.load_json(name)
    except MissingDataError:
        logger.warning("two-stage: metrics/%s.json is missing; big-to-small runs without its models", name)
        return None


#: Task names of the big-to-small protocol: the ranker's training period and the small-matrix test.
BIG_VALID, CROSS_TEST = "big_valid", "small_matrix"


def big_to_small_tasks(
    big: PreparedData, small: PreparedData, split: str, maxlen: int, config: Any
) -> dict[str, EvalTask]:
    """``{"big_valid": big_matrix's validation task, "small_matrix": the big-to-small test}``, built exactly
    as :func:`sasrec.study.comparisons.stage_tasks` and :func:`~sasrec.study.comparisons.cross_tasks` do."""
    from sasrec.data.tasks import build_cross_task, build_eval_task

    relevance = comparisons.shared_relevance(config)
    return {
        BIG_VALID: build_eval_task(big, split, "valid", maxlen=maxlen, **relevance),
        CROSS_TEST: build_cross_task(big, small, maxlen=maxlen, **relevance),
    }


def run_big_to_small(
    study: Any,
    big: PreparedData,
    small: PreparedData,
    training_big: dict[str, Any] | None,
    evaluation: dict[str, Any],
    two_stage: dict[str, Any],
    *,
    training: dict[str, Any] | None = None,
) -> ProtocolResult:
    """Big-to-small (Gao et al., CIKM 2022): stage 1 and the ranker fitted on ``big`` (the ranker on its
    validation period), tested on the fully observed small matrix (:func:`big_to_small_tasks`).

    The sequential retriever is the best big-matrix model of ``training_big`` (``metrics/training_big.json``,
    notebook 05); without it (None or no model) the retrievers are the baselines. The test stage's pair
    features read every big-matrix event (the cross task's input, as every model's), the validation
    stage's the training events only. Paired against the best retriever and the best single model on the
    small-matrix task itself (as :func:`sasrec.study.comparisons.cross_dataset` chooses its references).

    Args:
        training: the small matrix's ``training.json``, for the split / fitting policy / maxlen when
            ``training_big`` lists no model.
    """
    from sasrec.data.features.pairs import pair_context

    settings = TwoStageSettings.from_mapping(two_stage)
    trained_big = training_big if training_big and training_big.get("models") else {"models": {}}
    if not trained_big["models"]:
        from dataclasses import replace

        settings = replace(settings, retrievers=tuple(r for r in settings.retrievers if r != SEQUENTIAL))
        if not settings.retrievers:
            raise ConfigError("big-to-small two-stage: no retriever left without training_big.json's models")
    config = comparisons.evaluation_config(evaluation)
    source = trained_big if trained_big["models"] else (training or {"models": {}})
    split, fit_on, maxlen = _trained_setting(source, "temporal", "train", 200)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    table = feature_table(big, split, settings.features)
    seconds["feature_table"] = time.perf_counter() - started
    tasks = big_to_small_tasks(big, small, split, maxlen, config)
    stages = {BIG_VALID: "valid", CROSS_TEST: "test"}
    started = time.perf_counter()
    fitted, described = fit_stage_one(big, trained_big, settings, split=split, fit_on=fit_on, k=config.k,
                                      seed=config.seed, table=table)  # fmt: skip
    seconds["stage1_fit"] = time.perf_counter() - started
    started = time.perf_counter()
    contexts = {BIG_VALID: pair_context(big, big.stage_masks(split, "valid")[0], table),
                CROSS_TEST: pair_context(big, np.ones(len(big.events), dtype=bool), table)}  # fmt: skip
    seconds["pair_context"] = time.perf_counter() - started
    singles = comparisons.fit_baselines(big, settings.single_models, split=split, fit_on=fit_on,
                                        seed=config.seed)  # fmt: skip
    trained = comparisons.trained_scorers(trained_big, big) if trained_big["models"] else {}
    out = _rank_and_compare(
        study, big, settings, config,
        retrievers=comparisons.for_tasks(fitted, stages),
        names=_display_names(settings.retrievers, trained_big, config.k), tasks=tasks, contexts=contexts,
        rivals=comparisons.for_tasks({**singles, **trained}, stages), table=table,
        ranker_path=study.models_dir / f"{big.name}_two_stage" / "ranker.json", choose_on="test",
    )  # fmt: skip
    seconds.update(out["seconds"])
    setup = {"train_dataset": big.name, "test_dataset": small.name, "split": split, "fit_on": fit_on,
             "k": config.k, "retrievers": described, **out["setup"]}  # fmt: skip
    return ProtocolResult("big_to_small", CROSS_TEST, setup, out["recall"], out["table"], out["per_user"],
                          out["paired"], out["ranker"].importance(), seconds)  # fmt: skip


# ------------------------------------------------------------------------------------------- report
#: How the report names each protocol.
SETTING_TITLES = {
    "within": "within-matrix",
    "cold_items": "item cold-start (withheld videos' test events)",
    "big_to_small": "big-to-small (fully observed small matrix)",
}


def _protocol_rows(payload: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """Per protocol: the test task, the pipeline vs its best retriever vs the best single model (means and
    intervals of NDCG@K) and the pipeline's paired differences."""
    setups = payload.get("protocol_setup") or {}
    table = pd.DataFrame(payload.get("protocol_table") or [])
    paired = pd.DataFrame(payload.get("protocol_paired") or [])
    out = []
    for setting, setup in setups.items():
        task, refs = str(setup["test_task_key"]), setup["references"]
        rows = table[
            (table["setting"] == setting) & (table["metric"] == f"ndcg@{k}") & (table["task"] == task)
        ]
        models = []
        for role, model in (("pipeline", "two_stage"), ("best retriever", refs["best_retriever"]),
                            ("best single model", refs["best_single_model"])):  # fmt: skip
            row = rows[rows["model"] == model]
            if len(row):
                first = row.iloc[0]
                models.append({"role": role, "model": model, "mean": float(first["mean"]),
                               "low": float(first["low"]), "high": float(first["high"])})  # fmt: skip
        pairs = paired[paired["setting"] == setting] if len(paired) else paired
        out.append({
            "setting": setting,
            "title": SETTING_TITLES.get(setting, setting),
            "task": task,
            "users": (setup.get("test_task") or {}).get("users"),
            "models": models,
            "paired": [{**row, "p_value": comparisons.p_value_text(row.get("p_value"))}
                       for row in pairs.to_dict(orient="records")],
        })  # fmt: skip
    return out


def report_context(payload: dict[str, Any]) -> dict[str, Any]:
    """What ``templates/two_stage.md.j2`` renders from ``metrics/two_stage.json``: recall, metric and paired
    rows of the test task, importance (top 15), the seconds of each stage and, per protocol
    (``protocols``), the pipeline against its best retriever and the best single model."""
    k = int(payload["k"])
    table = pd.DataFrame(payload["table"])
    test = table[
        (table["task"] == "test") & table["metric"].isin([f"ndcg@{k}", f"recall@{k}", f"graded_ndcg@{k}"])
    ]
    wide = test.pivot(index="model", columns="metric", values="mean").sort_values(
        f"ndcg@{k}", ascending=False
    )
    return {
        "k": k,
        "num_candidates": payload["num_candidates"],
        "retrievers": payload["retrievers"],
        "recall": payload["recall"],
        "test_table": wide.reset_index().to_dict(orient="records"),
        "paired": [
            {**row, "p_value": comparisons.p_value_text(row.get("p_value"))}
            for row in payload["paired"]
            if row.get("model") == "two_stage"
        ],
        "importance": payload["importance"][:15],
        "seconds": payload["seconds"],
        "references": payload["references"],
        "protocols": _protocol_rows(payload, k),
        "protocol_recall": [
            row for row in payload.get("protocol_recall") or [] if row.get("setting") != "within"
        ],
    }
