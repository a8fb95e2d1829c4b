"""The report: the claims ledger (its verdicts, its references to real check names) and the
headline numbers as tables with units."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from html.parser import HTMLParser

import pytest

from rlvrlab.claims import CLAIMS, HOLE, PAPERS, VERDICTS, Claim, Ref, ledger, name_regex, row
from rlvrlab.experiments import get, names, run_experiment
from rlvrlab.report import headline_html, unit_of, write_report


def check(name: str, passed: bool = True, kind: str = "theorem", measured: str = "m", enough: bool = True) -> dict:
    return {"name": name, "passed": passed, "measured": measured, "expected": "e", "kind": kind, "enough": enough}


def summary(*checks: dict, headline: dict | None = None) -> dict:
    return {"checks": list(checks), "headline": headline or {}, "seconds": 1.0, "figures": [], "tables": ["metrics.parquet"],
            "quick": True}


THM = Claim("t", "gap", "Theorem 9", "A theorem.", (Ref("exp", "Theorem 9: J above {}"),), on_fail="differs")
OBS = Claim("o", "gap", "Figure 9", "A figure.", (Ref("exp", "Figure 9 at T={}"),))


# --- verdicts ------------------------------------------------------------------------------------


def test_passed_theorem_is_reproduced_with_its_measurement():
    r = row(THM, {"exp": summary(check("Theorem 9: J above the bound", measured="12 of 12 held"))})
    assert (r.verdict, r.why, r.measured, r.experiments) == ("reproduced", "the check passed", ("12 of 12 held",), ("exp",))


def test_failed_theorem_is_contradicted():
    r = row(THM, {"exp": summary(check("Theorem 9: J above the bound", passed=False, measured="11 of 12 held"))})
    assert r.verdict == "contradicted" and "0 of 1 passed" in r.why and r.measured == ("11 of 12 held",)


def test_failed_claim_is_not_seen_or_the_claims_own_word():
    failed = {"exp": summary(check("Figure 9 at T=4", passed=False, kind="claim"))}
    assert row(OBS, failed).verdict == "not seen"
    quantitative = Claim("q", "gap", "eq. 9", "A slope.", OBS.refs, on_fail="differs")
    assert row(quantitative, failed).verdict == "differs"


def test_some_claim_checks_passing_is_differs_and_the_failures_come_first():
    r = row(OBS, {"exp": summary(check("Figure 9 at T=2", kind="claim", measured="fine"),
                                 check("Figure 9 at T=4", passed=False, kind="claim", measured="off"))})
    assert (r.verdict, r.why) == ("differs", "1 of 2 checks passed")
    assert r.measured == ("off", "fine")


def test_checks_that_lacked_data_are_not_enough_data_whichever_way_they_came_out():
    for passed in (True, False):
        r = row(OBS, {"exp": summary(check("Figure 9 at T=4", passed=passed, kind="claim", measured="CI 1.7 wide", enough=False))})
        assert (r.verdict, r.why, r.measured) == ("not enough data", "the check lacked the data to decide", ("CI 1.7 wide",))


def test_checks_that_lacked_data_are_set_aside_when_others_decide():
    r = row(OBS, {"exp": summary(check("Figure 9 at T=2", passed=False, kind="claim", measured="wide", enough=False),
                                 check("Figure 9 at T=4", kind="claim", measured="fine"),
                                 check("Figure 9 at T=8", passed=False, kind="claim", measured="off"))})
    assert (r.verdict, r.why) == ("differs", "1 of 2 checks passed; 1 more lacked the data to decide")
    assert r.measured == ("off", "fine", "wide")  # the deciding ones first, failures first among them
    r = row(OBS, {"exp": summary(check("Figure 9 at T=2", passed=False, kind="claim", enough=False),
                                 check("Figure 9 at T=4", kind="claim"))})
    assert (r.verdict, r.why) == ("reproduced", "the check passed; 1 more lacked the data to decide")


def test_a_failed_theorem_check_decides_even_without_enough_data():
    r = row(THM, {"exp": summary(check("Theorem 9: J above the bound", passed=False, enough=False))})
    assert r.verdict == "contradicted"


def test_summaries_written_before_the_enough_field_still_decide():
    old = {k: v for k, v in check("Figure 9 at T=4", passed=False, kind="claim").items() if k != "enough"}
    assert row(OBS, {"exp": summary(old)}).verdict == "not seen"


def test_absent_experiment_is_not_tested():
    r = row(THM, {"other": summary(check("Theorem 9: J above the bound"))})
    assert (r.verdict, r.why, r.experiments) == ("not tested", "experiment not run: exp", ())


def test_a_renamed_check_is_not_tested_and_says_so():
    r = row(THM, {"exp": summary(check("Theorem 9 (renamed): J above the bound"))})
    assert r.verdict == "not tested" and "out of date" in r.why and "Theorem 9: J above {}" in r.why


def test_untested_claim_keeps_its_reason():
    c = Claim("u", "leash", "abstract", "Something.", untested="no run measures it")
    assert (row(c, {}).verdict, row(c, {}).why) == ("not tested", "no run measures it")


def test_a_pass_can_mean_the_paper_differs():
    c = Claim("p", "gap", "App. F", "A printed coefficient.", (Ref("exp", "ours beats printed"),), on_pass="differs",
              why_pass="the derived coefficient fits better")
    r = row(c, {"exp": summary(check("ours beats printed", kind="claim"))})
    assert (r.verdict, r.why) == ("differs", "the derived coefficient fits better")


def test_several_experiments_label_their_figures_and_holes_before_a_colon_label_theirs():
    c = Claim("s", "gap", "Lemma 9", "A band.", (Ref("a", "band"), Ref("b", "F.2 (T_inf={}): band")))
    r = row(c, {"a": summary(check("band", measured="3 of 3")), "b": summary(check("F.2 (T_inf=4): band", measured="5 of 5"))})
    assert r.measured == ("a: 3 of 3", "b, F.2 (T_inf=4): 5 of 5") and r.experiments == ("a", "b")


def test_names_match_literally_except_their_holes():
    assert name_regex("The plateau follows J* = 1/(1 + (α/c)²)").match("The plateau follows J* = 1/(1 + (α/c)²)")
    assert not name_regex("The plateau follows J* = 1/(1 + (α/c)²)").match("The plateau follows J = 1/(1 + (α/c)²)")
    assert name_regex("pass@{}: the base catches up").match("pass@32: the base catches up")
    assert not name_regex("pass@{}: the base catches up").match("pass@32: the base catches up at last")
    assert not name_regex("grpo, J0={}: slope").match("dr-grpo, J0=0.3: slope")


# --- the ledger's data ---------------------------------------------------------------------------


def test_every_claim_has_a_location_a_paper_and_either_checks_or_a_reason():
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)
    for c in CLAIMS:
        assert c.paper in PAPERS and c.where.strip() and c.claim.strip().endswith("."), c.id
        assert bool(c.refs) != bool(c.untested), f"{c.id}: checks, or a reason why it is not tested, not both"
        assert {c.on_pass, c.on_fail} <= set(VERDICTS) and all(r.experiment in names() for r in c.refs), c.id
    assert {c.paper for c in CLAIMS} == set(PAPERS)  # all three papers


def _templates(module: str) -> list[str]:
    """Every string of a module's source, f-strings with each {…} replaced by the hole."""
    out = []
    for node in ast.walk(ast.parse(inspect.getsource(importlib.import_module(module)))):
        if isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else HOLE for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return out


