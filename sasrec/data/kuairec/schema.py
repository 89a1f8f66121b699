"""KuaiRec 2.0 file schemas: names, columns, pyarrow types and official row counts (Gao et al., CIKM 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

INTERACTION_FILES = ("big_matrix.csv", "small_matrix.csv")
INTERACTION_COLUMNS = [
    "user_id",
    "video_id",
    "play_duration",
    "video_duration",
    "time",
    "date",
    "timestamp",
    "watch_ratio",
]
#: Folders below a data directory where the official files may sit (the archive unpacks to the last one).
SEARCH_SUBDIRS: tuple[tuple[str, ...], ...] = ((), ("data",), ("KuaiRec 2.0", "data"))
#: The timezone of KuaiRec's ``time`` and ``date`` columns.
LOCAL_TIMEZONE = "Asia/Shanghai"
#: Bump when the cached table layout changes, so that old caches are rebuilt.
CACHE_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class FileSchema:
    """Schema of one official KuaiRec file.

    Attributes:
        name: file name inside ``KuaiRec 2.0/data/``.
        columns: (column, pyarrow type used to parse the CSV) in the official order.
        expected_rows: official number of data rows (header excluded).
        rows_exact: whether ``expected_rows`` is the published count (False: an approximate count).
        id_columns: integer ids that may not be missing or negative.
        non_negative: numeric columns that may not be negative (missing values allowed unless required).
        required: columns that may not be missing.
        finite: float columns that must be finite (neither NaN, missing nor infinite).
        int_lists: string columns holding a list literal of non-negative integers such as ``[27, 9]``.
        multiline: quoted fields may hold newlines (line numbers in messages become data-row numbers).
        description: one line for ``validate``'s output.
    """

    name: str
    columns: tuple[tuple[str, pa.DataType], ...]
    expected_rows: int | None
    rows_exact: bool = True
    id_columns: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    finite: tuple[str, ...] = ()
    int_lists: tuple[str, ...] = ()
    multiline: bool = False
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        """Column names in the official order."""
        return [name for name, _ in self.columns]

    @property
    def column_types(self) -> dict[str, pa.DataType]:
        """Mapping column -> pyarrow parse type."""
        return dict(self.columns)


_INTERACTION_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("user_id", pa.int64()),
    ("video_id", pa.int64()),
    ("play_duration", pa.int64()),
    ("video_duration", pa.int64()),
    ("time", pa.string()),
    ("date", pa.float64()),
    ("timestamp", pa.float64()),
    ("watch_ratio", pa.float64()),
)


def _interaction_schema(name: str, rows: int, what: str) -> FileSchema:
    return FileSchema(
        name=name,
        columns=_INTERACTION_TYPES,
        expected_rows=rows,
        id_columns=("user_id", "video_id"),
        non_negative=("play_duration", "video_duration"),
        required=("play_duration", "video_duration", "watch_ratio"),
        finite=("watch_ratio",),
        description=what,
    )


_USER_RANGE_COLUMNS = (
    "user_active_degree",
    "follow_user_num_range",
    "fans_user_num_range",
    "friend_user_num_range",
    "register_days_range",
)
_USER_FEATURE_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("user_id", pa.int64()),
    ("user_active_degree", pa.string()),
    ("is_lowactive_period", pa.int64()),
    ("is_live_streamer", pa.int64()),
    ("is_video_author", pa.int64()),
    ("follow_user_num", pa.int64()),
    ("follow_user_num_range", pa.string()),
    ("fans_user_num", pa.int64()),
    ("fans_user_num_range", pa.string()),
    ("friend_user_num", pa.int64()),
    ("friend_user_num_range", pa.string()),
    ("register_days", pa.int64()),
    ("register_days_range", pa.string()),
    *((f"onehot_feat{i}", pa.int64()) for i in range(18)),
)

_CAPTION_TYPES: tuple[tuple[str, pa.DataType], ...] = (
    ("video_id", pa.int64()),
    ("manual_cover_text", pa.string()),
    ("caption", pa.string()),
    ("topic_tag", pa.string()),
    ("first_level_category_id", pa.int64()),
    ("first_level_category_name", pa.string()),
    ("second_level_category_id", pa.int64()),
    ("second_level_category_name", pa.string()),
    ("third_level_category_id", pa.int64()),
    ("third_level_category_name", pa.string()),
)

_DAILY_STRING_COLUMNS = ("video_type", "upload_dt", "upload_type", "visible_status", "video_tag_name")
_DAILY_COLUMNS = (
    "video_id date author_id video_type upload_dt upload_type visible_status video_duration video_width "
    "video_height music_id video_tag_id video_tag_name show_cnt show_user_num play_cnt play_user_num "
    "play_duration complete_play_cnt complete_play_user_num valid_play_cnt valid_play_user_num "
    "long_time_play_cnt long_time_play_user_num short_time_play_cnt short_time_play_user_num play_progress "
    "comment_stay_duration like_cnt like_user_num click_like_cnt double_click_cnt cancel_like_cnt "
    "cancel_like_user_num comment_cnt comment_user_num direct_comment_cnt reply_comment_cnt "
    "delete_comment_cnt delete_comment_user_num comment_like_cnt comment_like_user_num follow_cnt "
    "follow_user_num cancel_follow_cnt cancel_follow_user_num share_cnt share_user_num download_cnt "
    "download_user_num report_cnt report_user_num reduce_similar_cnt reduce_similar_user_num collect_cnt "
    "collect_user_num cancel_collect_cnt cancel_collect_user_num"
).split()
_DAILY_TYPES: tuple[tuple[str, pa.DataType], ...] = tuple(
    (
        name,
        pa.int64()
        if name in ("video_id", "date", "author_id")
        else pa.string()
        if name in _DAILY_STRING_COLUMNS
        else pa.float64(),
    )
    for name in _DAILY_COLUMNS
)

#: Every official file of the KuaiRec 2.0 archive (row counts from the dataset's release; see KUAIREC.md).
OFFICIAL_FILES: dict[str, FileSchema] = {
    schema.name: schema
    for schema in (
        _interaction_schema(
            "big_matrix.csv", 12_530_806, "training interactions (7,176 users, 10,728 videos)"
        ),
        _interaction_schema(
            "small_matrix.csv", 4_676_570, "fully observed matrix (1,411 users, 3,327 videos)"
        ),
        FileSchema(
            name="item_categories.csv",
            columns=(("video_id", pa.int64()), ("feat", pa.string())),
            expected_rows=10_728,
            id_columns=("video_id",),
            required=("feat",),
            int_lists=("feat",),
            description="tags of each video (31 tags, 1-4 per video)",
        ),
        FileSchema(
            name="user_features.csv",
            columns=_USER_FEATURE_TYPES,
            expected_rows=7_176,
            id_columns=("user_id",),
            non_negative=(
                "is_lowactive_period",
                "is_live_streamer",
                "is_video_author",
                "follow_user_num",
                "fans_user_num",
                "friend_user_num",
                "register_days",
                *(f"onehot_feat{i}" for i in range(18)),
            ),
            required=(
                "is_lowactive_period",
                "is_live_streamer",
                "is_video_author",
                "follow_user_num",
                "fans_user_num",
                "friend_user_num",
                "register_days",
                *_USER_RANGE_COLUMNS,
            ),
            description="user profile features (31 columns)",
        ),
        FileSchema(
            name="kuairec_caption_category.csv",
            columns=_CAPTION_TYPES,
            expected_rows=10_728,
            id_columns=("video_id",),
            multiline=True,
            description="captions and category hierarchy of each video",
        ),
        FileSchema(
            name="item_daily_features.csv",
            columns=_DAILY_TYPES,
            # Not among the counts KUAIREC.md lists (one row per video and day): a mismatch never fails.
            expected_rows=343_341,
            rows_exact=False,
            id_columns=("video_id", "date", "author_id"),
            description="daily statistics of each video",
        ),
        FileSchema(
            name="social_network.csv",
            columns=(("user_id", pa.int64()), ("friend_list", pa.string())),
            expected_rows=472,
            id_columns=("user_id",),
            required=("friend_list",),
            int_lists=("friend_list",),
            description="friend lists of the users who have friends",
        ),
    )
}
