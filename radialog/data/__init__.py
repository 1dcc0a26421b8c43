"""Training data: the manifest format and adapters that build it from MIMIC-CXR and IU X-ray."""

from radialog.data.iu import iter_iu_records, iu_split
from radialog.data.manifest import (
    SPLITS,
    ManifestRecord,
    check_labels,
    read_manifest,
    record_from_dict,
    write_manifest,
)
from radialog.data.mimic import iter_mimic_records, read_chexpert_labels
from radialog.data.sections import ReportSections, parse_report, split_sections

__all__ = [
    "SPLITS",
    "ManifestRecord",
    "ReportSections",
    "check_labels",
    "iter_iu_records",
    "iter_mimic_records",
    "iu_split",
    "parse_report",
    "read_chexpert_labels",
    "read_manifest",
    "record_from_dict",
    "split_sections",
    "write_manifest",
]
