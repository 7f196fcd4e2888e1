"""Answer extraction and verification: examples, then hypothesis properties (never raises, bounded time)."""

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccpo_envs import ChoiceVerifier, MathVerifier, Task, extract_boxed, extract_choice, math_equal, safe_score
from ccpo_envs.verify import extract_answer, parse_number, symbolic_checker

MATH = MathVerifier()


@pytest.mark.parametrize("text,want", [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{a{b{c}}d}", "a{b{c}}d"),
    (r"\boxed{5} and a cut-off \boxed{", "5"),
    (r"\fbox{7}", "7"),
    (r"\boxed 9", "9"),
    ("no box here", None),
    ("\\boxed{" * 1000, None),
])
def test_extract_boxed(text, want):
    assert extract_boxed(text) == want


def test_extract_fallbacks_are_ordered_and_configurable():
    text = "work...\n#### 1,234\nThe answer is 99"
    assert extract_answer(text) == "1,234"
    assert extract_answer("The answer is 99.", ("boxed", "hash", "answer_is")) == "99"
    assert extract_answer("3 + 4 = 7", ("boxed",)) is None
    assert extract_answer("3 + 4 = 7", ("boxed", "last_number")) == "7"
    with pytest.raises(ValueError, match="unknown extraction mode"):
        MathVerifier(modes=("boxed", "nope"))


@pytest.mark.parametrize("text,want", [
    ("The answer is (B).", "B"), (r"\boxed{C}", "C"), ("I pick D", "D"), ("(a) no", None), ("answer: a", "A"),
])
def test_extract_choice(text, want):
    assert extract_choice(text) == want


@pytest.mark.parametrize("a,b,eq", [
    ("0.5", r"\frac{1}{2}", True), ("1,000", "1000", True), ("3/4", "0.75", True), ("-2", "-2.0", True),
    (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2", True), ("x+1", "1+x", True), ("41", "42", False),
    (r"5\sqrt{2}", r"\sqrt{50}", True), (r"\text{Yes}", "yes", True), ("2", "3", False),
])
def test_math_equal(a, b, eq):
    assert math_equal(a, b) is eq


def test_parse_number():
    from fractions import Fraction
    assert parse_number("1,234.5") == Fraction("1234.5")
    assert parse_number(r"\frac{3}{-4}") == Fraction(-3, 4)
    assert parse_number("12,34") is None
    assert parse_number("1/0") is None


def _task(answer):
    return Task("q", answer, {"source": "t"})


hostile = st.sampled_from([
    r"\boxed{10^{10^{10^{10^{10}}}}}",
    r"\boxed{2^{2^{2^{2^{2^{2^{2}}}}}}}",
    r"\boxed{99999999999!}",
    r"\boxed{\frac{" * 200 + "1" + "}{2}" * 200 + "}",
    r"\boxed{\sum_{n=1}^{\infty} n^{n^{n}}}",
    r"\boxed{\left(\left(\left(" * 50 + "}",
    "{" * 50_000 + "}" * 50_000,
    r"\boxed{" + "x^" * 300 + "2}",
])


@given(st.one_of(
    st.text(max_size=2000),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=500).map(lambda s: r"\boxed{" + s + "}"),
    st.integers(1, 200).map(lambda n: "\\boxed{" + "{" * n + "7" + "}" * n + "}"),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.just(100_000 // 5)),
    hostile,
), st.sampled_from(["42", r"\frac{1}{2}", "x^2+1", r"5\sqrt{2}"]))
def test_math_verifier_never_raises_and_is_bounded(text, gold):
    """Bounded: the answer within the 0.5 s budget of a warm worker, plus - right after a hostile answer killed
    the worker - the wait for the warm standby (about 1 s idle, more on a loaded machine, at most its
    ``startup_timeout``): correctness over latency (issue 11). The hard bound is what is asserted, so that the test
    holds on a machine busy with other work (a vLLM engine spinning on every core took a standby past 3 s)."""
    from ccpo_envs.verify import symbolic_checker

    checker = symbolic_checker()
    t0 = time.monotonic()
    s = safe_score(MATH, text, _task(gold))
    assert 0.0 <= s <= 1.0
    assert time.monotonic() - t0 < checker.timeout + checker.startup_timeout, "past the verifier's documented bound"


@given(st.one_of(st.text(max_size=5000), hostile, st.binary(max_size=100), st.integers(), st.none()))
def test_choice_verifier_never_raises(text):
    s = safe_score(ChoiceVerifier(), text, _task("B"))
    assert s in (0.0, 1.0)


def test_symbolic_check_is_bounded_off_the_main_thread():
    """math-verify uses SIGALRM, which only works on the main thread; ours runs in a killable child process."""
    symbolic_checker().equal("1", "1")  # warm up
    out = {}

    def work():
        t0 = time.monotonic()
        out["hostile"] = math_equal(r"2^{2^{2^{2^{2^{2^{2}}}}}}", "x+y")
        out["t_hostile"] = time.monotonic() - t0
        t0 = time.monotonic()
        out["legit"] = math_equal(r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2")
        out["t_legit"] = time.monotonic() - t0

    th = threading.Thread(target=work)
    th.start()
    th.join(10)
    assert not th.is_alive()
    assert out["hostile"] is False and out["t_hostile"] < 1.0
    assert out["legit"] is True and out["t_legit"] < 1.0  # the warm standby took over after the kill


@given(st.integers(-10**6, 10**6), st.integers(1, 1000))
def test_wrong_numbers_score_zero_right_numbers_one(n, delta):
    t = _task(str(n))
    assert safe_score(MATH, f"so \\boxed{{{n}}}", t) == 1.0
    assert safe_score(MATH, f"so \\boxed{{{n + delta}}}", t) == 0.0


def test_symbolic_worker_dies_with_its_parent_and_gets_no_secrets(tmp_path):
    """A SIGKILLed parent must not leave a worker burning a core on a hostile expression; the worker's environment
    holds no keys."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys, threading, time\n"
        "from ccpo_envs.verify import SymbolicChecker\n"
        "c = SymbolicChecker(timeout=600)\n"
        "assert c.equal('1/2', '0.5')\n"
        "print(c._proc.pid, c._standby.pid, flush=True)\n"
        "threading.Thread(target=c.equal, args=('9^{9^{9^{9}}}', '1'), daemon=True).start()\n"
        "time.sleep(600)\n")
    env = dict(os.environ, CCPO_TEST_SECRET_TOKEN="hunter2")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    pids = [int(x) for x in parent.stdout.readline().split()]
    assert len(pids) == 2
    for pid in pids:
        assert b"hunter2" not in open(f"/proc/{pid}/environ", "rb").read()
    time.sleep(1)  # the hostile check is running in the worker now
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 20

    def alive(pid):
        try:
            return "State:\tZ" not in open(f"/proc/{pid}/status").read()
        except OSError:
            return False

    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "verifier workers outlived their SIGKILLed parent"


@pytest.mark.slow
def test_correct_answer_after_a_hostile_one_scores_one_under_cpu_load():
    """A timed-out check kills its worker; the warm standby that replaces it must answer the next (correct) check
    within the budget even on a busy machine."""
    import subprocess
    import sys

    from ccpo_envs.verify import SymbolicChecker

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        checker = SymbolicChecker(timeout=0.5)
        assert checker.equal("1/2", "0.5")
        for _ in range(3):
            assert not checker.equal("9^{9^{9^{9}}}", "1")  # times out, worker killed
            assert checker.equal("\\frac{1}{2}", "0.5"), "a correct answer after a hostile one scored 0"
    finally:
        for b in burners:
            b.kill()
            b.wait()
