"""Answer extraction and verification: text in, a score in [0, 1] out, never an exception.

Three verifiers share one protocol (:class:`Verifier`):

* :class:`MathVerifier` - gold-answer equivalence: exact/normalised match, exact rational arithmetic, then
  math-verify symbolic equivalence in a killable subprocess with a hard time bound (safe from any thread).
* :class:`ChoiceVerifier` - multiple choice (option letters).
* :class:`ReasoningGymVerifier` - reasoning-gym's own scorer for its tasks; a scorer that raises scores 0.

Every public scoring entry point goes through :func:`safe_score`, which maps any failure to 0.0.
"""

from __future__ import annotations

import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Protocol

from ccpo_envs.task import Task

#: Extracted answers longer than this are never sent to the symbolic checker (no real answer is this long).
MAX_SYMBOLIC_CHARS = 400
#: Answers are cut to this length before any scorer sees them.
MAX_ANSWER_CHARS = 4096
#: Default hard time bound (seconds) for the answer of one symbolic equivalence check by a warm worker. Right after a
#: check timed out (its worker is killed), the next check also waits for the warm standby that replaces it (about
#: 1 s idle, a few seconds on a loaded machine; at most ``startup_timeout``), so that a correct answer is never
#: scored 0 because a cold worker was slow.
DEFAULT_SYMBOLIC_TIMEOUT = 0.5

# ----------------------------------------------------------------------------------------------- extraction

_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|[{}]")
_BOX_SPACE = re.compile(r"\\boxed +([^\s$]+)")
_HASH = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS = re.compile(r"(?i)(?:final answer|answer)\s*(?:is|:)\s*:?\s*([^\n]{1,200})")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces included; ``None`` if none closes.

    One linear pass with a brace stack, so hostile input (100k nested braces) costs O(n).

    >>> extract_boxed(r"so \\boxed{\\frac{1}{2}} and then \\boxed{42}")
    '42'
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    stack: list[tuple[bool, int]] = []  # (opened by \boxed, content start)
    best: tuple[int, str] | None = None
    for m in _BOX_TOKENS.finditer(text):
        tok = m.group()
        if tok == "}":
            if not stack:
                continue
            is_box, start = stack.pop()
            if is_box and (best is None or start > best[0]):
                best = (start, text[start : m.start()])
        else:
            stack.append((tok != "{", m.end()))
    if best is not None:
        return best[1].strip()
    spaced = _BOX_SPACE.findall(text)  # "\boxed 5" (no braces)
    return spaced[-1] if spaced else None


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = None
    for found in pattern.finditer(text):
        pass
    return found.group(1).strip() if found else None


def _answer_is(text: str) -> str | None:
    got = _last(_ANSWER_IS, text)
    if got is None:
        return None
    got = got.strip().strip("$").rstrip(".").strip()
    return got or None


def _last_number(text: str) -> str | None:
    found = None
    for found in _NUMBER.finditer(text):
        pass
    return found.group().replace(" ", "") if found else None


#: Extraction modes, tried in the order given.
EXTRACTORS = {
    "boxed": extract_boxed,
    "hash": lambda t: _last(_HASH, t) or None,
    "answer_is": _answer_is,
    "last_number": _last_number,
}
DEFAULT_MODES: tuple[str, ...] = ("boxed", "hash", "answer_is")


def extract_answer(text: str, modes: Sequence[str] = DEFAULT_MODES) -> str | None:
    """The answer in ``text``: the first mode of ``modes`` that finds one (see :data:`EXTRACTORS`)."""
    for mode in modes:
        got = EXTRACTORS[mode](text)
        if got:
            return got[:MAX_ANSWER_CHARS]
    return None


_CHOICE_PATTERNS = (
    r"\\boxed\s*\{\s*\(?([{L}])\)?\s*\}",
    r"(?i:answer\s*(?:is|:)?\s*:?\s*\(?([{L}])\b\)?)",
    r"\(([{L}])\)",
    r"(?<![A-Za-z])([{L}])(?![A-Za-z])",
)


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """The option letter chosen in ``text``: boxed letter, "answer is (X)", "(X)", then a last standalone letter."""
    for pat in _CHOICE_PATTERNS:
        got = _last(re.compile(pat.replace("{L}", re.escape(letters))), text)
        if got:
            return got.upper()
    return None


# --------------------------------------------------------------------------------------------- normalising

_STRIP = [
    (re.compile(r"\\text\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\(?:mathrm|textbf|mathbf)\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\[,;:! ]"), ""),
    (re.compile(r"\\(?:left|right)"), ""),
    (re.compile(r"\^\{?\\circ\}?"), ""),
    (re.compile(r"\\d?frac"), r"\\frac"),
]


