"""Mean ± std over seeds of stage results, and the tables they are shown in.

Every stage of a run writes one result (``final.json``: ``best`` / ``last`` test metrics, ``best_epoch``,
``seconds``, ``seconds_per_epoch``, ``val_best``, optional ``method_stats`` / ``score_change``); a
study over seeds is a list of ``{stage: result}`` (what :func:`otreweight.experiment.run_experiment`
returns per seed). :func:`summarize` turns it into rows of ``<key>_mean`` / ``<key>_std`` (metrics
in percent, population std as NumPy's default), and :func:`format_table` / :func:`to_csv` render
rows for the terminal, Markdown or CSV. The demo, ``compare`` and the benchmarks all use these.
"""
from __future__ import annotations

import csv
import io

import numpy as np

# The test metrics of a run (otreweight.metrics), in table order: the one list the tables, the
# comparison, the run report and ``otreweight evaluate`` show.
METRICS = ("accuracy", "balanced_accuracy", "many", "medium", "few", "gmean")


def mean_std(values) -> tuple[float | None, float | None]:
    """``(mean, std)`` of the values that are not ``None`` (``(None, None)`` if there are none)."""
    vals = [float(v) for v in values if v is not None]
    return (float(np.mean(vals)), float(np.std(vals))) if vals else (None, None)


def summarize(runs: list[dict], stages: dict[str, str] | None = None, which: str = "best",
              metrics=METRICS) -> list[dict]:
    """One row per stage over seeds.

    Parameters
    ----------
    runs : list of ``{stage: result}``
        One mapping per seed.
    stages : ``{row name: stage}``, optional
        Rows in order; default every stage of the first run under its own name.
    which : ``"best"`` (validation-selected epoch) or ``"last"``
    """
    stages = stages or {s: s for s in runs[0]}
    rows = []
    for label, stage in stages.items():
        res = [r[stage] for r in runs if stage in r]
        row = {"method": label, "seeds": len(res)}
        for key in metrics:
            vals = [None if r[which].get(key) is None else 100.0 * r[which][key] for r in res]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(vals)
        row["seconds_mean"], row["seconds_std"] = mean_std([r.get("seconds") for r in res])
        rows.append(row)
    return rows


def cell(row: dict, key: str, digits: int | None = 1) -> str:
    """``"m ± s"`` of ``row[key_mean]`` / ``row[key_std]``; ``digits=None``: whole seconds once many."""
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if m is None:
        return "-"
    if digits is None:
        digits = 0 if m >= 100 else (1 if m >= 1 else 2)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


DEFAULT_COLUMNS = (("acc", "accuracy"), ("bal.acc", "balanced_accuracy"), ("many", "many"), ("medium", "medium"),
                   ("few", "few"), ("gmean", "gmean"), ("seconds", "seconds"))


def format_table(rows: list[dict], columns=DEFAULT_COLUMNS, markdown: bool = False, first: str = "method") -> str:
    """Rows as a plain-text (aligned) or Markdown table of ``mean ± std`` cells."""
    header = [first] + [h for h, _ in columns]
    body = [[str(r["method"])] + [cell(r, k) for _, k in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]

    def fmt(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def to_csv(rows: list[dict], keys: list[str]) -> str:
    """Rows as CSV with the columns ``keys`` (missing values empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


__all__ = ["METRICS", "cell", "format_table", "mean_std", "summarize", "to_csv"]
