"""Task sources: deterministic ``(seed, index) -> Task`` with disjoint train / eval / test splits.

Three kinds, one protocol (:class:`TaskSource`):

* :class:`ReasoningGymSource` - any reasoning-gym generator by name and config. Splits are disjoint *by
  construction*: a question's split is a hash of its text, so the same question can never land in two splits
  (reasoning-gym's item ``i`` of seed ``s`` reuses the RNG of item ``i+1`` of seed ``s-1``, so seed-based splits
  would overlap).
* :class:`HubSource` - fixed benchmarks (GSM8K, MATH, MATH-500, AIME 2024/2025, AMC23, Minerva, LogiQA) from the
  HF hub, or from local files in the same format (``path=``) for offline use.
* :class:`ListSource` - your own records; or implement :class:`TaskSource` yourself and :func:`register_source` it.

:class:`MixtureSource` interleaves several sources round-robin. :func:`make_source` builds any of them by name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ccpo_envs.task import Task
from ccpo_envs.verify import (
    DEFAULT_MODES,
    ChoiceVerifier,
    MathVerifier,
    ReasoningGymVerifier,
    Verifier,
    extract_boxed,
)

SPLITS = ("train", "eval", "test")


@runtime_checkable
class TaskSource(Protocol):
    """What an environment needs from a task source.

    ``source[i]`` must be a pure function of the source's construction arguments (name, config, split, seed) and
    ``i``: same arguments, same task, on any machine.
    """

    name: str
    split: str
    verifier: Verifier

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Task: ...


def split_of(question: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """The split a question belongs to: a stable hash of its text mapped to ``fractions`` (train, eval, test)."""
    h = int.from_bytes(hashlib.sha256(question.encode("utf-8", "replace")).digest()[:8], "big") / 2**64
    if h < fractions[0]:
        return "train"
    return "eval" if h < fractions[0] + fractions[1] else "test"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")


# ------------------------------------------------------------------------------------------ reasoning-gym

#: Default task sets (SPEC: a math set and a logic set). Values: (reasoning-gym name, config).
RG_SETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "math": [("basic_arithmetic", {}), ("chain_sum", {}), ("gsm_symbolic", {})],
    "logic": [("knights_knaves", {}), ("syllogism", {}), ("propositional_logic", {})],
    # One-digit + - * (the CPU preset's task: SmolLM2-135M gets ~65 % greedy as a dyad, ~40 % at T=0.7, so most
    # GRPO groups are mixed and carry a gradient). A small problem space: ~36 distinct eval and test questions.
    "arith_1d": [
        ("basic_arithmetic", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1, operators=("+", "-", "*"),
                                  allow_parentheses=False, allow_negation=False)),
    ],
    # 1-2 digit addition/subtraction (harder for SmolLM2-135M: ~40 % greedy as a dyad).
    "arith_easy": [
        ("basic_arithmetic", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2, operators=("+", "-"),
                                  allow_parentheses=False, allow_negation=False)),
    ],
}


class ReasoningGymSource:
    """One reasoning-gym generator, one split.

    Args:
        dataset: reasoning-gym dataset name (``sorted(reasoning_gym.factory.DATASETS)`` lists them).
        config: keyword config for that dataset.
        split: ``train``, ``eval`` or ``test``.
        seed: generator seed; item ``i`` of the split is the ``i``-th generated item whose question hashes into it.
        size: number of tasks in this split (``eval`` and ``test`` hold distinct questions; ``train`` may repeat
            one, as the generator does).
        modes: answer extraction modes for the verifier.
        fractions: split fractions (train, eval, test).
    """

    def __init__(self, dataset: str, config: Mapping[str, Any] | None = None, split: str = "train", seed: int = 0,
                 size: int = 1000, modes: Sequence[str] = DEFAULT_MODES,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)):
        import reasoning_gym

        _check_split(split)
        if dataset not in reasoning_gym.factory.DATASETS:
            raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; see sorted(reasoning_gym.factory.DATASETS)")
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.name = dataset
        self.split = split
        self.seed = seed
        self.size = size
        self.fractions = fractions
        # The split keeps about fractions[split] of the generated stream, so the generator must reach well past
        # `size` items (some generators allocate per item up front, so no larger than needed).
        self._stream_len = 100 * size + 1000
        self._rg = reasoning_gym.create_dataset(dataset, size=self._stream_len, seed=seed, **dict(config or {}))
        self.verifier: Verifier = ReasoningGymVerifier(self._rg, modes)
        self._items: list[Task] = []
        self._seen: set[str] = set()
        self._cursor = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> Task:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} of size {self.size}")
        while len(self._items) <= index:
            if self._cursor >= self._stream_len:
                raise RuntimeError(f"{self.name}: could not find {index + 1} distinct {self.split} items; the "
                                   "generator's problem space is too small for this split size: ask for fewer "
                                   "(eval_size / --size) or widen the generator's config")
            entry = self._rg[self._cursor]
            self._cursor += 1
            if split_of(entry["question"], self.fractions) != self.split:
                continue
            if self.split != "train":  # held-out items are distinct questions
                if entry["question"] in self._seen:
                    continue
                self._seen.add(entry["question"])
            meta = entry.get("metadata") or {}
            gold = entry["answer"]
            if gold is None:  # e.g. propositional_logic: any valid answer scores 1; keep the example one
                gold = meta.get("example_answer", "")
            self._items.append(Task(str(entry["question"]), str(gold), {
                "source": self.name, "split": self.split, "seed": self.seed, "index": len(self._items),
                "rg_answer": entry["answer"], "rg_metadata": meta,
            }))
        return self._items[index]


# --------------------------------------------------------------------------------------------------- hub


def _gsm8k_answer(row: Mapping[str, Any]) -> str:
    return str(row["answer"]).split("####")[-1].strip().replace(",", "")


def _math_answer(row: Mapping[str, Any]) -> str:
    if row.get("answer") not in (None, ""):
        return str(row["answer"])
    got = extract_boxed(str(row["solution"]))
    if got is None:
        raise ValueError("MATH row has no \\boxed answer in its solution")
    return got


def _logiqa_question(row: Mapping[str, Any]) -> str:
    opts = "\n".join(f"{'ABCD'[i]}. {o}" for i, o in enumerate(row["options"]))
    return f"{row['context']}\n\n{row['query']}\n\n{opts}\n\nAnswer with the letter of the correct option."


@dataclass(frozen=True)
class HubSpec:
    """How one hub benchmark maps to :class:`Task` records.

    Attributes:
        hub_id: dataset id on the HF hub.
        config: dataset config name (``None`` for the default).
        splits: our split name -> the dataset's split name. ``eval`` is carved out of ``train`` by question hash
            when the dataset has no validation split of its own.
        question: row -> question text.
        answer: row -> gold answer string.
        kind: ``math`` (MathVerifier) or ``choice`` (ChoiceVerifier).
    """

    hub_id: str
    config: str | None
    splits: Mapping[str, str]
    question: Callable[[Mapping[str, Any]], str]
    answer: Callable[[Mapping[str, Any]], str]
    kind: str = "math"


HUB_SPECS: dict[str, HubSpec] = {
    "gsm8k": HubSpec("openai/gsm8k", "main", {"train": "train", "eval": "train", "test": "test"},
                     lambda r: r["question"], _gsm8k_answer),
    "hendrycks_math": HubSpec("EleutherAI/hendrycks_math", None, {"train": "train", "eval": "train", "test": "test"},
                    lambda r: r["problem"], _math_answer),
    "math500": HubSpec("HuggingFaceH4/MATH-500", None, {"test": "test"}, lambda r: r["problem"], _math_answer),
    "aime2024": HubSpec("HuggingFaceH4/aime_2024", None, {"test": "train"}, lambda r: r["problem"],
                        lambda r: str(r["answer"])),
    "aime2025": HubSpec("yentinglin/aime_2025", None, {"test": "train"}, lambda r: r["problem"],
                        lambda r: str(r["answer"])),
    "amc23": HubSpec("math-ai/amc23", None, {"test": "test"}, lambda r: r["question"], lambda r: str(r["answer"])),
    "minerva": HubSpec("math-ai/minervamath", None, {"test": "test"}, lambda r: r["question"],
                       lambda r: str(r["answer"])),
    "gaokao2023en": HubSpec("MARIO-Math-Reasoning/Gaokao2023-Math-En", None, {"test": "train"},
                            lambda r: r["question"], lambda r: str(r["answer"])),
    "logiqa": HubSpec("lucasmccabe/logiqa", None, {"train": "train", "eval": "validation", "test": "test"},
                      _logiqa_question, lambda r: "ABCD"[int(r["correct_option"])], kind="choice"),
}


def _load_rows(spec: HubSpec, name: str, split: str, path: str | os.PathLike | None) -> list[Mapping[str, Any]]:
    import datasets

    if path is not None:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{name}: local file {path!r} does not exist; pass path= to a .jsonl/.json/"
                                    f".parquet/.csv file with the columns of {spec.hub_id}")
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        builder = {"jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}.get(ext)
        if builder is None:
            raise ValueError(f"{name}: cannot read {path!r}; use a .jsonl, .json, .parquet or .csv file")
        return list(datasets.load_dataset(builder, data_files=path, split="train"))
    try:
        return list(datasets.load_dataset(spec.hub_id, spec.config, split=spec.splits[split]))
    except Exception as e:
        raise RuntimeError(f"{name}: could not load {spec.hub_id!r} from the hub ({type(e).__name__}: {e}). "
                           f"Offline? Download it once and pass path= to a local file in the same format.") from e


class HubSource:
    """A fixed benchmark from the hub or a local file, one split, in a seed-determined order.

    Args:
        name: a key of :data:`HUB_SPECS`.
        split: ``train``/``eval``/``test``; must be one the benchmark has (see ``HUB_SPECS[name].splits``).
        seed: order of the items (a permutation drawn from this seed); ``None`` keeps file order.
        path: local file with the same columns as the hub dataset (for offline use); ``None`` loads from the hub.
        size: keep only the first ``size`` items (after ordering).
        modes: answer extraction modes (math benchmarks).
    """

    def __init__(self, name: str, split: str = "test", seed: int | None = 0, path: str | os.PathLike | None = None,
                 size: int | None = None, modes: Sequence[str] = DEFAULT_MODES):
        import numpy as np

        _check_split(split)
        if name not in HUB_SPECS:
            raise ValueError(f"unknown hub benchmark {name!r}; choose from {sorted(HUB_SPECS)}")
        spec = HUB_SPECS[name]
        if split not in spec.splits:
            raise ValueError(f"{name} has no {split!r} split; it has {sorted(spec.splits)}")
        self.name, self.split, self.seed = name, split, seed
        rows = _load_rows(spec, name, split, path)
        carve = split in ("train", "eval") and spec.splits.get("train") == spec.splits.get("eval")
        tasks = []
        for i, row in enumerate(rows):
            q = spec.question(row)
            if carve and split_of(q, (0.9, 0.1, 0.0)) != split:
                continue  # eval is a hash-carved tenth of train, disjoint by construction
            tasks.append((q, spec.answer(row), i))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(len(tasks))
            tasks = [tasks[j] for j in order]
        if size is not None:
            tasks = tasks[:size]
        self._tasks = [Task(q, a, {"source": name, "split": split, "seed": seed, "index": k, "row": i})
                       for k, (q, a, i) in enumerate(tasks)]
        self.verifier: Verifier = ChoiceVerifier() if spec.kind == "choice" else MathVerifier(modes)

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:
        return self._tasks[index]


# ------------------------------------------------------------------------------------------ user / mixture


class ListSource:
    """Your own tasks: any iterable of :class:`Task` or ``{question, answer[, metadata]}`` dicts."""

    def __init__(self, records: Iterable[Task | Mapping[str, Any]], verifier: Verifier | None = None,
                 name: str = "list", split: str = "train"):
        self.name, self.split = name, split
        self.verifier = verifier or MathVerifier()
        self._tasks = []
        for i, r in enumerate(records):
            if not isinstance(r, Task):
                r = Task(str(r["question"]), str(r["answer"]), dict(r.get("metadata") or {}))
            meta = {"source": name, "split": split, "index": i, **dict(r.metadata)}
            self._tasks.append(Task(r.question, r.answer, meta))
        if not self._tasks:
            raise ValueError(f"ListSource {name!r} got no records")

    def __len__(self) -> int:
        return len(self._tasks)

    def __getitem__(self, index: int) -> Task:
        return self._tasks[index]


class _RoutingVerifier:
    """Routes each task to the verifier of the sub-source it came from (``metadata['mixture_part']``)."""

    def __init__(self, parts: Sequence[TaskSource]):
        self.parts = parts

    def _v(self, task: Task | None) -> Verifier:
        return self.parts[task.metadata["mixture_part"] if task is not None else 0].verifier

    def extract(self, text: str) -> str | None:
        return self.parts[0].verifier.extract(text)

    def extract_for(self, text: str, task: Task) -> str | None:
        return self._v(task).extract(text)

    def score_answer(self, answer: str, task: Task) -> float:
        return self._v(task).score_answer(answer, task)

    def equivalent(self, a: str, b: str) -> bool:
        return self.parts[0].verifier.equivalent(a, b)


class MixtureSource:
    """Several sources interleaved round-robin: item ``i`` is item ``i // k`` of part ``i % k``."""

    def __init__(self, parts: Sequence[TaskSource], name: str = "mixture"):
        if not parts:
            raise ValueError("MixtureSource needs at least one part")
        splits = {p.split for p in parts}
        if len(splits) != 1:
            raise ValueError(f"MixtureSource parts must share one split, got {sorted(splits)}")
        self.parts = list(parts)
        self.name, self.split = name, parts[0].split
        self.verifier = _RoutingVerifier(self.parts)
        self._len = len(parts) * min(len(p) for p in parts)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Task:
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self.name} of size {self._len}")
        k = len(self.parts)
        t = self.parts[index % k][index // k]
        return Task(t.question, t.answer, {**dict(t.metadata), "mixture_part": index % k, "mixture_index": index})


def task_verifier(source: TaskSource, task: Task) -> Verifier:
    """The verifier that scores ``task`` (for a mixture: the one of the part it came from)."""
    v = source.verifier
    return v._v(task) if isinstance(v, _RoutingVerifier) else v


# ----------------------------------------------------------------------------------------------- registry

_USER_SOURCES: dict[str, Callable[..., TaskSource]] = {}


def register_source(name: str, factory: Callable[..., TaskSource]) -> None:
    """Make ``make_source(name, split=..., seed=..., size=..., **kw)`` call ``factory(split=..., seed=..., size=...,
    **kw)``: ``split`` is ``train``, ``eval`` or ``test``; ``size`` the number of tasks asked (an int, 1000 when the
    caller gave none; a factory may return fewer); ``kw`` the source options the caller passed, which for ccpo's
    trainer is ``modes=`` (answer-extraction modes) unless ``task_path`` is set (then ``path=``)."""
    _USER_SOURCES[name] = factory


def make_source(name: str, split: str = "train", seed: int = 0, size: int | None = None, **kwargs: Any
                ) -> TaskSource:
    """Build a task source by name.

    Names: a task set of :data:`RG_SETS` (``math``, ``logic``, ``arith_easy``); ``rg:<dataset>`` for one
    reasoning-gym generator (``config=`` a dict); a benchmark of :data:`HUB_SPECS` (``path=`` a local file for
    offline use); or a name given to :func:`register_source`. ``size``: how many tasks (generated sources and
    registered factories: 1000 if not given; hub benchmarks: the first ``size`` of the seeded order, all if not
    given).
    """
    _check_split(split)
    if name in HUB_SPECS:
        return HubSource(name, split, seed, size=size, **kwargs)
    size = 1000 if size is None else size
    if name in _USER_SOURCES:
        return _USER_SOURCES[name](split=split, seed=seed, size=size, **kwargs)
    if name in RG_SETS:
        parts = RG_SETS[name]
        per = max(1, -(-size // len(parts)))
        modes = kwargs.pop("modes", DEFAULT_MODES)
        if kwargs:
            raise TypeError(f"unexpected arguments for task set {name!r}: {sorted(kwargs)}")
        srcs = [ReasoningGymSource(ds, cfg, split, seed, per, modes) for ds, cfg in parts]
        return srcs[0] if len(srcs) == 1 else MixtureSource(srcs, name=name)
    if name.startswith("rg:"):
        return ReasoningGymSource(name[3:], kwargs.pop("config", None), split, seed, size, **kwargs)
    raise ValueError(f"unknown task source {name!r}; choose from {sorted(RG_SETS)}, 'rg:<dataset>', "
                     f"{sorted(HUB_SPECS)} or a name given to register_source()")