def normalize_answer(ans: str) -> str:
    """Canonical string form used for exact matching and vote grouping keys."""
    s = ans.strip()
    for pat, rep in _STRIP:
        s = pat.sub(rep, s)
    s = s.strip().strip("$").strip()
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", " ", s)
    return s.lower()


_FRAC = re.compile(r"^\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_PLAIN_NUM = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d{1,3})?$")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")


def parse_number(ans: str) -> Fraction | None:
    """Exact rational value of a plain numeric answer (``42``, ``-3.5``, ``1,000``, ``3/4``, ``\\frac{3}{4}``)."""
    s = normalize_answer(ans).replace(" ", "")
    if len(s) > 64:
        return None
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    try:
        if _PLAIN_NUM.match(s):
            return Fraction(s)
        m = _FRAC.match(s)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if s.count("/") == 1:
            a, b = s.split("/")
            if _PLAIN_NUM.match(a) and _PLAIN_NUM.match(b):
                return Fraction(a) / Fraction(b)
    except (ValueError, ZeroDivisionError):
        return None
    return None


# ----------------------------------------------------------------------------------------- symbolic check


class SymbolicChecker:
    """math-verify equivalence in a child process, with a hard per-call time bound, usable from any thread.

    A call that runs past ``timeout`` kills the child and answers ``False``; the next call starts a new one (a
    warm standby is kept so that the next call does not pay the start-up). Workers answer ``ready`` only after one
    real check (sympy's first comparison is the slow one), so ``timeout`` bounds the answer of a warm worker;
    waiting for a replacement to be ready is bounded separately by ``startup_timeout``.
    """

    def __init__(self, timeout: float = DEFAULT_SYMBOLIC_TIMEOUT, startup_timeout: float = 60.0):
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._standby: subprocess.Popen | None = None

    def _spawn(self) -> subprocess.Popen:
        # A scrubbed environment: what Python needs to start, nothing else (no tokens or keys reach the worker).
        keep = ("PATH", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR",
                "CCPO_MV_CPU_SECONDS", "CCPO_MV_MEMORY_BYTES")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(PYTHONUNBUFFERED="1", CCPO_PARENT_PID=str(os.getpid()))
        return subprocess.Popen(
            [sys.executable, "-m", "ccpo_envs._mv_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            env=env,
        )

    @staticmethod
    def _readline(proc: subprocess.Popen, deadline: float) -> str | None:
        assert proc.stdout is not None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                line = proc.stdout.readline()
                return line if line else None

    def _ready_proc(self, deadline: float) -> subprocess.Popen | None:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._standby if self._standby is not None and self._standby.poll() is None else self._spawn()
            self._standby = None
            if self._readline(self._proc, deadline) != "ready\n":
                self._kill(self._proc)
                self._proc = None
                return None
        if self._standby is None:
            self._standby = self._spawn()  # warms up in the background
        return self._proc

    @staticmethod
    def _kill(proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def equal(self, pred: str, gold: str, timeout: float | None = None) -> bool:
        """Whether math-verify shows ``pred`` and ``gold`` equal within the time bound."""
        budget = self.timeout if timeout is None else timeout
        with self._lock:
            first_start = self._proc is None
            deadline = time.monotonic() + (self.startup_timeout if first_start else 0) + budget
            # Waiting for a worker to be ready (the first start, or a warm standby replacing a killed worker) is
            # bounded by startup_timeout and not charged to the answer's budget, which starts once it is ready.
            proc = self._ready_proc(deadline if first_start else time.monotonic() + self.startup_timeout)
            if proc is None:
                return False
            deadline = time.monotonic() + budget
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"gold": gold, "pred": pred}) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill(proc)
                self._proc = None
                return False
            line = self._readline(proc, deadline)
            if line is None:  # timed out or died: kill it, the standby takes over next call
                self._kill(proc)
                self._proc = None
                return False
            return line.strip() == "1"

    def close(self) -> None:
        with self._lock:
            for p in (self._proc, self._standby):
                if p is not None:
                    try:
                        p.stdin.close()  # type: ignore[union-attr]
                    except OSError:
                        pass
                    self._kill(p)
            self._proc = self._standby = None

    def __del__(self) -> None:  # best effort; children also exit when their stdin closes
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


_CHECKER: SymbolicChecker | None = None
_CHECKER_LOCK = threading.Lock()


def symbolic_checker() -> SymbolicChecker:
    """The process-wide :class:`SymbolicChecker` (started on first use)."""
    global _CHECKER
    with _CHECKER_LOCK:
        if _CHECKER is None:
            _CHECKER = SymbolicChecker()
        return _CHECKER


