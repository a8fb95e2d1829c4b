"""rlvrlab.lm.tasks: every reference solution verifies and every perturbed answer does not, over
many seeds; the formats on hand-worked examples; garbage never raises; alphabets cover
everything written; sampling is deterministic; difficulty options change lengths as documented;
load_qa on small GSM8K-, boxed- and bare-style files, with each bad input's message; a file's
sample never repeats a record; and load_task / check_task_spec, the one resolver of task names
and files."""

from __future__ import annotations

import json
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlvrlab.lm.tasks import (
    TASKS,
    AdditionTask,
    ArithmeticTask,
    CountdownTask,
    Problem,
    QATask,
    check_task_spec,
    load_qa,
    load_task,
    make_task,
)
from rlvrlab.lm.tasks import expr

NAMES = sorted(TASKS)
SEEDS = range(50)  # x 20 problems = 1000 problems per task


def _problems(task, n=20):
    return [p for seed in SEEDS for p in task.sample(n, seed)]


def _countdown_numbers_target(prompt: str) -> tuple[list[int], int]:
    numbers, target = re.fullmatch(r"([\d,]+)>(\d+):", prompt).groups()
    return [int(x) for x in numbers.split(",")], int(target)


# --- every task: solutions verify, answers extract --------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_solutions_verify_over_many_seeds(name):
    task = make_task(name)
    for p in _problems(task):
        s = task.solution(p)
        assert task.verify(s, p) == 1, (p, s)
        assert task.extract(s) == p.answer, (p, s)


def test_add_and_arith_answers_are_the_values_of_the_prompts():
    for name in ("add", "arith"):
        task = make_task(name)
        for p in _problems(task):
            assert int(p.answer) == eval(p.prompt[:-1]), p  # the prompt is a Python expression


def test_countdown_answers_reach_the_target_with_the_given_numbers():
    task = make_task("countdown")
    for p in _problems(task):
        numbers, target = _countdown_numbers_target(p.prompt)
        expression = task.extract(task.solution(p))
        assert eval(expression) == target
        assert Counter(map(int, re.findall(r"\d+", expression))) == Counter(numbers)  # built using each once
        assert numbers == sorted(numbers) and 1 <= target <= task.max_target
        assert p.meta["target"] == target and list(p.meta["numbers"]) == numbers


@pytest.mark.parametrize("name", NAMES)
def test_every_character_is_in_the_alphabet(name):
    task = make_task(name)
    text = "".join(p.prompt + task.solution(p) for p in _problems(task))
    assert set(text) <= task.alphabet
    assert "#" in task.alphabet and set("0123456789") <= task.alphabet


def test_alphabets_are_small():
    union = set().union(*(make_task(n).alphabet for n in NAMES))
    assert union == set("0123456789+-*()=,#>:")


# --- wrong and garbage completions --------------------------------------------------------------


@pytest.mark.parametrize("name", ["add", "arith"])
def test_a_perturbed_final_answer_verifies_0(name):
    task = make_task(name)
    for p in _problems(task, n=5):
        head = task.solution(p).rsplit("#", 1)[0]
        for delta in (-10, -1, 1, 7):
            assert task.verify(f"{head}#{int(p.answer) + delta}", p) == 0
        assert task.verify(f"{head}#{p.answer}0", p) == 0
        assert task.verify(f"{head}#0{p.answer}", p) == 0  # exact match: no leading zeros


def test_countdown_wrong_answers_verify_0():
    task = make_task("countdown")
    for p in _problems(task, n=5):
        numbers, target = _countdown_numbers_target(p.prompt)
        head = task.solution(p).rsplit("#", 1)[0]
        assert task.verify(f"{head}#({p.answer})+1", p) == 0  # worth target + 1
        assert task.verify(f"{head}#({p.answer})*{numbers[0]}", p) == 0  # every number is used already
        assert target not in numbers and task.verify(f"{head}#{target}", p) == 0  # no one-number shortcut


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "completion",
    ["", "#", "##", "#-", "#+", "#abc", "#12a", "#1 2", "#1.5", "7+8=15,5+6", "125", "12,#", "#()", "#(1+2",
     "#1+", "#--3", "#007", "#" + "(" * 200 + "1" + ")" * 200, "é#ü", "#\u0663", "#\u00b2"],  # ٣, ²
)
def test_garbage_never_raises(name, completion):
    task = make_task(name)
    p = task.sample(1, 0)[0]
    answer = task.extract(completion)
    assert answer is None or (answer == "007" and name != "countdown")  # an integer, but not canonical
    assert task.verify(completion, p) == 0


