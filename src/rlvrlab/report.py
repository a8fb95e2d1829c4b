"""The HTML report of a ``reproduce`` directory: the claims ledger, then per experiment its
figures, checks and headline numbers as tables with units. Also writes the ledger as claims.md.

One self-contained page (inline CSS; figures are the run directories' PNGs, linked relatively).
"""

from __future__ import annotations

import datetime
import html
import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlvrlab.claims import PAPERS, LedgerRow, ledger, ledger_markdown, short_measured
from rlvrlab.experiments.registry import get
from rlvrlab.io import atomic_write_text, read_json

__all__ = ["headline_html", "ledger_html", "unit_of", "write_report"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.paper th { background: #e8eef6; }
.pass { color: #176317; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.claim-yes { color: #176317; } .claim-no { color: #a05a00; } .claim-na { color: #777; }
.v-reproduced { color: #176317; font-weight: bold; } .v-differs, .v-not-seen { color: #a05a00; font-weight: bold; }
.v-contradicted { color: #b00020; font-weight: bold; } .v-not-tested, .v-not-enough-data { color: #777; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.muted { color: #777; font-size: 0.85em; }
"""

# --- units and numbers -----------------------------------------------------------------------

# A headline key's unit, from its name: (pattern, unit, scale). The first match wins; fractions
# are shown as percentages. Keys not listed are dimensionless (J, accuracy, slopes, ratios, eta).
UNITS: tuple[tuple[str, str, float], ...] = (
    (r"seconds|_s$", "s", 1.0),
    (r"fraction|share|(^|_)rate$|reached_target|runs_with_|plateaus_below", "%", 100.0),
    (r"(^|_)steps?(_|$)", "steps", 1.0),
    (r"length|max_new_tokens", "tokens", 1.0),
    (r"entropy", "nats", 1.0),
)


def unit_of(key: str) -> tuple[str, float]:
    """(unit, scale) for a headline key; ("", 1) when it is dimensionless."""
    for pattern, unit, scale in UNITS:
        if re.search(pattern, key):
            return unit, scale
    return "", 1.0


def _as_number(v: Any) -> Any:
    """JSON writes infinities as "inf"/"-inf" and NaN as null (rlvrlab.io): read them back as floats."""
    if v is None:
        return math.nan
    if v in ("inf", "-inf"):
        return float(v)
    return v


def _num(v: Any, scale: float = 1.0) -> str:
    v = _as_number(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and scale == 1.0:
        return str(v)
    if isinstance(v, (int, float)):
        x = v * scale
        if math.isnan(x):
            return "n/a"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if scale == 100.0:  # a percentage: one decimal is enough
            return f"{x:.1f}".removesuffix(".0")
        if x == int(x) and abs(x) < 1e6:
            return str(int(x))
        return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.3g}"
    return str(v)


MISSING = object()  # a key one row of a table lacks (null in JSON is NaN, shown as n/a)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _cell(v: Any, scale: float = 1.0) -> str:
    """One table cell: numbers right-aligned; lists inline; a nested dict as key: value pairs."""
    if v is MISSING or (isinstance(v, (list, Mapping)) and not v):
        return "<td>—</td>"
    v = _as_number(v) if _scalar(v) else v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{html.escape(_num(v, scale))}</td>'
    if isinstance(v, list):
        if all(isinstance(_as_number(x), (int, float)) for x in v):
            return "<td>[" + ", ".join(html.escape(_num(x, scale)) for x in v) + "]</td>"
        return "<td>" + "; ".join(html.escape(str(x)) for x in v) + "</td>"
    if isinstance(v, Mapping):
        return "<td>" + ", ".join(f"{html.escape(str(k))}: {html.escape(_num(x) if _scalar(x) else str(x))}"
                                  for k, x in v.items()) + "</td>"
    return f"<td>{html.escape(_num(v, scale))}</td>"


def _header(key: str) -> str:
    unit, _ = unit_of(key)
    suffix = f" ({html.escape(unit)})" if unit and unit != key else ""
    return f"<th>{html.escape(key)}{suffix}</th>"


# --- headline numbers --------------------------------------------------------------------------


def _table(columns: list[str], rows: list[list[Any]], labels: list[str] | None = None, caption: str = "") -> str:
    """Columns named by key, each with its unit. Labelled rows whose label has a unit
    (stalled_fraction) give every cell of the row that unit instead."""
    head = ("<th></th>" if labels is not None else "") + "".join(_header(c) for c in columns)
    body = []
    for i, r in enumerate(rows):
        row_unit, row_scale = unit_of(labels[i]) if labels is not None else ("", 1.0)
        first = _header(labels[i]) if labels is not None else ""
        cells = "".join(_cell(v, row_scale if row_unit else unit_of(c)[1]) for c, v in zip(columns, r))
        body.append(f"<tr>{first}{cells}</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<tr>{head}</tr>{''.join(body)}</table>"


def _keys(dicts: list[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(k for d in dicts for k in d))


def _alike(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two dicts that read best as rows of one table: they share at least half their keys."""
    return len(a.keys() & b.keys()) >= 0.5 * len(a.keys() | b.keys())


def headline_html(headline: Mapping[str, Any]) -> str:
    """Headline numbers as tables with units: the scalars as one key/value table; a list of runs
    (dicts) with one row per run; lists of numbers of one length side by side, one row per index
    (etas, J_final, …); a dict of dicts with one row per entry; dicts of numbers with alike keys
    (one per run or per model) as the rows of one table."""
    scalars = {k: v for k, v in headline.items() if _scalar(v) or (isinstance(v, (list, Mapping)) and not v)}
    lists = {k: v for k, v in headline.items() if isinstance(v, list) and v and all(_scalar(x) for x in v)}
    dicts = {k: v for k, v in headline.items() if isinstance(v, Mapping) and v
             and not all(isinstance(x, Mapping) for x in v.values())}
    tables, done = [], set()
    for key, v in headline.items():
        if key in scalars or key in done:
            continue
        if key in lists:
            side = [k for k, x in lists.items() if len(x) == len(v)]
            if len(side) > 1 and len(v) > 1:  # parallel lists: one row per index
                tables.append(_table(side, [[lists[k][i] for k in side] for i in range(len(v))]))
                done.update(side)
            else:
                scalars[key] = v
        elif isinstance(v, list) and all(isinstance(x, Mapping) for x in v):
            cols = _keys(v)
            tables.append(_table(cols, [[x.get(c, MISSING) for c in cols] for x in v], caption=key))
        elif key in dicts:
            group = [k for k in dicts if k not in done and _alike(dicts[k], v)]
            cols = _keys([dicts[k] for k in group])
            tables.append(_table(cols, [[dicts[k].get(c, MISSING) for c in cols] for k in group], labels=group))
            done.update(group)
        elif isinstance(v, Mapping):
            cols = _keys(list(v.values()))
            tables.append(_table(cols, [[x.get(c, MISSING) for c in cols] for x in v.values()], labels=list(v), caption=key))
        else:
            scalars[key] = v
    kv = ""
    if scalars:
        rows = []
        for k, v in headline.items():
            if k in scalars:
                unit, scale = unit_of(k)
                rows.append(f"<tr><th>{html.escape(k)}</th>{_cell(v, scale)}<td>{html.escape(unit)}</td></tr>")
        kv = "<table><tr><th>key</th><th>value</th><th>unit</th></tr>" + "".join(rows) + "</table>"
    return kv + "".join(tables)


# --- checks and the ledger -----------------------------------------------------------------------


def _checks_table(checks: list[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        if c["kind"] == "theorem":
            verdict = '<span class="pass">PASS</span>' if c["passed"] else '<span class="fail">FAIL</span>'
        else:
            verdict = '<span class="claim-yes">seen</span>' if c["passed"] else '<span class="claim-no">not seen</span>'
            if not c.get("enough", True):
                verdict = '<span class="claim-na">not enough data</span>'
        rows.append(f"<tr><td>{verdict}</td><td>{html.escape(c['kind'])}</td><td>{html.escape(c['name'])}</td>"
                    f"<td>{html.escape(c['measured'])}</td><td>{html.escape(c['expected'])}</td></tr>")
    return ("<table><tr><th></th><th>kind</th><th>check</th><th>measured</th><th>expected</th></tr>"
            + "".join(rows) + "</table>")


def ledger_html(rows: list[LedgerRow]) -> str:
    """The ledger: one row per claim (id ``claim-<id>``), grouped by paper, with links to the runs."""
    counts = Counter(r.verdict for r in rows)
    tally = ", ".join(f"{n} {v}" for v, n in counts.most_common())
    out = [f'<p>{len(rows)} claims of the three papers: {html.escape(tally)}. The verdicts are derived from this run\'s '
           'checks; the rows without a run say why rlvrlab does not test them (yet).</p>',
           "<table><tr><th>claim</th><th>where</th><th>verdict</th><th>why</th><th>measured</th><th>run</th></tr>"]
    paper = None
    for r in rows:
        if r.claim.paper != paper:
            paper = r.claim.paper
            out.append(f'<tr class="paper"><th colspan="6">{html.escape(PAPERS[paper])}</th></tr>')
        runs = ", ".join(f'<a href="#{html.escape(e)}">{html.escape(e)}</a>' for e in r.experiments)
        css = "v-" + r.verdict.replace(" ", "-")
        out.append(f'<tr id="claim-{html.escape(r.claim.id)}"><td>{html.escape(r.claim.claim)}</td>'
                   f"<td>{html.escape(r.claim.where)}</td><td class=\"{css}\">{html.escape(r.verdict)}</td>"
                   f"<td>{html.escape(r.why)}</td><td>{html.escape(short_measured(r))}</td><td>{runs}</td></tr>")
    return "".join(out) + "</table>"


def _claims_md(rows: list[LedgerRow], summaries: Mapping[str, Mapping[str, Any]]) -> str:
    quick = {bool(s["quick"]) for s in summaries.values()}
    settings = {frozenset({True}): "quick settings", frozenset({False}): "full settings"}.get(frozenset(quick), "mixed settings")
    counts = Counter(r.verdict for r in rows)
    return (f"## Claims ledger\n\nFrom `rlvrlab reproduce` ({settings}, {len(summaries)} experiments): "
            + ", ".join(f"{n} {v}" for v, n in counts.most_common())
            + ". Verdicts come from the run's checks; the run links point into report.html.\n\n" + ledger_markdown(rows))


# --- the page ------------------------------------------------------------------------------------


def write_report(out: str | Path, names: list[str]) -> Path:
    """Write out/report.html and out/claims.md from out/<name>/summary.json for each experiment name."""
    out = Path(out)
    summaries = {name: read_json(out / name / "summary.json") for name in names}
    rows = ledger(summaries)
    overview, sections = [], []
    for name, summary in summaries.items():
        exp = get(name)
        theorems = [c for c in summary["checks"] if c["kind"] == "theorem"]
        claims = [c for c in summary["checks"] if c["kind"] == "claim"]
        ok = sum(c["passed"] for c in theorems)
        seen = sum(c["passed"] for c in claims)
        status = "pass" if ok == len(theorems) else "fail"
        overview.append(f'<tr><td><a href="#{name}">{name}</a></td><td>{html.escape(exp.title)}</td>'
                        f'<td class="{status}">{ok}/{len(theorems)}</td><td>{seen}/{len(claims)}</td>'
                        f'<td class="num">{summary["seconds"]:.1f}</td></tr>')
        figures = "".join(f'<img src="{name}/{html.escape(f)}" alt="{html.escape(f)}">' for f in summary["figures"])
        sections.append(
            f'<h2 id="{name}">{html.escape(exp.title)}</h2><p>{html.escape(exp.description)}</p>{figures}'
            f"<h3>Checks</h3>{_checks_table(summary['checks'])}"
            f"<h3>Headline numbers</h3>{headline_html(summary['headline'])}"
            f'<p class="muted">run directory: {html.escape(name)}/ (config.json, summary.json, '
            f'{", ".join(html.escape(t) for t in summary["tables"])}); {"quick settings" if summary["quick"] else "full settings"}; '
            f'{summary["seconds"]:.1f} s</p>'
        )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>rlvrlab report</title><style>{STYLE}</style></head><body>"
        "<h1>rlvrlab: the Gradient-Gap theory of RLVR, reproduced</h1>"
        f'<p class="muted">Generated {stamp}. "theorem" checks are statements of the paper whose premises hold on the '
        'instance and must pass; "claim" checks are what the paper reports seeing, and ours is reported either way. '
        'The ledger is also in claims.md beside this page.</p>'
        f'<h2 id="ledger">Claims ledger</h2>{ledger_html(rows)}'
        '<h2 id="experiments">Experiments</h2>'
        "<table><tr><th>experiment</th><th>what</th><th>theorem checks</th><th>claims seen</th><th>seconds</th></tr>"
        + "".join(overview) + "</table>" + "".join(sections) + "</body></html>"
    )
    atomic_write_text(out / "claims.md", _claims_md(rows, summaries))
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
