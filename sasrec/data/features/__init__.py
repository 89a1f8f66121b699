"""Side features of a prepared dataset: KuaiRec's side files aligned on its internal item and user ids.

* :mod:`~sasrec.data.features.table`: :class:`FeatureTable` / :class:`FeatureGroup` (arrays, schema, digest);
* :mod:`~sasrec.data.features.build`: :func:`build_feature_table` (missing files -> unavailable groups) and
  :func:`feature_cut` (the cut that keeps evaluation days out of the daily aggregates);
* one module per group: :mod:`tags` (item_categories.csv), :mod:`categories` (category levels and topic
  tags) and :mod:`caption` (text vectors) from kuairec_caption_category.csv, :mod:`item_daily`
  (item_daily_features.csv) and :mod:`users` (user_features.csv);
* :mod:`~sasrec.data.features.storage`: :func:`save_feature_table` / :func:`load_feature_table` (atomic,
  sealed, checked on read);
* :mod:`~sasrec.data.features.cache`: the table of a prepared dataset and split, cached next to it and rebuilt
  when the data or a side file changes.
"""

from sasrec.data.features.build import GROUP_SOURCES, GROUPS, build_feature_table, cut_date_of, feature_cut
from sasrec.data.features.storage import load_feature_table, save_feature_table
from sasrec.data.features.table import FEATURE_FORMAT_VERSION, FeatureGroup, FeatureTable

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "GROUPS",
    "GROUP_SOURCES",
    "FeatureGroup",
    "FeatureTable",
    "build_feature_table",
    "cut_date_of",
    "feature_cut",
    "load_feature_table",
    "save_feature_table",
]