def math_equal(pred: str, gold: str, timeout: float | None = None, symbolic: bool = True) -> bool:
    """Whether two answers are mathematically equal: normalised string, exact rational value, then math-verify.

    >>> math_equal("0.5", "\\\\frac{1}{2}", symbolic=False)
    True
    """
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    a, b = parse_number(pred), parse_number(gold)
    if a is not None and b is not None:
        return a == b
    if not symbolic or len(pred) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
        return False
    return symbolic_checker().equal(pred, gold, timeout)


# --------------------------------------------------------------------------------------------- verifiers


class Verifier(Protocol):
    """Scores agents' text against a task. Implementations may raise; callers go through :func:`safe_score`."""

    def extract(self, text: str) -> str | None:
        """The answer in a response, or ``None`` when there is none (an unparseable answer)."""

    def score_answer(self, answer: str, task: Task) -> float:
        """Score in [0, 1] of an extracted answer."""

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers are the same answer (used to group votes)."""


def _clamp(x: Any) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(x):
        return 0.0
    return min(1.0, max(0.0, x))


def safe_extract(verifier: Verifier, text: Any) -> str | None:
    """``verifier.extract`` that never raises (non-strings and failures give ``None``)."""
    if not isinstance(text, str):
        return None
    try:
        got = verifier.extract(text)
    except Exception:  # noqa: BLE001 - malformed model output must never crash a run
        return None
    return got[:MAX_ANSWER_CHARS] if isinstance(got, str) and got.strip() else None


def safe_score_answer(verifier: Verifier, answer: str | None, task: Task) -> float:
    """``verifier.score_answer`` that never raises and always lands in [0, 1]; ``None`` scores 0."""
    if answer is None:
        return 0.0
    try:
        return _clamp(verifier.score_answer(answer[:MAX_ANSWER_CHARS], task))
    except Exception:  # noqa: BLE001
        return 0.0


def safe_score(verifier: Verifier, text: Any, task: Task) -> float:
    """Score of a whole response: extract, then score; any failure is 0.0."""
    return safe_score_answer(verifier, safe_extract(verifier, text), task)


def safe_equivalent(verifier: Verifier, a: str, b: str) -> bool:
    try:
        return bool(verifier.equivalent(a, b))
    except Exception:  # noqa: BLE001
        return False


class MathVerifier:
    """Math answers compared with the gold by :func:`math_equal`.

    Args:
        modes: extraction modes tried in order (keys of :data:`EXTRACTORS`); add ``"last_number"`` for a lenient
            fallback on models that rarely box their answer.
        timeout: hard bound in seconds on one symbolic check.
        symbolic: use math-verify at all (off: string and exact-number matching only).
    """

    def __init__(self, modes: Sequence[str] = DEFAULT_MODES, timeout: float = DEFAULT_SYMBOLIC_TIMEOUT,
                 symbolic: bool = True):
        unknown = [m for m in modes if m not in EXTRACTORS]
        if unknown:
            raise ValueError(f"unknown extraction mode(s) {unknown}; choose from {sorted(EXTRACTORS)}")
        self.modes = tuple(modes)
        self.timeout = timeout
        self.symbolic = symbolic

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.modes)

    def score_answer(self, answer: str, task: Task) -> float:
        return float(math_equal(answer, task.answer, self.timeout, self.symbolic))

    def equivalent(self, a: str, b: str) -> bool:
        return math_equal(a, b, self.timeout, self.symbolic)


class ChoiceVerifier:
    """Multiple choice: the chosen option letter must equal the gold letter."""

    def __init__(self, letters: str = "ABCD"):
        self.letters = letters

    def extract(self, text: str) -> str | None:
        return extract_choice(text, self.letters)

    def score_answer(self, answer: str, task: Task) -> float:
        return float(answer.strip().upper() == task.answer.strip().upper())

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip().upper() == b.strip().upper()


class ReasoningGymVerifier:
    """reasoning-gym's own ``score_answer`` for its tasks (binary by default: a score below ``threshold`` is 0).

    Some reasoning-gym scorers raise on garbage; :func:`safe_score_answer` turns that into 0. reasoning-gym gives
    small partial credit to some wrong answers, hence the threshold.
    """

    def __init__(self, dataset: Any, modes: Sequence[str] = DEFAULT_MODES, threshold: float | None = 1.0):
        self.dataset = dataset
        self.modes = tuple(modes)
        self.threshold = threshold

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.modes)

    def score_answer(self, answer: str, task: Task) -> float:
        entry = {"question": task.question, "answer": task.metadata.get("rg_answer", task.answer),
                 "metadata": task.metadata.get("rg_metadata", {})}
        s = _clamp(self.dataset.score_answer(answer=answer, entry=entry))
        if self.threshold is not None:
            return 1.0 if s >= self.threshold - 1e-9 else 0.0
        return s

    def equivalent(self, a: str, b: str) -> bool:
        return math_equal(a, b, symbolic=False)