@pytest.mark.parametrize("name", NAMES)
@given(text=st.text(alphabet="0123456789+-*()=,#>: x", max_size=40))
def test_random_text_never_raises(name, text):
    task = make_task(name)
    p = task.sample(1, 3)[0]
    assert task.verify(text, p) in (0, 1)
    assert task.extract(text) is None or isinstance(task.extract(text), str)


@pytest.mark.parametrize("name", NAMES)
def test_truncated_solutions_do_not_verify(name):
    task = make_task(name)
    for p in task.sample(50, 1):
        s = task.solution(p)
        for cut in range(s.index("#") + 1):  # everything before the answer starts
            assert task.extract(s[:cut]) is None
            assert task.verify(s[:cut], p) == 0


# --- hand-worked formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, solution",
    [
        ("57+68=", "7+8=15,5+6+1=12,#125"),
        ("5+3=", "5+3=8,#8"),
        ("0+0=", "0+0=0,#0"),
        ("123+4=", "3+4=7,2+0=2,1+0=1,#127"),
        ("4+123=", "4+3=7,0+2=2,0+1=1,#127"),
        ("999+1=", "9+1=10,9+0+1=10,9+0+1=10,#1000"),
        ("95+17=", "5+7=12,9+1+1=11,#112"),
    ],
)
def test_add_format(prompt, solution):
    task = AdditionTask()
    p = Problem(prompt, solution.rsplit("#", 1)[1])
    assert task.solution(p) == solution
    assert task.extract(solution) == p.answer
    assert task.verify(solution, p) == 1


@pytest.mark.parametrize(
    "prompt, solution",
    [
        ("(3+4)*5-2=", "3+4=7,7*5=35,35-2=33,#33"),
        ("2-3*4=", "3*4=12,2-12=-10,#-10"),
        ("3-(2-5)=", "2-5=-3,3--3=6,#6"),
        ("2*3+4*5=", "2*3=6,4*5=20,6+20=26,#26"),
        ("9*(3*5)=", "3*5=15,9*15=135,#135"),
        ("7-1-5=", "7-1=6,6-5=1,#1"),
        ("1-9*(2+3)=", "2+3=5,9*5=45,1-45=-44,#-44"),
    ],
)
def test_arith_format(prompt, solution):
    task = ArithmeticTask()
    p = Problem(prompt, solution.rsplit("#", 1)[1])
    assert task.solution(p) == solution
    assert task.extract(solution) == p.answer
    assert task.verify(solution, p) == 1


def test_countdown_format_and_validity():
    task = CountdownTask()
    p = Problem("3,5,7>32:", "5*7-3")
    assert task.solution(p) == "5*7=35,35-3=32,#5*7-3"
    assert task.solution(Problem("1,5,7,9>39:", "5*9-(7-1)")) == "5*9=45,7-1=6,45-6=39,#5*9-(7-1)"
    for c in ["#5*7-3", "#7*5-3", "#(7*5)-3", "x#((5))*7-3", "#5*7-3 "]:  # several answers are correct
        assert task.verify(c, p) == 1, c
    assert task.extract("junk#7*5-3") == "7*5-3"
    invalid = [
        "#35-3",  # 35 is not given
        "#5*7-3+3-3",  # 3 used three times
        "#4*8",  # numbers not given
        "#5*7-3+0",  # 0 not given
        "#5*7+3",  # wrong value
        "#-3+5*7",  # unary minus is not allowed
        "#5*07-3",  # leading zero
        "#5×7-3",  # not an operator of the task
        "5*7-3",  # no answer marker
    ]
    for c in invalid:
        assert task.verify(c, p) == 0, c
    # at most once: a subset of the numbers is enough, and a number listed twice may be used twice
    assert task.verify("#5*7", Problem("3,5,7>35:", "5*7")) == 1
    assert task.verify("#3*3+1", Problem("1,3,3>10:", "3*3+1")) == 1
    assert task.verify("#3*3*3+1", Problem("1,3,3>28:", "3*3+1")) == 0