def _fits(name: str, template: str) -> bool:
    """Could the source's template produce a name the ledger's pattern matches? Holes on both sides
    stand for values; the literal text must agree everywhere else, and be most of the name (a bare
    f"{label}" fits anything)."""
    literal = len(template.replace(HOLE, ""))
    return literal >= 0.5 * len(name.replace(HOLE, "")) and bool(name_regex(template).match(name.replace(HOLE, "\0")))


def test_template_matching_can_fail():
    assert _fits("F.2 (T_inf={}): J strictly decreasing", "{}: J strictly decreasing")
    assert _fits("at k = {} the RLVR models' support shrinks", "at k = {} the RLVR models' support shrinks")
    assert not _fits("at k = {} the RLVR model's support shrinks", "at k = {} the RLVR models' support shrinks")
    assert not _fits("pass@{}: the base catches up", "pass@32: the base catches up")  # the ledger is looser than the source
    assert not _fits("F.1: J strictly decreasing", "{}") and not _fits("F.1: J strictly decreasing", "{}: {}")


@pytest.mark.parametrize("experiment", sorted({r.experiment for c in CLAIMS for r in c.refs}))
def test_every_referenced_check_name_is_in_the_experiments_source(experiment):
    # Cheap, for every experiment (language-model ones included): a check renamed in the source
    # no longer fits the ledger's name. Names built elsewhere than the run's module would fail here.
    templates = _templates(get(experiment).run.__module__)
    refs = [r.check for c in CLAIMS for r in c.refs if r.experiment == experiment]
    assert [n for n in refs if not any(_fits(n, t) for t in templates)] == []


