"""KuaiRec-shaped simulator: the study's embedded default data.

Writes files with the official names, columns, units and text formats of KuaiRec 2.0 (Gao et al.,
"KuaiRec: A Fully-Observed Dataset and Insights for Evaluating Recommender Systems", CIKM 2022): a sparse
``big_matrix.csv`` for training and a ~99.6%-dense ``small_matrix.csv`` for evaluation, ``item_categories.csv``
and ``user_features.csv``, plus two files the real archive lacks: ``ground_truth.parquet`` (the simulator's
expected watch_ratio of every small-matrix pair, for oracle upper bounds) and ``simulation.json``.

The generative process (sizes and marginals calibrated on the published figures of KuaiRec 2.0: Gao et al., CIKM 2022,
its README and statistics notebook, and public audits of the files; the targets are :data:`REAL_CALIBRATION`):

* Videos carry 1-4 of 31 tags, a duration, a quality and a long-tailed popularity. Videos of the same
  primary tag are laid out in *chains*; each video's likely successors are the next 1-3 videos of its chain,
  the same for every user (a first-order transition structure that a sequence model can learn).
* Users have tastes over the tags (two Dirichlet draws; the history drifts from the first to the second),
  a bias, and a liking for each chain (a series effect).
* ``big_matrix``: each user's history is a run of sessions; a session picks a tag from the user's current
  taste (or, for a share of sessions, from the overall tag mix), starts at a popularity-weighted video of
  that tag and walks along its chain; a user returning to a chain resumes where they left it, and past its
  end goes on in the next chain of the tag. A share of views are one-off trending videos (long tail).
  Small-matrix users walk only chains of videos outside the small matrix, so no small pair appears in
  the big matrix. Repeat views, exact duplicate rows and dates a day off the timestamp are added.
* ``small_matrix``: every small user sees (almost) every small video; the order visits short segments of
  the small videos' chains, segments of a tag clustered in time, so the order carries the same transitions.
* Side files (:class:`SideFileParams`, a random stream of their own, so the files above do not change):
  ``kuairec_caption_category.csv`` (captions mixing tokens of per-tag vocabularies with filler tokens and
  hashtags, categories derived from the main tag) and ``item_daily_features.csv`` (one row per video and
  day of the big matrix's span from the upload day; counters from the big matrix's rows of that day), and
  ``side_ground_truth.json``, how much signal each side file carries (user_features.csv included).
* watch_ratio = Q(rho * x + sqrt(1 - rho^2) * eps): x is the rank-normalised user-video signal (taste . tags,
  quality, chain liking, user bias, shorter videos watched longer), eps standard normal noise, Q a
  monotone map calibrated per matrix to the real watch_ratio quantiles (heavy upper tail included).

Everything is vectorised with numpy (no loop over users or rows) and deterministic under the seed: the
same seed and scale give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sasrec.data import kuairec

#: Bump when the generated data change for a given seed and scale.
GENERATOR_VERSION = "1"
#: The scale of the embedded default data (1.0 reproduces the real sizes: ~12.5M big-matrix rows).
DEFAULT_SCALE: float = 0.2
MIN_SCALE, MAX_SCALE = 0.005, 2.0

REAL_USERS, REAL_VIDEOS = 7_176, 10_728
REAL_SMALL_USERS, REAL_SMALL_VIDEOS = 1_411, 3_327
N_TAGS = 31
#: How often each tag occurs in the real item_categories.csv (a marginal, used as the tag prior).
TAG_FREQUENCY = np.array(
    [24, 463, 216, 104, 164, 964, 912, 503, 1112, 696, 170, 2027, 534, 245, 63, 374]
    + [214, 350, 131, 686, 265, 29, 22, 39, 12, 468, 490, 31, 1360, 5, 22],
    dtype=np.float64,
)
#: Share of videos with 1, 2, 3 and 4 tags in the real item_categories.csv.
TAGS_PER_VIDEO_SHARE = np.array([8970, 1562, 185, 11], dtype=np.float64) / REAL_VIDEOS

_LOCAL_OFFSET_MS = 8 * 3600 * 1000  # Asia/Shanghai is UTC+8 without daylight saving since 1991
_DAY_MS = 86_400_000
BIG_SPAN = ("2020-06-23", "2020-09-10")  # inclusive local days
SMALL_SPAN = ("2020-07-04", "2020-09-05")

#: Real per-user big-matrix interaction counts at scale 1 (KUAIREC.md).
REAL_BIG_USER_COUNTS = {"mean": 1746, "median": 1846, "min": 100, "max": 16015}

#: watch_ratio calibration knots per matrix: (standard normal quantile z, watch_ratio). Between knots
#: log(watch_ratio) is linear in z; above the last knot it continues with the last slope (heavy tail).
#: Knots put the real shares at the right quantiles: P(< 0.5), the median, P(>= 1), P(> 2), P(> 5).
RATIO_KNOTS: dict[str, tuple[tuple[float, float], ...]] = {
    "big_matrix": (
        (-5.0, 0.004),
        (-1.645, 0.06),
        (-1.036, 0.12),
        (-0.674, 0.27),
        (-0.361, 0.5),
        (0.0, 0.716),
        (0.418, 1.0),
        (0.842, 1.3),
        (1.442, 2.0),
        (2.366, 5.0),
        (3.09, 12.0),
        (3.719, 30.0),
        (4.753, 150.0),
    ),
    "small_matrix": (
        (-5.0, 0.005),
        (-1.645, 0.08),
        (-1.036, 0.18),
        (-0.604, 0.5),
        (0.0, 0.766),
        (0.456, 1.0),
        (0.9, 1.3),
        (1.681, 2.0),
        (2.576, 5.0),
        (3.29, 14.0),
        (4.265, 60.0),
        (4.753, 150.0),
    ),
}

#: The real watch_ratio statistics (KUAIREC.md, audit): shares and the median of rows <= 5.
REAL_CALIBRATION: dict[str, dict[str, float]] = {
    "big_matrix": {
        "share_gt_2": 0.0747,
        "share_ge_1": 0.338,
        "share_lt_0.5": 0.359,
        "median_le_5": 0.716,
        "share_gt_5": 0.009,
    },
    "small_matrix": {
        "share_gt_2": 0.0464,
        "share_ge_1": 0.324,
        "share_lt_0.5": 0.273,
        "median_le_5": 0.766,
        "share_gt_5": 0.005,
    },
}

INTERACTION_COLUMNS = tuple(kuairec.INTERACTION_COLUMNS)
GROUND_TRUTH_FILE = "ground_truth.parquet"
METADATA_FILE = "simulation.json"


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of the generative process (recorded in ``simulation.json``).

    Attributes:
        taste_concentration: total Dirichlet concentration of a user's taste over the 31 tags (low: peaked).
        taste_drift: probability weight of the second taste at the end of a history (0: no drift).
        mean_chain_length: mean number of videos per chain (videos of one primary tag in a fixed order).
        mean_session_length: mean number of views per big-matrix session (geometric).
        step_probabilities: probabilities of moving 0 (an immediate repeat view), 1, 2 or 3 places along
            the chain between consecutive views of a session.
        exploration: share of big-matrix sessions whose tag follows the overall tag frequencies (the
            feed's exploration) instead of the user's taste.
        trending_share: share of big-matrix views (not session starts) that are one-off views of a video
            drawn from the whole catalogue by popularity ** trending_power (the feed's trending videos).
        trending_power: exponent sharpening the popularity of trending picks.
        popularity_sigma: log-normal spread of the video popularity weights (long tail).
        chain_popularity_sigma: log-normal spread of a popularity factor shared by a chain's videos.
        popularity_quality_corr: correlation of log popularity with quality.
        weight_taste, weight_quality, weight_chain, weight_user, weight_duration: weights of the
            standardised signal components (taste . tags, quality, user x chain liking, user bias, -log
            duration).
        signal_correlation: rho, the correlation of the latent watch_ratio score with the signal.
        small_segment_length: views per segment of a chain in the small matrix's order.
        small_segment_time_sd: spread of a tag's segments around the tag's time in a small-matrix history.
        small_local_noise: swaps of neighbours inside a small-matrix segment (sd, in chain places).
        blocked_share: share of small-matrix pairs missing (videos of authors the user blocked).
        mean_author_videos: videos per author.
        untimed_share: share of small-matrix rows without time, date and timestamp.
        duplicate_share: share of big-matrix rows written twice (exact duplicates).
        date_mismatch_share: share of big-matrix rows whose date is a day off the timestamp's local day.
        mean_gap_seconds: mean pause between consecutive views of a session.
    """

    taste_concentration: float = 6.0
    taste_drift: float = 0.6
    mean_chain_length: int = 24
    mean_session_length: float = 8.0
    step_probabilities: tuple[float, float, float, float] = (0.03, 0.77, 0.14, 0.06)
    exploration: float = 0.4
    trending_share: float = 0.1
    trending_power: float = 1.8
    popularity_sigma: float = 1.3
    chain_popularity_sigma: float = 1.0
    popularity_quality_corr: float = 0.5
    weight_taste: float = 0.8
    weight_quality: float = 1.0
    weight_chain: float = 1.0
    weight_user: float = 0.5
    weight_duration: float = 0.3
    signal_correlation: float = 0.8
    small_segment_length: int = 6
    small_segment_time_sd: float = 0.05
    small_local_noise: float = 0.6
    blocked_share: float = 0.0038
    mean_author_videos: float = 12.0
    untimed_share: float = 0.0389
    duplicate_share: float = 0.07
    date_mismatch_share: float = 0.00124
    mean_gap_seconds: float = 3.0