# --- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic_and_varied(name):
    task = make_task(name)
    a, b = task.sample(30, 7), task.sample(30, 7)
    assert a == b and [p.meta for p in a] == [p.meta for p in b]
    assert task.sample(10, 7) == a[:10]  # a shorter sample is a prefix
    assert task.sample(30, 8) != a
    assert len({p.prompt for p in a}) > 20
    assert len({p.prompt for s in range(20) for p in task.sample(1, s)}) > 10  # seeds differ
    assert task.sample(0, 1) == []


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n, seed", [(-1, 0), (1.5, 0), (True, 0), (2, "a"), (2, 1.0)])
def test_sample_rejects_bad_arguments(name, n, seed):
    with pytest.raises(ValueError, match="n:|seed:"):
        make_task(name).sample(n, seed)


def test_problems_hash_and_compare_by_prompt_and_answer():
    p, q = Problem("1+1=", "2", {"a": 1}), Problem("1+1=", "2", {"a": 2})
    assert p == q and hash(p) == hash(q) and len({p, q}) == 1
    with pytest.raises(AttributeError):
        p.prompt = "2+2="


# --- difficulty ---------------------------------------------------------------------------------


def _lengths(task, n=300, seed=0):
    return [len(task.solution(p)) for p in task.sample(n, seed)]


def test_add_length_grows_with_digits_within_documented_bounds():
    means = []
    for d in range(1, 7):
        task = AdditionTask(min_digits=d, max_digits=d)
        lengths = _lengths(task)
        assert all(7 * d + 1 <= n <= 10 * d + 2 for n in lengths)
        assert all(p.meta["digits"] == d for p in task.sample(20, 0))
        means.append(sum(lengths) / len(lengths))
    assert means == sorted(means) and means[-1] > 2 * means[1]


def test_arith_steps_follow_the_number_of_operands():
    means = []
    for k in range(2, 7):
        task = ArithmeticTask(min_operands=k, max_operands=k)
        for p in task.sample(50, 0):
            assert task.solution(p).count("=") == k - 1 and p.meta["operands"] == k
            assert len(re.findall(r"\d+", p.prompt)) == k
        lengths = _lengths(task)
        means.append(sum(lengths) / len(lengths))
    assert means == sorted(means)


def test_countdown_steps_follow_the_number_of_numbers():
    means = []
    for k in range(2, 6):
        task = CountdownTask(min_numbers=k, max_numbers=k, max_target=1000)
        for p in task.sample(50, 0):
            assert task.solution(p).count("=") == k - 1
            assert len(_countdown_numbers_target(p.prompt)[0]) == k == p.meta["n_numbers"]
        lengths = _lengths(task)
        means.append(sum(lengths) / len(lengths))
    assert means == sorted(means)


@pytest.mark.parametrize("name, low, high", [("add", 15, 42), ("arith", 8, 40), ("countdown", 10, 40)])
def test_default_lengths_suit_a_tiny_model(name, low, high):
    lengths = _lengths(make_task(name), n=1000)
    assert low <= min(lengths) and max(lengths) <= high
    assert 12 <= sum(lengths) / len(lengths) <= 32


# --- properties ---------------------------------------------------------------------------------


@given(a=st.integers(0, 10**12), b=st.integers(0, 10**12))
def test_addition_solution_answers_a_plus_b(a, b):
    task = AdditionTask()
    p = Problem(f"{a}+{b}=", str(a + b))
    s = task.solution(p)
    assert task.extract(s) == str(a + b) and task.verify(s, p) == 1
    # the scratchpad's column sums spell the answer: last digit of each, then the final carry
    sums = [int(step.split("=")[1]) for step in s.rsplit("#", 1)[0].split(",")[:-1]]
    digits = "".join(str(x % 10) for x in reversed(sums))
    assert int(("1" if sums[-1] >= 10 else "") + digits) == a + b


