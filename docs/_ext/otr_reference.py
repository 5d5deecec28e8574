"""Reference pages generated from the code at build time, so they cannot drift.

* ``reference/config.md``: every key of the typed config (:mod:`otreweight.config`) with its type,
  default and one line of meaning, read from the field's ``doc`` metadata or its ``#`` comment;
* ``reference/cli.md``: every command and flag of the argparse parser (:func:`otreweight.cli.build_parser`);
* ``reference/registries.md``: every registered method, model, data source and modality with its
  options, the meaning of each read from the numpydoc ``Parameters`` section of its docstring.

:func:`missing_meanings` lists every key or option without a line of meaning (a test fails on it).
Run as a script (``python docs/_ext/otr_reference.py OUT_DIR``) or as a Sphinx extension (writes the
pages into ``docs/reference/`` when the build starts).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from pathlib import Path

# Options every factory of a kind receives from the run, not from the user's ``options``: one
# meaning each, said once on the page.
RUN_FILLED = {
    "model": {
        "num_classes": "number of classes K, from the data",
        "in_features": "input width of a vector model, from the data",
        "in_channels": "image channels, from the data",
        "in_dims": "coordinates per point (2 or 3, 6 with normals), from the data",
        "vocab_size": "vocabulary size, from the tokens modality",
        "pad_id": "padding token id, from the tokens modality",
    },
    "data source": {
        "root": "the folder or file of the data (`data.root`, or `data.source` when it is a path)",
        "download": "whether a missing archive may be downloaded (`data.download`)",
        "cache_dir": "where decoded arrays are cached (`data.cache_dir`)",
    },
    "method": {},
    "modality": {},
}


# ----------------------------------------------------------------------------- numpydoc parameters
def numpydoc_params(doc: str | None) -> dict[str, str]:
    """``{name: first sentence of its description}`` from a numpydoc ``Parameters`` section (an entry
    ``a, b : type`` gives both names its text); names written as ``name`` in a description of another
    entry get the sentence that mentions them."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    out: dict[str, str] = {}
    mentions: dict[str, str] = {}
    try:
        start = next(i for i, l in enumerate(lines[:-1]) if l.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return {}
    i = start + 2
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"} and not line.startswith(" "):
            break  # the next section
        if line and not line.startswith(" ") and line.strip():
            names = [n.strip().strip("*") for n in line.split(":")[0].split(",")]
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i].strip())
                i += 1
            text = " ".join(b for b in body if b)
            first = _first_sentence(text)
            for n in names:
                if n:
                    out[n] = first
            for sentence in re.split(r"(?<=[.;])\s+", text):
                for m in re.findall(r"``(\w+)``", sentence):
                    mentions.setdefault(m, sentence.strip())
            continue
        i += 1
    for name, sentence in mentions.items():
        out.setdefault(name, sentence)
    return out


def _first_sentence(text: str) -> str:
    text = text.strip()
    m = re.match(r"(.+?[.;])(\s|$)", text)
    return (m.group(1) if m else text).rstrip(";").strip()


