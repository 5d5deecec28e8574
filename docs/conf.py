"""Sphinx configuration of the otreweight documentation (``make docs``; ``make docs-check`` without the gallery).

Pages are Markdown (MyST). The reference pages under ``reference/generated/`` are written from the
code when the build starts (``_ext/otr_reference.py``); the gallery (``auto_examples/``) is built by
sphinx-gallery from ``../examples/``, executed unless ``OTREWEIGHT_DOCS_GALLERY=0``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE / "_ext"))

import otreweight  # noqa: E402

project = "otreweight"
author = "The otreweight contributors"
copyright = "2026, The otreweight contributors"
release = otreweight.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "otr_reference",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.md5", "auto_examples/*.codeobj.json", "sg_execution_times.rst"]
templates_path = []

# MyST: $...$ maths, anchors for headings down to level 3 (links such as benchmarks.md#text)
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: numpydoc docstrings, members in source order, no per-member class tables
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False
autosummary_generate = False

gallery = os.environ.get("OTREWEIGHT_DOCS_GALLERY", "1") != "0"
if not gallery:  # the quick check of `make test`: no highlighted source pages either
    extensions.remove("sphinx.ext.viewcode")
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(HERE / "auto_examples"),
    "filename_pattern": r"/plot_",  # run the plot_*.py examples (sklearn_imbalanced.py is shown, not run)
    "ignore_pattern": r"__init__\.py",
    "plot_gallery": "True" if gallery else "False",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "otr_reference.GalleryOrder",
    "min_reported_time": 1,
    "write_computation_times": gallery,
    "show_memory": False,
    "abort_on_example_error": True,
}

html_theme = "pydata_sphinx_theme"
html_title = f"otreweight {release}"
html_static_path = ["_static"]
html_css_files = ["otreweight.css"]
html_theme_options = {
    "navigation_depth": 2,
    "show_toc_level": 2,
    "navbar_align": "left",
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": [], "getting_started": [], "changelog": [],
                 "results": [], "benchmarks": [], "reproducing": []}  # wide tables: no section sidebar
html_show_sourcelink = False

# Warnings are errors (-W); these are not about the pages' content.
suppress_warnings = ["myst.header"]


def _skip_metadata_requests(app, what, name, obj, skip, options):
    """scikit-learn's generated ``set_*_request`` methods: their docstrings point into sklearn's own docs."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_requests)