# ------------------------------------------------------------------------------------------ side files
#: The two official side files the simulator also writes, and the ground truth of their signal.
CAPTION_FILE = "kuairec_caption_category.csv"
DAILY_FILE = "item_daily_features.csv"
SIDE_GROUND_TRUTH_FILE = "side_ground_truth.json"
#: Bump when the side files change for a given seed and scale (the other files follow GENERATOR_VERSION).
SIDE_FILES_VERSION = "1"
#: Entropy key of the side files' random streams: SeedSequence([seed, 0x5A5EC, SIDE_STREAM_KEY]) is
#: independent of the streams of the matrices (SeedSequence([seed, 0x5A5EC]).spawn(8)), so writing the
#: side files moves no draw of the other files.
SIDE_STREAM_KEY = 0x51DE


@dataclass(frozen=True)
class SideFileParams:
    """Parameters of the simulated caption and daily-statistics files (recorded in ``simulation.json``).

    Real shares (in brackets) are measured on the real kuairec_caption_category.csv (KUAIREC.md).

    Attributes:
        tag_characters: CJK characters reserved for each of the 31 tags (pools are disjoint).
        tag_vocabulary: tokens (2-4 characters of the tag's pool) in each tag's vocabulary.
        filler_characters, filler_vocabulary: the shared pool and vocabulary of filler tokens.
        generic_hashtags: platform-wide hashtags (4-8 filler characters), such as "thanks for trending".
        mean_caption_words: mean tokens per caption (1 + Poisson, at most 12).
        own_word_share, other_word_share: shares of caption tokens drawn from the video's own tags and from
            a random tag's vocabulary (the rest are filler tokens).
        hashtag_share: share of captions with hashtags (real: 65% of captions hold a '#').
        own_hashtag_share: share of hashtags from the video's own tags (the rest are generic hashtags).
        caption_missing_share: empty captions (real 12.6%).
        cover_unknown_share: manual_cover_text "UNKNOWN" (real 62%).
        comma_share, newline_share, quote_share, carriage_return_share: captions holding an ASCII comma,
            a newline, ASCII double quotes, or a bare carriage return (at least one of each per file).
        first_level_noise: share of videos whose first-level category is not their main tag's.
        first_unknown_share: first-level category -124 (real 0.4%; every level is then unknown).
        second_per_first, third_per_second: mean children per category (real 39 / 138 / 220 values).
        second_unknown_share: second level -124 (real 33%); third_unknown_share: third level -124 among
            videos whose second level is known (real 45%).
        daily_play_scale: platform plays per simulated view: play_cnt of a video and day is this factor
            times its big-matrix rows dated that day (duplicates included).
        fresh_upload_share: share of videos uploaded 0-3 days before their first view (the others: on
            average mean_upload_age_days before it, often before the big matrix's span).
        mean_upload_age_days: mean age at first view of the other videos.
        like_intercept, like_slope, like_video_sd: like probability of a view, expit(a + b log(watch_ratio
            + 0.05) + sd z) with z a standard normal per video (its likability beyond the watch_ratio).
        author_tag_noise: share of videos whose author is not one specialised in the video's main tag.
        video_tag_noise, video_tag_unknown_share: video_tag of a random tag, or -124 "UNKNOWN".
    """

    tag_characters: int = 24
    tag_vocabulary: int = 40
    filler_characters: int = 160
    filler_vocabulary: int = 120
    generic_hashtags: int = 12
    mean_caption_words: float = 5.0
    own_word_share: float = 0.6
    other_word_share: float = 0.05
    hashtag_share: float = 0.6
    own_hashtag_share: float = 0.55
    caption_missing_share: float = 0.126
    cover_unknown_share: float = 0.62
    comma_share: float = 0.03
    newline_share: float = 0.01
    quote_share: float = 0.005
    carriage_return_share: float = 0.0005
    first_level_noise: float = 0.15
    first_unknown_share: float = 0.004
    second_per_first: float = 3.6
    third_per_second: float = 1.6
    second_unknown_share: float = 0.33
    third_unknown_share: float = 0.45
    daily_play_scale: int = 10
    fresh_upload_share: float = 0.35
    mean_upload_age_days: float = 40.0
    like_intercept: float = -4.0
    like_slope: float = 1.5
    like_video_sd: float = 0.6
    author_tag_noise: float = 0.1
    video_tag_noise: float = 0.1
    video_tag_unknown_share: float = 0.08