# Small settings (as in test_experiments.py): fast experiments whose real summaries the ledger is checked against.
SMALL = {
    "mab": ["steps=400"],
    "two-response": ["steps=200"],
    "collapse": ["steps=300", "T_infs=1,3", "record_every=5"],
    "bounds": ["steps=25", "runs_per_direction=3"],
    "contextual": ["steps=150", "eval_contexts=40", "pool=30", "record_every=5"],
}


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, {n: run_experiment(n, root / n, quick=True, settings=s) for n, s in SMALL.items()}


@pytest.mark.slow
def test_every_referenced_check_of_a_fast_experiment_is_in_its_summary(small_runs):
    _, summaries = small_runs
    missing = [(c.id, r.experiment, r.check) for c in CLAIMS for r in c.refs if r.experiment in summaries
               and not any(name_regex(r.check).match(k["name"]) for k in summaries[r.experiment]["checks"])]
    assert missing == []
    tested = [x for x in ledger(summaries) if set(x.experiments) and set(x.experiments) <= set(SMALL)]
    assert len(tested) >= 10 and all(x.verdict != "not tested" for x in tested)


# --- headline numbers ----------------------------------------------------------------------------


class Tables(HTMLParser):
    """Tables of a page as lists of rows of cell texts; ids and local links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.external: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for k in ("href", "src"):
            if a.get(k, "").startswith("#"):
                self.links.append(a[k][1:])
            elif re.match(r"(https?:)?//", a.get(k, "")) or tag in ("script", "link"):
                self.external.append(a.get(k, tag))
        if tag == "table":
            self.tables.append({"caption": "", "rows": [], "ids": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
            self.tables[-1]["ids"].append(a.get("id"))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "caption":
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "caption" and self._cell is not None:
            self.tables[-1]["caption"] = "".join(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(page: str) -> Tables:
    t = Tables()
    t.feed(page)
    return t


def test_a_list_of_runs_is_a_table_with_one_row_per_run_and_units():
    runs = [{"J0": 0.01, "steps_to_J_0.99": 152, "seconds": 0.25}, {"J0": 0.2, "steps_to_J_0.99": 99, "seconds": 1.5},
            {"J0": 0.5, "steps_to_J_0.99": 76, "seconds": 12.0}]
    (t,) = parse(headline_html({"runs": runs})).tables
    assert t["caption"] == "runs"
    assert t["rows"] == [["J0", "steps_to_J_0.99 (steps)", "seconds (s)"],
                         ["0.01", "152", "0.25"], ["0.2", "99", "1.5"], ["0.5", "76", "12"]]


def test_scalars_are_one_key_value_table_with_units_and_fractions_in_percent():
    (t,) = parse(headline_html({"arms": 100, "fraction_converged": 0.615, "mean_J": 0.98836, "seconds": 40.61,
                                "median_steps_to_target": "inf", "se": None, "ok": True})).tables
    assert t["rows"] == [["key", "value", "unit"], ["arms", "100", ""], ["fraction_converged", "61.5", "%"],
                         ["mean_J", "0.9884", ""], ["seconds", "40.61", "s"], ["median_steps_to_target", "∞", "steps"],
                         ["se", "n/a", ""], ["ok", "yes", ""]]


def test_parallel_lists_and_dicts_become_tables_row_by_row():
    page = headline_html({"etas": [0.1, 1.0], "J_final": [0.5, 0.9], "ks": [1, 2, 4],
                          "contenders": {"grpo": {"mean_final_J": 0.97, "reached_target": 1.0},
                                         "dr-grpo": {"mean_final_J": 0.9, "reached_target": 0.5}},
                          "stalled_fraction": {"grpo": 0.25, "dr-grpo": 0.0}, "mean_collapsed": {"grpo": 0.625, "dr-grpo": 0.5}})
    kv, lists, contenders, per_preset = parse(page).tables
    assert kv["rows"][1] == ["ks", "[1, 2, 4]", ""]  # a lone list stays a value
    assert lists["rows"] == [["etas", "J_final"], ["0.1", "0.5"], ["1", "0.9"]]
    assert contenders["rows"] == [["", "mean_final_J", "reached_target (%)"], ["grpo", "0.97", "100"], ["dr-grpo", "0.9", "50"]]
    assert per_preset["rows"] == [["", "grpo", "dr-grpo"], ["stalled_fraction (%)", "25", "0"], ["mean_collapsed", "0.625", "0.5"]]


def test_units_from_key_names():
    assert [unit_of(k)[0] for k in ("seconds", "steps_to_target", "first_step_with_J_at_least_half", "target_rate",
                                    "critical_rate_ratio", "token_entropy", "completion_length_mean", "eta", "J_final")] == [
        "s", "steps", "steps", "%", "", "nats", "tokens", "", ""]


# --- the page ------------------------------------------------------------------------------------


def _claim_check_names(experiment: str) -> list[str]:
    """The check names the ledger expects of an experiment, with holes filled in."""
    return [r.check.replace(HOLE, "7") for c in CLAIMS for r in c.refs if r.experiment == experiment]


def test_report_opens_with_the_ledger_and_every_row_links_into_the_page(tmp_path):
    runs = {
        "mab": summary(*[check(n) for n in _claim_check_names("mab")],
                       headline={"etas": [0.1, 1.0], "J_final": [0.9, 0.99], "arms": 100}),
        "leash": summary(*[check(n, passed=False, kind="claim") for n in _claim_check_names("leash")]),
    }
    for name, s in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    page = write_report(tmp_path, list(runs)).read_text()
    html = parse(page)
    assert page.index('id="ledger"') < page.index('id="experiments"') < page.index('id="mab"')
    assert html.external == []  # self-contained
    assert html.links and set(html.links) <= html.ids
    assert {f"claim-{c.id}" for c in CLAIMS} <= html.ids
    ledger_table = next(t for t in html.tables if t["rows"][0][:3] == ["claim", "where", "verdict"])
    rows = {i.removeprefix("claim-"): r for i, r in zip(ledger_table["ids"], ledger_table["rows"]) if i}
    assert len(rows) == len(CLAIMS) and all(r[1] for r in rows.values())  # a paper location each
    by_id = {c.id: c for c in CLAIMS}
    for cid, (_, _, verdict, why, _, run) in rows.items():
        exps = {r.experiment for r in by_id[cid].refs}
        if exps and exps <= {"mab"}:
            assert (verdict, run) == ("reproduced", "mab"), cid
        elif exps and exps <= {"leash"}:
            assert (verdict, run) == ("not seen", "leash"), cid
        elif exps == {"direction"}:
            assert (verdict, why, run) == ("not tested", "experiment not run: direction", ""), cid
    md = (tmp_path / "claims.md").read_text()
    assert sum(line.startswith("| ") for line in md.splitlines()) == len(CLAIMS) + len(PAPERS)  # rows and headers
    assert "[mab](report.html#mab)" in md and "(quick settings, 2 experiments)" in md