_trees = st.recursive(
    st.integers(1, 20),
    lambda sub: st.tuples(st.sampled_from("+-*"), sub, sub),
    max_leaves=6,
)


@given(tree=_trees)
def test_rendered_expressions_parse_back_and_scratchpads_follow_python(tree):
    text = expr.render(tree)
    assert expr.parse(text) == tree  # the prompt fixes the order of the scratchpad
    value, steps = expr.steps(tree)
    assert value == expr.value(tree) == eval(text)
    for step in steps:  # each step is a correct operation
        lhs, rhs = step.split("=")
        x, op, y = re.fullmatch(r"(-?\d+)([-+*])(-?\d+)", lhs).groups()
        assert eval(f"({x}){op}({y})") == int(rhs)
    p = Problem(f"{text}=", str(value))
    assert ArithmeticTask().verify(ArithmeticTask().solution(p), p) == 1


# --- options ------------------------------------------------------------------------------------


def test_make_task_names_the_valid_choices():
    with pytest.raises(ValueError, match="task: got 'gsm8k'; allowed: add, arith, countdown"):
        make_task("gsm8k")
    with pytest.raises(ValueError, match="add option: got 'digits'; allowed: min_digits, max_digits"):
        make_task("add", digits=3)
    assert make_task("arith", max_operands=3).max_operands == 3


@pytest.mark.parametrize(
    "name, options, field",
    [
        ("add", {"min_digits": 0}, "min_digits"),
        ("add", {"min_digits": 3, "max_digits": 2}, "max_digits"),
        ("arith", {"min_operands": 1}, "min_operands"),
        ("arith", {"max_operand": 0}, "max_operand"),
        ("countdown", {"max_numbers": 2, "min_numbers": 3}, "max_numbers"),
        ("countdown", {"max_target": 0}, "max_target"),
        ("countdown", {"max_number": 1.5}, "max_number"),
    ],
)
def test_bad_options_name_the_field(name, options, field):
    with pytest.raises(ValueError, match=f"^{field}: got"):
        make_task(name, **options)


def test_countdown_rare_targets_say_what_to_change(monkeypatch):
    task = CountdownTask(min_numbers=2, max_numbers=2, max_number=1, max_target=5)  # 1+1 (1*1 is a shortcut)
    assert {p.prompt for p in task.sample(20, 0)} == {"1,1>2:"}
    assert all(task.verify(task.solution(p), p) for p in task.sample(20, 0))
    monkeypatch.setattr("rlvrlab.lm.tasks.synthetic._MAX_DRAWS", 1)  # give up after one draw
    with pytest.raises(ValueError, match=r"^max_target: got 1; allowed: a value that 4 numbers from 1..9 reach"):
        CountdownTask(min_numbers=4, max_numbers=4, max_target=1).sample(20, 0)


# --- real data ------------------------------------------------------------------------------------

GSM8K = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "A farm has 1,000 hens and buys 250 more. How many hens?",
     "answer": "1000 + 250 = 1250\n#### 1,250"},
]
BOXED = [
    {"problem": "What is 1/4 + 1/4?", "solution": "We get $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$."},
    {"problem": "Solve x + 1 = 0.", "solution": "So \\boxed{-1}."},
]
BARE = [
    {"question": "2+2?", "answer": "4"},
    {"question": "Half?", "answer": "\\frac{1}{2}"},
    {"question": "Big?", "answer": 1000},
]


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _write_parquet(path, records):
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def test_load_gsm8k_jsonl(tmp_path):
    task = load_qa(_write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K))
    assert task.name == "gsm8k"
    assert [p.answer for p in task.problems] == ["72", "1250"]
    assert task.problems[0].prompt == GSM8K[0]["question"]
    assert task.problems[1].meta == {"index": 1, "reference": GSM8K[1]["answer"]}
    for p in task.problems:
        assert task.solution(p) == p.meta["reference"]
        assert task.verify(task.solution(p), p) == 1
        assert set(p.prompt + task.solution(p)) <= task.alphabet
    p = task.problems[1]
    assert task.extract("so the answer is\n#### 1,250\nthanks") == "1250"
    for right in ["#### 1250", "#### 1,250", "The answer is 1250.", "\\boxed{1250}", "#### $1,250$", "1250.0"]:
        assert task.verify(right, p) == 1, right
    for wrong in ["#### 1251", "1250 hens, or 1251", "", "no idea", "#### ", "\\boxed{1251"]:
        assert task.verify(wrong, p) == 0, wrong  # an unclosed box falls back to the last number


