"""What of a joint-operation candidate every reader may be shown: its score only with every count.

A candidate's score weighs its records per country (their total and the second largest over the
largest, see :func:`routes.overlap.joint_operation_candidates`), so with one count withheld (under
k: stored as null in ``joint_operations``/``joint_sectors``, shown as the text ``<k``) the score
could be solved for that count. ``base_score`` and ``score`` therefore go to a reader only when
every count of the candidate is shown, whoever the reader is. This module is the one definition
of that rule, in the two forms its readers need: :data:`JOINT_COUNTS_SHOWN_SQL` inside queries
over a stored candidate (the API's ``joint-operations`` collection, where CQL2 filters on it) and
:func:`withhold_scores` over candidates read back by
:func:`routes.overlap_store.read_joint_operations` (``rutas export joint-operations`` and
``GET /exports/joint-operations``). Both test the same thing: a count stored as null.
"""

from __future__ import annotations

from collections.abc import Mapping

import geopandas as gpd

#: Whether every stored count of candidate ``p`` is shown (none stored as null, i.e. under k).
JOINT_COUNTS_SHOWN_SQL = (
    "NOT EXISTS (SELECT 1 FROM jsonb_each(p.records_by_country) j WHERE jsonb_typeof(j.value) = 'null')"
)


def counts_shown(records_by_country: Mapping[str, object]) -> bool:
    """Whether every count is shown: none was withheld (read back as the text ``<k``, or None).

    ``records_by_country`` maps ISO3 codes to records, as
    :func:`routes.overlap_store.read_joint_operations` gives it.
    """
    return not any(n is None or isinstance(n, str) for n in records_by_country.values())


def withhold_scores(candidates: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``candidates`` with ``score`` null (NaN) where a count is withheld, and ``score_suppressed``.

    ``candidates``: columns of :data:`routes.overlap.JOINT_COLUMNS` (EPSG:4326), counts under k
    as ``<k``. The other columns are returned unchanged.
    """
    shown = candidates["records_by_country"].map(counts_shown).astype(bool)
    score = candidates["score"].astype(float).where(shown)
    return candidates.assign(score=score, score_suppressed=~shown)