# ----------------------------------------------------------------------------- config keys
def field_docs(cls) -> dict[str, str]:
    """``{field: its attribute docstring}`` (the string literal right after the field) from the class source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    out = {}
    for a, b in zip(body, body[1:]):
        if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
            out[a.target.id] = " ".join(b.value.value.split())
    return out


def field_comments(cls) -> dict[str, str]:
    """``{field: its attribute docstring, its trailing # comment, or the comment lines just above it}``."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    lines = src.splitlines()
    for n, line in enumerate(lines):
        s = line.strip()
        if s.startswith("#"):
            above.append(s.lstrip("# ").strip())
            continue
        m = re.match(r"(\w+)\s*:\s*[^=]+(=|$)", s)
        if m and not s.startswith(("def ", "class ", "return", "@")) and line.startswith("    ") and not line.startswith("        "):
            comment = [t.string for t in toks if t.type == tokenize.COMMENT and t.start[0] == n + 1]
            text = comment[0].lstrip("# ").strip() if comment else " ".join(above)
            if text:
                out[m.group(1)] = text
        if not s.startswith("#"):
            above = []
    out.update(field_docs(cls))
    return out


def _type_text(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_text(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is tuple:
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin is list:
        return f"list of {getattr(args[0], '__name__', args[0])}" if args else "list"
    if origin is dict or hint is dict:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _default_text(f) -> str:
    if f.default is not dataclasses.MISSING:
        v = f.default
    elif f.default_factory is not dataclasses.MISSING:
        v = f.default_factory()
        if dataclasses.is_dataclass(v):
            return "(section)"
    else:
        return "(required)"
    if isinstance(v, bool) or v is None:
        return {True: "true", False: "false", None: "null"}[v]
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    if isinstance(v, dict):
        return "{}"
    return str(v)


def config_rows() -> list[tuple[str, str, str, str, str]]:
    """``(section, key, type, default, meaning)`` of every YAML key of the run config."""
    from otreweight import config as C

    rows = []
    sections = [("", C.RunConfig), ("data", C.DataConfig), ("model", C.ModelConfig), ("stage1", C.Stage1Config),
                ("stage2[i]", C.Stage2Config)]
    for prefix, cls in sections:
        hints = typing.get_type_hints(cls)
        comments = {}
        for base in reversed(cls.__mro__):  # a subclass's comment wins over its base's
            if dataclasses.is_dataclass(base):
                comments.update(field_comments(base))
        for f in C.yaml_fields(cls):
            if dataclasses.is_dataclass(hints[f.name]) or f.name == "stage2":
                continue
            meaning = f.metadata.get("doc") or comments.get(f.name, "")
            key = f"{prefix}.{f.name}" if prefix else f.name
            rows.append((prefix or "run", key, _type_text(hints[f.name]), _default_text(f), meaning))
    return rows


def config_page() -> str:
    from otreweight import config as C

    out = ["# Config keys", "",
           "Generated from the typed config (`otreweight/config/`) when the documentation is built: every key "
           "of a run's YAML file, its type, its default and what it does. Set any of them on the command line "
           "with `--set KEY=VALUE` (values read as YAML; `stage2.*.epochs=5` sets every stage-2 variant, "
           "`stage2.0.options.eps=0.05` one). A shipped config changes some defaults (`otreweight train --config "
           "NAME --print-config` prints the resolved config).", ""]
    recipe = ", ".join(f"`{k}`" for k in C.recipe_keys())
    current = None
    for section, key, typ, default, meaning in config_rows():
        if section != current:
            current = section
            title = {"run": "The run", "data": "`data`: source, split and inputs", "model": "`model`",
                     "stage1": "`stage1`: plain cross-entropy", "stage2[i]": "`stage2`: a list of variants"}[section]
            out += ["", f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        out.append(f"| `{key}` | {_cell(typ)} | `{_cell(default)}` | {_cell(meaning)} |")
    out += ["", f"The stage keys {recipe} are a method's *recipe*: `compare` copies them from one variant to "
            "another, and `--resume` refuses a checkpoint that disagrees with them.", ""]
    return "\n".join(out)


def _cell(text) -> str:
    return _rst_to_md(str(text)).replace("|", "\\|").replace("\n", " ")


def _rst_to_md(text: str) -> str:
    """reST roles and literals of docstrings as Markdown: ``:class:`~a.B``` -> `B`, ``x`` -> `x`."""
    text = re.sub(r":(?:class|func|meth|mod|attr|data|obj):`~?([^`]+)`", lambda m: "`" + m.group(1).split(".")[-1] + "`", text)
    text = re.sub(r":math:`([^`]+)`", r"`\1`", text)
    return re.sub(r"``([^`]+)``", r"`\1`", text)


# ----------------------------------------------------------------------------- command line
def cli_page() -> str:
    from otreweight.cli import build_parser

    parser = build_parser()
    out = ["# Command line", "",
           "Generated from the argparse parser (`otreweight/cli.py`) when the documentation is built. "
           "`otreweight <command> --help` prints the same.", "", "```text",
           parser.format_usage().strip(), "```", ""]
    out += _actions_table(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        out += ["", f"## `otreweight {name}`", "", _md_text(p.description or helps.get(name, "")), "",
                "```text", p.format_usage().strip(), "```", ""]
        out += _actions_table(p)
    return "\n".join(out) + "\n"


def _md_text(text: str) -> str:
    return text.replace("*", "\\*")


def cli_rows():
    """``(command, flags, meaning)`` of every argument of every command (``""`` = the top level)."""
    from otreweight.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = [("", a) for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    for name, p in sub.choices.items():
        rows += [(name, a) for a in p._actions]
    return [(cmd, ", ".join(a.option_strings) or a.dest, a.help or "") for cmd, a in rows]


def _actions_table(parser) -> list[str]:
    out = ["| argument | default | meaning |", "|---|---|---|"]
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            continue
        flags = ", ".join(a.option_strings) or a.dest
        if a.metavar and a.option_strings:
            flags += f" {a.metavar}"
        elif a.choices and a.option_strings:
            flags += " {" + ",".join(map(str, a.choices)) + "}"
        default = "" if a.default in (None, argparse.SUPPRESS, False, []) else (
            ",".join(map(str, a.default)) if isinstance(a.default, tuple) else str(a.default))
        out.append(f"| `{_cell(flags)}` | {('`' + _cell(default) + '`') if default else ''} | {_cell(_md_text(a.help or ''))} |")
    return out


# ----------------------------------------------------------------------------- registries
def _registries():
    from otreweight.data.modalities import MODALITIES
    from otreweight.data.sources import SOURCES
    from otreweight.methods import METHODS
    from otreweight.models import MODELS

    return [("method", METHODS), ("model", MODELS), ("data source", SOURCES), ("modality", MODALITIES)]


def _factory_options(kind: str, name: str, factory) -> list[tuple[str, str, str]]:
    """``(option, default, meaning)`` of a registered factory; the OT method's re-weighter options included."""
    from otreweight.reweighter import OTReweighter

    target = factory.__init__ if inspect.isclass(factory) else factory
    if inspect.isclass(factory) and factory.__init__ is object.__init__:
        return []  # no options
    params = [p for p in inspect.signature(target).parameters.values()
              if p.name != "self" and p.kind not in (p.VAR_POSITIONAL,)]
    docs = {}
    for obj in (factory, target):
        docs.update({k: v for k, v in numpydoc_params(inspect.getdoc(obj)).items() if k not in docs})
    rows = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            if name == "ot" and kind == "method":  # the re-weighter's options
                rdocs = numpydoc_params(OTReweighter.__doc__)
                for q in inspect.signature(OTReweighter.__init__).parameters.values():
                    if q.name in ("self", "train_labels", "num_classes"):
                        continue
                    rows.append((q.name, _param_default(q), rdocs.get(q.name, "")))
            else:
                rows.append((f"**{p.name}", "", docs.get(p.name, "")))
            continue
        if p.name in RUN_FILLED.get(kind, {}):
            continue
        rows.append((p.name, _param_default(p), docs.get(p.name, "")))
    return rows


def _param_default(p) -> str:
    if p.default is inspect.Parameter.empty:
        return "(required)"
    return {True: "true", False: "false", None: "null"}.get(p.default, repr(p.default)) if isinstance(
        p.default, (bool, type(None))) else repr(p.default)


def _summary(factory) -> str:
    """The first sentence of the factory's own docstring, else of its module's."""
    doc = factory.__doc__ or ""
    if not doc.strip():
        doc = getattr(inspect.getmodule(factory), "__doc__", None) or ""
    doc = inspect.cleandoc(doc)
    para = doc.split("\n\n")[0].replace("\n", " ").strip()
    return _first_sentence(para) if para else ""


def registry_rows(package_only: bool = False):
    """``(kind, name, summary, [(option, default, meaning)])`` of every registered entry and prefix family
    (``package_only``: those otreweight itself registers, not a test's or a user's)."""
    rows = []
    for kind, reg in _registries():
        for name in reg.names():
            f = reg[name]
            if package_only and not str(getattr(f, "__module__", "")).startswith("otreweight"):
                continue
            rows.append((kind, name, _summary(f), _factory_options(kind, name, f)))
        for prefix in reg.prefixes():
            factory, argument = reg._prefixes[prefix]
            opts = [o for o in _factory_options(kind, prefix, factory) if o[0] != argument]
            rows.append((kind, f"{prefix}<{argument}>", _summary(factory), opts))
    return rows


def registries_page() -> str:
    titles = {"method": "Methods (`stage2[i].method`, `compare --methods`)",
              "model": "Models (`model.name`, options in `model.options`)",
              "data source": "Data sources (`data.source`, options in `data.source_options`)",
              "modality": "Modalities (options in `data.modality_options`)"}
    out = ["# Methods, models, data sources and modalities", "",
           "Generated from the registries (`otreweight/registry.py`: `METHODS`, `MODELS`, `SOURCES`, "
           "`MODALITIES`) when the documentation is built: every registered name and the options it "
           "accepts, with the meaning from its docstring. A name registered by your own code appears "
           "the same way (see [extending](../../extending.md)).", ""]
    current = None
    for kind, name, summary, options in registry_rows():
        if kind != current:
            current = kind
            out += ["", f"## {titles[kind]}", ""]
            filled = RUN_FILLED.get(kind) or {}
            if filled:
                out += ["Set by the run, never in the options: " + "; ".join(
                    f"`{k}` ({v})" for k, v in filled.items()) + ".", ""]
        out += [f"### `{name}`", "", _rst_to_md(_md_text(summary)) or "", ""]
        if options:
            out += ["| option | default | meaning |", "|---|---|---|"]
            out += [f"| `{o}` | `{_cell(d)}` | {_cell(m)} |" for o, d, m in options]
        else:
            out.append("No options.")
        out.append("")
    from otreweight.methods.ot_reweight import OT_VARIANTS

    out += ["## Named OT variants", "",
            "Method names that `compare` and `demo` accept: `ot` with these options changed "
            "(`otreweight/methods/ot_reweight.py`, `OT_VARIANTS`).", "",
            "| name | options on top of `ot` |", "|---|---|"]
    for name, opts in OT_VARIANTS.items():
        out.append(f"| `{name}` | {_cell(', '.join(f'`{k}={v}`' for k, v in opts.items()))} |")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- checks and output
def missing_meanings(package_only: bool = True) -> list[str]:
    """Every config key, CLI argument, summary or registry option without a line of meaning
    (``package_only``: registry entries of otreweight itself, not those a test or a user adds)."""
    missing = [f"config key {key}" for _, key, _, _, meaning in config_rows() if not meaning.strip()]
    missing += [f"CLI {cmd or 'otreweight'} {flags}" for cmd, flags, meaning in cli_rows()
                if not meaning.strip() and flags not in ("-h, --help",)]
    for kind, name, summary, options in registry_rows(package_only):
        if not summary:
            missing.append(f"{kind} {name}: no docstring summary")
        missing += [f"{kind} {name} option {o}" for o, _, m in options if not m.strip()]
    return missing


PAGES = {"config.md": config_page, "cli.md": cli_page, "registries.md": registries_page}


def write_pages(folder) -> list[Path]:
    """Write the generated pages into ``folder`` (only when their text changed: no rebuild otherwise)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in PAGES.items():
        path, text = folder / name, make()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    return written


def setup(app):
    """Sphinx: write ``reference/*.md`` beside the sources before they are read."""
    def generate(app):
        write_pages(Path(app.srcdir) / "reference" / "generated")

    app.connect("builder-inited", generate)
    return {"parallel_read_safe": True, "version": "1"}


if __name__ == "__main__":
    import sys

    for p in write_pages(sys.argv[1] if len(sys.argv) > 1 else "docs/reference/generated"):
        print(p)
    gaps = missing_meanings()
    print("\n".join(gaps) or "every key and option has a line of meaning")


class GalleryOrder:
    """sphinx-gallery ``within_subsection_order``: the digits demo first, then by kind of data."""

    ORDER = ("plot_digits_demo.py", "plot_cifar10_lt_compare.py", "plot_text_tsv.py", "plot_mnist_points.py",
             "plot_sklearn_tfidf.py", "sklearn_imbalanced.py")

    def __init__(self, src_dir) -> None:
        self.src_dir = src_dir

    def __call__(self, filename) -> tuple:
        name = Path(filename).name
        return (self.ORDER.index(name) if name in self.ORDER else len(self.ORDER), name)

    def __repr__(self) -> str:
        return "GalleryOrder"