def test_load_boxed_parquet(tmp_path):
    task = load_qa(_write_parquet(tmp_path / "dapo.parquet", BOXED), question_key="problem", answer_key="solution")
    assert [p.answer for p in task.problems] == ["\\frac{1}{2}", "-1"]
    half, minus_one = task.problems
    assert task.solution(half) == BOXED[0]["solution"]
    for right in ["\\boxed{\\frac{1}{2}}", "\\boxed{0.5}", "the answer is 0.5", "#### 1/2", "\\boxed{\\dfrac{1}{2}}",
                  "first \\boxed{3}, no: \\boxed{\\frac{2}{4}}"]:
        assert task.verify(right, half) == 1, right
    for wrong in ["\\boxed{\\frac{1}{3}}", "0.51", "\\boxed{2}", "\\boxed{\\frac{1}{2}", "nothing here"]:
        assert task.verify(wrong, half) == 0, wrong
    assert task.verify("\\boxed{-1}", minus_one) == 1 and task.verify("\\boxed{1}", minus_one) == 0
    assert task.extract("\\boxed{\\frac{1}{2}} and then \\boxed{x^{2}+1}") == "x^{2}+1"  # the last, nested braces


def test_load_bare_answers(tmp_path):
    task = load_qa(_write_jsonl(tmp_path / "bare.jsonl", BARE))
    four, half, thousand = task.problems
    assert [p.answer for p in task.problems] == ["4", "\\frac{1}{2}", "1000"]
    assert task.solution(four) == "4"
    assert task.solution(half) == "\\boxed{\\frac{1}{2}}"  # its last number would be 2
    assert all(task.verify(task.solution(p), p) for p in task.problems)
    assert task.verify("0.5", half) == 1
    assert task.verify("1,000", thousand) == 1 and task.verify("1000", thousand) == 1
    assert task.verify("I think 10 then 1,000", thousand) == 1  # the last number
    assert task.verify("100", thousand) == 0


def test_string_fallback_when_math_verify_cannot_parse(tmp_path):
    task = load_qa(_write_jsonl(tmp_path / "words.jsonl", [{"question": "Colour?", "answer": "\\boxed{Blue sky}"},
                                                           {"question": "Sea?", "answer": "\\boxed{Blue sea}"}]))
    p = task.problems[0]
    assert p.answer == "Blue sky"
    assert task.verify("\\boxed{Blue  sky}", p) == 1
    assert task.verify("\\boxed{Red sky}", p) == 0


def test_qa_sample_is_a_seeded_order_of_distinct_records(tmp_path):
    records = [{"question": f"q{i}", "answer": str(i)} for i in range(10)]
    task = load_qa(_write_jsonl(tmp_path / "ten.jsonl", records))
    first = task.sample(10, 3)
    assert sorted(p.answer for p in first) == sorted(str(i) for i in range(10))  # a permutation
    assert task.sample(10, 3) == first and task.sample(10, 4) != first
    assert task.sample(25, 3) == first  # never more than the file's records, never one twice
    assert task.sample(4, 3) == first[:4] and task.sample(0, 3) == []


