"""Reports of runs: ``report.md`` with PNG figures and a self-contained ``report.html``."""

from cltune.reports.document import Report
from cltune.reports.report import FORMATS, build_report, write_report
from cltune.reports.tables import comparison_table, paired_table

__all__ = ["FORMATS", "Report", "build_report", "comparison_table", "paired_table", "write_report"]
