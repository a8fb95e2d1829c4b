"""The HTML report of a ``reproduce`` directory: every figure, headline numbers, every check."""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rlvrlab.experiments.registry import get
from rlvrlab.io import atomic_write_text, read_json

__all__ = ["write_report"]

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.pass { color: #176317; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
.claim-yes { color: #176317; } .claim-no { color: #a05a00; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.muted { color: #777; font-size: 0.85em; }
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) for x in v):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return html.escape(str(v))


def _flatten(prefix: str, v: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), x)
    elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        for i, x in enumerate(v):
            yield from _flatten(f"{prefix}[{i}]", x)
    else:
        yield prefix, v


def _checks_table(checks: list[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        if c["kind"] == "theorem":
            verdict = '<span class="pass">PASS</span>' if c["passed"] else '<span class="fail">FAIL</span>'
        else:
            verdict = '<span class="claim-yes">seen</span>' if c["passed"] else '<span class="claim-no">not seen</span>'
        rows.append(f"<tr><td>{verdict}</td><td>{html.escape(c['kind'])}</td><td>{html.escape(c['name'])}</td>"
                    f"<td>{html.escape(c['measured'])}</td><td>{html.escape(c['expected'])}</td></tr>")
    return ("<table><tr><th></th><th>kind</th><th>check</th><th>measured</th><th>expected</th></tr>"
            + "".join(rows) + "</table>")


def write_report(out: str | Path, names: list[str]) -> Path:
    """Write out/report.html from out/<name>/summary.json for each experiment name."""
    out = Path(out)
    overview, sections = [], []
    for name in names:
        summary = read_json(out / name / "summary.json")
        exp = get(name)
        theorems = [c for c in summary["checks"] if c["kind"] == "theorem"]
        claims = [c for c in summary["checks"] if c["kind"] == "claim"]
        ok = sum(c["passed"] for c in theorems)
        seen = sum(c["passed"] for c in claims)
        status = "pass" if ok == len(theorems) else "fail"
        overview.append(f'<tr><td><a href="#{name}">{name}</a></td><td>{html.escape(exp.title)}</td>'
                        f'<td class="{status}">{ok}/{len(theorems)}</td><td>{seen}/{len(claims)}</td>'
                        f'<td>{summary["seconds"]:.1f}</td></tr>')
        figures = "".join(f'<img src="{name}/{html.escape(f)}" alt="{html.escape(f)}">' for f in summary["figures"])
        numbers = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in _flatten("", summary["headline"]))
        sections.append(
            f'<h2 id="{name}">{html.escape(exp.title)}</h2><p>{html.escape(exp.description)}</p>{figures}'
            f"<h3>Checks</h3>{_checks_table(summary['checks'])}"
            f"<h3>Headline numbers</h3><table>{numbers}</table>"
            f'<p class="muted">run directory: {html.escape(name)}/ (config.json, summary.json, '
            f'{", ".join(html.escape(t) for t in summary["tables"])}); {"quick settings" if summary["quick"] else "full settings"}; '
            f'{summary["seconds"]:.1f} s</p>'
        )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>rlvrlab report</title><style>{STYLE}</style></head><body>"
        "<h1>rlvrlab: the Gradient-Gap theory of RLVR, reproduced</h1>"
        f'<p class="muted">Generated {stamp}. "theorem" checks are statements of the paper whose premises hold on the '
        'instance and must pass; "claim" checks are what the paper reports seeing, and ours is reported either way.</p>'
        "<table><tr><th>experiment</th><th>what</th><th>theorem checks</th><th>claims seen</th><th>seconds</th></tr>"
        + "".join(overview) + "</table>" + "".join(sections) + "</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