def test_qa_repeated_records_are_dropped_and_conflicting_answers_refused(tmp_path):
    records = [{"question": "2+2?", "answer": "4"}, {"question": "3+3?", "answer": "6"},
               {"question": " 2+2? ", "answer": "#### 4"}, {"question": "3+3?", "answer": "6"}]
    task = load_qa(_write_jsonl(tmp_path / "dup.jsonl", records))
    assert [(p.prompt, p.answer, p.meta["index"]) for p in task.problems] == [("2+2?", "4", 0), ("3+3?", "6", 1)]
    for seed in range(20):
        held_out, *train = task.sample(400, seed)  # as a trainer splits it
        assert len(train) == 1 and held_out.prompt != train[0].prompt
    records.append({"question": "2+2?", "answer": "5"})
    with pytest.raises(ValueError, match=r"dup.jsonl line 5: got \"the question of line 1 with another answer \('5', not '4'\)\"; "
                                         r"allowed: one answer per question$"):
        load_qa(_write_jsonl(tmp_path / "dup.jsonl", records))


@pytest.mark.parametrize("records, count", [([{"question": "2+2?", "answer": "4"}], "1 distinct question-answer record'"),
                                            ([{"question": "2+2?", "answer": "4"}] * 3, "1 distinct question-answer record'")])
def test_qa_files_with_fewer_than_two_distinct_records_are_refused(tmp_path, records, count):
    path = _write_jsonl(tmp_path / "one.jsonl", records)
    with pytest.raises(ValueError, match=rf"^\S*one.jsonl: got '{count}; allowed: at least 2 distinct questions"):
        load_qa(path)
    with pytest.raises(ValueError, match=r"^problems: got '1 distinct"):
        QATask([Problem("2+2?", "4"), Problem("2+2?", "4")])


def test_jsonl_and_parquet_load_the_same_problems(tmp_path):
    a = load_qa(_write_jsonl(tmp_path / "g.jsonl", GSM8K))
    b = load_qa(_write_parquet(tmp_path / "g.parquet", GSM8K))
    assert a.problems == b.problems and a.alphabet == b.alphabet


