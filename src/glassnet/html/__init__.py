"""glassnet as HTML: explain pages, model pages and run reports; self-contained, no script.

Every page is one file that opens from disk: formulas are MathML, pictures inline SVG or
PNG data URIs, and nothing is fetched. Names that come from data are escaped.
"""

from glassnet.html.explain_page import explain_page
from glassnet.html.model_page import ModelExplanation, explain_model, summary_table
from glassnet.html.page import write_html
from glassnet.html.report import RunReport, run_report, write_report

__all__ = [
    "ModelExplanation",
    "RunReport",
    "explain_model",
    "explain_page",
    "run_report",
    "summary_table",
    "write_html",
    "write_report",
]
