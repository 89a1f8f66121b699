"""Cold-start protocols: which events every model may fit on and see as input, and which it is tested on.

One option, ``cold_start``, selects the protocol (:data:`COLD_START_PROTOCOLS`):

* ``none`` (the default): the split's stages unchanged.
* ``items``: a seeded fraction ``frac`` of the dataset's videos (those with an event or a label) is
  *withheld*: every event of theirs before the test stage (training and validation events) is removed from
  every model's fitting events and from every input history (training sequences, validation and test input),
  so no model fits on or sees them as input at any time. At test time every video is a candidate as usual
  (withheld ones included), and the targets are the test events of withheld videos only: the evaluated users
  are those with a test event of a withheld video.
* ``users``: cold users are users with at most ``user_events`` (k) training events. A seeded fraction
  ``frac`` of the users is *made* cold: each keeps only its last k training events; its earlier training
  events and all its validation events are removed from every model's fitting events (under both fitting
  policies) and from its input history. Users that naturally have at most k training events are cold too
  (their validation events are removed likewise). Test targets are the cold users' test events: the
  evaluated users are the cold users with a test event.

Under either protocol the validation stage keeps its targets among the kept events (a removed event is
never a target). The selections are pure functions of the seed and the dataset's original ids (a
permutation of the sorted ids), so they do not depend on the model, on how the dataset was indexed
(remapped or not) or on the fitting policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sasrec.data.contracts import TRAIN, VALID, PreparedData, split_column
from sasrec.errors import ConfigError

COLD_START_PROTOCOLS = ("none", "items", "users")
"""Values of ``cold_start`` (see the module docstring)."""

_ITEM_STREAM, _USER_STREAM = 1, 2  # independent random streams of the two selections


@dataclass(frozen=True)
class ColdStart:
    """A cold-start protocol and its parameters (validated on construction).

    Attributes:
        protocol: ``none``, ``items`` or ``users``.
        frac: fraction of the videos withheld (``items``) or of the users made cold (``users``), in (0, 1).
        user_events: k, the training events a cold user keeps (``users``), >= 0.
        seed: seed of the selection, >= 0 (independent of any model's training seed).
    """

    protocol: str = "none"
    frac: float = 0.1
    user_events: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, prefix: str = "") -> ColdStart:
        """Raise :class:`ConfigError` naming the first invalid parameter and its allowed values; return self.

        Args:
            prefix: put before each parameter's name in messages (``"evaluation "``).
        """
        if not isinstance(self.protocol, str) or self.protocol not in COLD_START_PROTOCOLS:
            raise ConfigError(
                f"{prefix}cold_start must be one of {', '.join(COLD_START_PROTOCOLS)}; got {self.protocol!r}"
            )
        frac = self.frac
        number = not isinstance(frac, bool) and isinstance(frac, int | float)
        if not (number and math.isfinite(frac) and 0 < frac < 1):
            raise ConfigError(f"{prefix}cold_start_frac must be a number in (0, 1); got {frac!r}")
        for name, value in (("cold_user_events", self.user_events), ("cold_start_seed", self.seed)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ConfigError(f"{prefix}{name} must be an integer >= 0; got {value!r}")
        return self

    @property
    def active(self) -> bool:
        """Whether the protocol changes anything (not ``none``)."""
        return self.protocol != "none"

    def select(self, data: PreparedData, split: str) -> ColdStartSelection:
        """The protocol applied to ``data`` under ``split`` (see :class:`ColdStartSelection`)."""
        split_column(split)  # validates
        if self.protocol == "items":
            return _select_items(data, split, self)
        if self.protocol == "users":
            return _select_users(data, split, self)
        n_events = len(data.events)
        return ColdStartSelection(
            spec=self,
            keep=np.ones(n_events, dtype=bool),
            test_targets=np.ones(n_events, dtype=bool),
            items=np.zeros(data.num_items + 1, dtype=bool),
            users=np.zeros(data.num_users + 1, dtype=bool),
            info={"protocol": "none"},
        )

    def to_dict(self) -> dict[str, Any]:
        """The protocol and its parameters under their configuration names."""
        return {
            "cold_start": self.protocol,
            "cold_start_frac": float(self.frac),
            "cold_user_events": int(self.user_events),
            "cold_start_seed": int(self.seed),
        }


@dataclass(frozen=True)
class ColdStartSelection:
    """A cold-start protocol applied to one dataset and split.

    Attributes:
        spec: the protocol.
        keep: (E,) bool over ``data.events``: events a model may fit on or see as input (``&``-ed with a
            fitting policy's mask and with each stage's input history).
        test_targets: (E,) bool: events that may be test targets (withheld videos' / cold users' events).
        items: (I+1,) bool withheld videos (``items``), else all False.
        users: (U+1,) bool cold users (``users``), else all False.
        info: what the metrics output records: protocol, seed, fraction, counts.
    """

    spec: ColdStart
    keep: np.ndarray
    test_targets: np.ndarray
    items: np.ndarray
    users: np.ndarray
    info: dict[str, Any]


def _seeded_subset(ids: np.ndarray, frac: float, seed: int, stream: int) -> np.ndarray:
    """(len(ids),) bool: a seeded ``round(frac * n)`` (at least 1) of ``ids``, drawn in their sorted order."""
    n = len(ids)
    chosen = np.zeros(n, dtype=bool)
    if n == 0:
        return chosen
    size = max(1, int(round(frac * n)))
    order = np.argsort(ids, kind="stable")  # positions of the ids in sorted order
    draw = np.random.default_rng([int(seed), stream]).permutation(n)[:size]
    chosen[order[draw]] = True
    return chosen


def withheld_videos(data: PreparedData, frac: float = 0.1, seed: int = 0) -> np.ndarray:
    """(I+1,) bool: the videos the ``items`` protocol withholds, a seeded ``frac`` of those that exist.

    Drawn over the sorted original video ids, so ``small_matrix`` and ``small_matrix_no_remapping``
    withhold the same videos.
    """
    exists = data.existing_items()
    index = np.flatnonzero(exists)
    withheld = np.zeros(data.num_items + 1, dtype=bool)
    withheld[index[_seeded_subset(np.asarray(data.item_ids)[index], frac, seed, _ITEM_STREAM)]] = True
    return withheld


def made_cold_users(data: PreparedData, frac: float = 0.1, seed: int = 0) -> np.ndarray:
    """(U+1,) bool: the users the ``users`` protocol makes cold, a seeded ``frac`` of users 1..U."""
    users = np.zeros(data.num_users + 1, dtype=bool)
    users[1:] = _seeded_subset(np.asarray(data.user_ids)[1:], frac, seed, _USER_STREAM)
    return users


def last_training_events(data: PreparedData, split: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(E,) bool of each user's last ``k`` training events of ``split`` (event order), and (U+1,) training
    event counts per user."""
    users = data.events["user"].to_numpy().astype(np.int64)
    train = np.flatnonzero(data.events[split_column(split)].to_numpy() == TRAIN)
    train_users = users[train]
    order = np.argsort(train_users, kind="stable")  # by user, event order kept (already so when sorted)
    counts = np.bincount(train_users, minlength=data.num_users + 1)
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    sorted_users = train_users[order]
    from_end = counts[sorted_users] - 1 - (np.arange(len(order)) - starts[sorted_users])  # 0 = the last
    last = np.zeros(len(users), dtype=bool)
    last[train[order[from_end < k]]] = True
    return last, counts


def _before_test(data: PreparedData, split: str) -> np.ndarray:
    """(E,) bool: training and validation events of ``split`` (what models fit on or see as input)."""
    return data.events[split_column(split)].to_numpy() <= VALID


def _select_items(data: PreparedData, split: str, spec: ColdStart) -> ColdStartSelection:
    withheld = withheld_videos(data, spec.frac, spec.seed)
    of_withheld = withheld[data.events["item"].to_numpy()]
    keep = ~(of_withheld & _before_test(data, split))
    info = {
        "protocol": "items",
        "seed": int(spec.seed),
        "frac": float(spec.frac),
        "withheld_videos": int(withheld.sum()),
        "videos": int(data.existing_items().sum()),
        "removed_events": int((~keep).sum()),
    }
    users = np.zeros(data.num_users + 1, dtype=bool)
    return ColdStartSelection(spec=spec, keep=keep, test_targets=of_withheld, items=withheld, users=users,
                              info=info)  # fmt: skip


def _select_users(data: PreparedData, split: str, spec: ColdStart) -> ColdStartSelection:
    last, counts = last_training_events(data, split, spec.user_events)
    made = made_cold_users(data, spec.frac, spec.seed)
    present = np.bincount(data.events["user"].to_numpy(), minlength=data.num_users + 1) > 0
    natural = (counts <= spec.user_events) & present  # users with an event (index 0 is padding)
    cold = made | natural
    of_cold = cold[data.events["user"].to_numpy()]
    keep = ~(of_cold & _before_test(data, split) & ~last)
    info = {
        "protocol": "users",
        "seed": int(spec.seed),
        "frac": float(spec.frac),
        "user_events": int(spec.user_events),
        "cold_users": int(cold.sum()),
        "made_cold": int((made & ~natural).sum()),
        "naturally_cold": int(natural.sum()),
        "users": int(data.num_users),
        "removed_events": int((~keep).sum()),
    }
    items = np.zeros(data.num_items + 1, dtype=bool)
    return ColdStartSelection(spec=spec, keep=keep, test_targets=of_cold, items=items, users=cold, info=info)


def cold_start_of(config: Any) -> ColdStart | None:
    """The :class:`ColdStart` of a configuration holding ``cold_start``, ``cold_start_frac``,
    ``cold_user_events`` and ``cold_start_seed`` (``TrainConfig``, ``EvalConfig``); None under ``none``."""
    spec = ColdStart(
        protocol=config.cold_start,
        frac=config.cold_start_frac,
        user_events=config.cold_user_events,
        seed=config.cold_start_seed,
    )
    return spec if spec.active else None
