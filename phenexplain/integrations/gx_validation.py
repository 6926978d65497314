"""great-expectations 1.x suites over an ingest's QC table and crop manifest.

`GXValidator` implements `phenexplain.data.ingest.Validator`: an ephemeral GX context (no files
outside the crop set, no progress bars), three suites (readable fields, per-condition counts, crop
manifest) whose failures are raised as one `StructureError` naming the offending files, a
warning-only suite on the saturated pixels of each condition's crops, and the Data Docs built into
the crop set's report folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from phenexplain.config import IngestParams
from phenexplain.data.ingest import IngestSummary, ingest
from phenexplain.data.readers import StructureError

SITE = "phenexplain"
SHOWN = 5  # offending rows named per failed expectation


def _context(docs_dir: Path):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        data_docs_sites={
            SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _describe(result, what: str) -> list[str]:
    """One line per failed expectation, naming the offending rows."""
    lines = []
    for r in result.results:
        if r.success:
            continue
        detail = r.result or {}
        rows = detail.get("unexpected_index_list") or []
        named = []
        for row in rows[:SHOWN]:
            named.append(", ".join(f"{k}={v}" for k, v in row.items()))
        more = f" (+{len(rows) - SHOWN} more)" if len(rows) > SHOWN else ""
        meta = (r.expectation_config.meta or {}).get("explain") or r.expectation_config.type
        found = (
            f": {'; '.join(named)}{more}"
            if named
            else f" (observed {detail.get('observed_value')})"
        )
        lines.append(f"{what}: {meta}{found}")
    return lines


class GXValidator:
    """Great-expectations checks for `phenexplain.data.ingest.ingest`."""

    def __init__(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="phenexplain-gx-"))
        self._context = _context(self._tmp / "docs")
        self._source = self._context.data_sources.add_pandas("ingest")

    def _run(self, name: str, frame: pd.DataFrame, expectations: list, index: list[str]):
        import great_expectations as gx

        batch = self._source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(
            name
        )
        suite = self._context.suites.add(
            gx.ExpectationSuite(name=f"{name}", expectations=expectations)
        )
        definition = self._context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{name}-validation", data=batch, suite=suite)
        )
        return definition.run(
            batch_parameters={"dataframe": frame.reset_index(drop=True)},
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index},
        )

    def check_fields(self, qc: pd.DataFrame, params: IngestParams) -> None:
        """Structural checks of the QC table; raises `StructureError` listing every failure."""
        import great_expectations.expectations as gxe

        readable = qc[qc["height"].notna()].copy()
        for col in ("height", "width"):
            readable[col] = readable[col].astype(int)
        lines = []
        if readable.empty:
            raise StructureError("no field could be read; see the quarantine reasons")
        size_expectations = [
            gxe.ExpectColumnValuesToBeUnique(
                column="field_id", meta={"explain": "duplicate field ids"}
            ),
            gxe.ExpectColumnValuesToNotBeNull(
                column="condition", meta={"explain": "fields without a condition"}
            ),
        ]
        for col in ("height", "width", "dtype"):
            usual = readable[col].mode().iloc[0]
            size_expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column=col,
                    value_set=[usual.item() if hasattr(usual, "item") else usual],
                    meta={"explain": f"inconsistent image {col} (most fields: {usual})"},
                )
            )
        if params.conditions:
            size_expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column="condition",
                    value_set=list(params.conditions),
                    meta={"explain": f"unknown condition (ingest.conditions: {params.conditions})"},
                )
            )
        fields = self._run("fields", readable, size_expectations, ["files"])
        lines += _describe(fields, "fields")

        expected = sorted(set(params.conditions) | set(qc["condition"].dropna()))
        ok = qc[qc["status"] == "ok"]
        counts = ok.groupby("condition").size().reindex(expected, fill_value=0)
        counts = counts.rename("usable_fields").reset_index()
        minimum = params.min_images_per_condition
        too_few = (
            f"conditions with fewer than {minimum} usable images (ingest.min_images_per_condition)"
        )
        count_result = self._run(
            "condition_counts",
            counts,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="usable_fields",
                    min_value=minimum,
                    meta={"explain": too_few},
                )
            ],
            ["condition"],
        )
        lines += _describe(count_result, "conditions")
        if lines:
            raise StructureError("ingest stopped by the data checks:\n  " + "\n  ".join(lines))

    def check_crops(self, manifest: pd.DataFrame, params: IngestParams) -> None:
        import great_expectations.expectations as gxe

        columns = [
            "crop_id",
            "shard",
            "index",
            "field_id",
            "plate",
            "condition",
            "y",
            "x",
            "checksum",
        ]
        expectations: list[gxe.Expectation] = [gxe.ExpectColumnToExist(column=c) for c in columns]
        expectations += [
            gxe.ExpectColumnValuesToBeUnique(
                column="crop_id", meta={"explain": "duplicate crop ids"}
            ),
            gxe.ExpectColumnValuesToNotBeNull(
                column="checksum", meta={"explain": "crops without checksum"}
            ),
            gxe.ExpectColumnValuesToMatchRegex(
                column="checksum", regex="^[0-9a-f]{64}$", meta={"explain": "malformed checksums"}
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="index", min_value=0, meta={"explain": "negative shard index"}
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="y", min_value=0, meta={"explain": "centroid above the field"}
            ),
            gxe.ExpectColumnValuesToBeBetween(
                column="x", min_value=0, meta={"explain": "centroid left of the field"}
            ),
        ]
        if params.conditions:
            expectations.append(
                gxe.ExpectColumnValuesToBeInSet(
                    column="condition",
                    value_set=list(params.conditions),
                    meta={"explain": "unknown condition"},
                )
            )
        lines = _describe(self._run("crop_manifest", manifest, expectations, ["crop_id"]), "crops")
        if lines:
            raise StructureError("crop manifest failed its checks:\n  " + "\n  ".join(lines))

    def check_saturation(self, saturation: pd.DataFrame, params: IngestParams) -> None:
        """A warning-severity expectation on the saturated percent per condition and channel
        (`phenexplain.data.saturation.saturation_table` rows): it shows in the Data Docs, and the
        ingest goes on (the core logs the same warning)."""
        import great_expectations.expectations as gxe
        from great_expectations.expectations.metadata_types import FailureSeverity

        if saturation.empty:
            return
        limit = params.qc.crop_saturation_percent
        explain = (
            f"conditions whose crops have more than {limit:g}% saturated pixels (255) in a "
            "channel: the 8-bit scaling clips their phenotype (ingest.qc.crop_saturation_percent, "
            "ingest.percentiles)"
        )
        self._run(
            "crop_saturation",
            saturation,
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="saturated_percent",
                    min_value=0,
                    max_value=limit,
                    severity=FailureSeverity.WARNING,
                    meta={"explain": explain},
                )
            ],
            ["condition", "channel"],
        )

    def write_docs(self, folder: Path) -> None:
        """Build the Data Docs of every suite run so far into `folder` (replacing it)."""
        self._context.build_data_docs(site_names=[SITE])
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self._tmp / "docs", folder)

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)


def ingest_with_expectations(source, out, params, **kwargs) -> IngestSummary:
    """`phenexplain.data.ingest.ingest` with the great-expectations checks and Data Docs (in the
    crop set's ``report/``), as the CLI, the flows and the inbox run it."""

    validator = GXValidator()
    try:
        return ingest(source, out, params, validator=validator, **kwargs)
    finally:
        validator.close()
