"""KuaiRec 2.0 files (Gao et al., CIKM 2022): schemas, validated readers, cache, cleaning, validation, download.

The public names of the submodules are re-exported here: ``from sasrec.data import kuairec`` then
``kuairec.load_interactions(path)``.
"""

from __future__ import annotations

from sasrec.data.kuairec.cache import (
    CacheEntry,
    cache_entries,
    default_cache_dir,
    prune_cache,
    read_interactions,
)
from sasrec.data.kuairec.cleaning import (
    CleaningReport,
    clean_interactions,
    count_repeats,
    exact_duplicates,
    load_interactions,
)
from sasrec.data.kuairec.readers import (
    SIDE_READERS,
    check_header,
    count_csv_rows,
    find_file,
    has_official_matrices,
    read_captions,
    read_item_categories,
    read_item_daily_features,
    read_social_network,
    read_user_features,
    read_validated_table,
    source_fingerprint,
)
from sasrec.data.kuairec.schema import (
    CACHE_FORMAT_VERSION,
    INTERACTION_COLUMNS,
    INTERACTION_FILES,
    LOCAL_TIMEZONE,
    OFFICIAL_FILES,
    SEARCH_SUBDIRS,
    FileSchema,
)
from sasrec.data.kuairec.validation import FileCheck, ValidationSummary, validate_directory

__all__ = [
    "INTERACTION_FILES",
    "INTERACTION_COLUMNS",
    "SEARCH_SUBDIRS",
    "LOCAL_TIMEZONE",
    "CACHE_FORMAT_VERSION",
    "FileSchema",
    "OFFICIAL_FILES",
    "find_file",
    "has_official_matrices",
    "source_fingerprint",
    "check_header",
    "count_csv_rows",
    "read_validated_table",
    "read_item_categories",
    "read_social_network",
    "read_user_features",
    "read_captions",
    "read_item_daily_features",
    "SIDE_READERS",
    "default_cache_dir",
    "read_interactions",
    "CacheEntry",
    "cache_entries",
    "prune_cache",
    "CleaningReport",
    "exact_duplicates",
    "count_repeats",
    "clean_interactions",
    "load_interactions",
    "FileCheck",
    "ValidationSummary",
    "validate_directory",
]