def test_blank_lines_are_skipped_and_line_numbers_are_the_file_s(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text("\n" + json.dumps(GSM8K[0]) + "\n\n{bad\n")
    with pytest.raises(ValueError, match=r"gaps.jsonl line 4: got 'malformed JSON"):
        load_qa(path)


@pytest.mark.parametrize(
    "filename, content, message",
    [
        ("missing.jsonl", None,
         r"path: got '.*missing.jsonl \(no such file\)'; allowed: an existing .jsonl or .parquet"),
        ("data.csv", "question,answer\n", r"path: got '.*data.csv'; allowed: a file ending in .jsonl, .parquet"),
        ("empty.jsonl", "", r"empty.jsonl: got 'no records'; allowed: a file with at least 2 distinct"),
        ("blank.jsonl", "\n  \n", r"blank.jsonl: got 'no records'"),
        ("bad.jsonl", '{"question": "a", "answer": "1"}\n{"question": "b", "answer": \n',
         r"bad.jsonl line 2: got 'malformed JSON \(Expecting value\)'; allowed: one JSON object per line"),
        ("list.jsonl", "[1, 2]\n", r"list.jsonl line 1: got 'a JSON list'; allowed: one JSON object per line"),
        ("keys.jsonl", '{"q": "a", "a": "1"}\n',
         r"keys.jsonl line 1: got \"keys \['a', 'q'\] \(missing 'question', 'answer'\)\"; "
         r"allowed: records with keys 'question' and 'answer' \(set question_key= / answer_key="),
        ("noq.jsonl", '{"question": "  ", "answer": "1"}\n', r"noq.jsonl line 1 'question': got 'an empty value'"),
        ("noa.jsonl", '{"question": "a", "answer": null}\n', r"noa.jsonl line 1 'answer': got 'an empty value'"),
        ("nomark.jsonl", '{"question": "a", "answer": "work #### "}\n',
         r"nomark.jsonl line 1 'answer': got 'work #### '; allowed: a final answer after '####'"),
        ("open.jsonl", '{"question": "a", "answer": "\\\\boxed{1"}\n', r"open.jsonl line 1 'answer'"),
        ("latin1.jsonl", b'{"question": "caf\xe9", "answer": "1"}\n', r"latin1.jsonl: got 'bytes that are not UTF-8"),
        ("broken.parquet", "not parquet",
         r"broken.parquet: got .an unreadable Parquet file \(.*magic bytes.*\).; allowed: a Parquet file"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path, filename, content, message):
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_qa(path)


def test_bad_parquet_records(tmp_path):
    with pytest.raises(ValueError, match=r"empty.parquet: got 'no records'"):
        load_qa(_empty_parquet(tmp_path))
    keys = r"k.parquet row 0: got \"keys \['answer', 'prompt'\] \(missing 'question'\)\""
    with pytest.raises(ValueError, match=keys):
        load_qa(_write_parquet(tmp_path / "k.parquet", [{"prompt": "a", "answer": "1"}]))
    with pytest.raises(ValueError, match=r"e.parquet row 1 'answer': got 'an empty value'"):
        load_qa(_write_parquet(tmp_path / "e.parquet", [{"question": "a", "answer": "1"},
                                                       {"question": "b", "answer": ""}]))


def _empty_parquet(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)
    return path


@given(text=st.text(alphabet="0123456789.,/-+ #$\\{}()boxedfrac^x", max_size=40))
def test_qa_random_completions_never_raise(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "qa_random.jsonl"
    if not path.exists():
        _write_jsonl(path, BOXED)
    task = load_qa(path, question_key="problem", answer_key="solution")
    assert task.verify(text, task.problems[0]) in (0, 1)


# --- one resolver: load_task / check_task_spec ------------------------------------------------------


def test_load_task_resolves_names_and_files(tmp_path):
    assert load_task("countdown").sample(3, 1) == make_task("countdown").sample(3, 1)
    path = _write_jsonl(tmp_path / "g.jsonl", GSM8K)
    assert load_task(str(path)).problems == load_qa(path).problems
    assert check_task_spec("add") == "add" and check_task_spec(str(path)) == str(path)


@pytest.mark.parametrize("spec, got", [("x.csv", "'x.csv'"), ("gsm8k", "'gsm8k'"), ("missing.jsonl", "'missing.jsonl \\(no such file\\)'"),
                                       (3, "3")])
def test_unknown_tasks_list_the_names_and_the_file_formats(spec, got):
    message = (rf"^task: got {got}; allowed: a task name \(add, arith, countdown\), optionally with integer options "
               r"\(add:repeat=4\), or a .jsonl / .parquet question-answer file$")
    for resolve in (check_task_spec, load_task):
        with pytest.raises(ValueError, match=message):
            resolve(spec)


def test_add_repeat_writes_the_same_worked_solution_k_times_and_is_named_by_a_task_spec():
    from rlvrlab.lm.tasks import AdditionTask, load_task, parse_task_spec

    task = load_task("add:repeat=3:min_digits=2:max_digits=2")
    p = Problem("57+68=", "125", {})
    assert task.solution(p) == "7+8=15,5+6+1=12," * 3 + "#125"
    assert task.verify(task.solution(p), p) == 1
    assert parse_task_spec("add:repeat=3") == ("add", {"repeat": 3})
    assert parse_task_spec("data.jsonl") is None
    # repeat=1 keeps the repr the model cache hashes (cached tiny models keep their names); others name it
    assert repr(AdditionTask()) == "AdditionTask(min_digits=2, max_digits=4)"
    assert repr(AdditionTask(repeat=2)) == "AdditionTask(min_digits=2, max_digits=4, repeat=2)"


@pytest.mark.parametrize("spec, message", [("add:repeat=0", "repeat"), ("add:colour=1", "min_digits, max_digits, repeat"),
                                           ("add:repeat", "key=integer"), ("add:repeat=x", "key=integer"),
                                           ("add:repeat=2:repeat=3", "each key once"), ("sub:repeat=2", "a task name")])
def test_bad_task_specs_are_refused_naming_what_is_allowed(spec, message):
    from rlvrlab.lm.tasks import check_task_spec

    with pytest.raises(ValueError, match=message):
        check_task_spec(spec)
