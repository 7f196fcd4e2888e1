"""Task sources: determinism, disjoint splits, loaders on shipped fixtures, every gold answer scores 1."""

import os

import pytest
from conftest import DATA
from hypothesis import given
from hypothesis import strategies as st

from ccpo_envs import (
    HUB_SPECS,
    RG_SETS,
    ListSource,
    MathVerifier,
    MixtureSource,
    Task,
    make_source,
    register_source,
    safe_score,
    split_of,
    task_verifier,
)
from ccpo_envs.sources import HubSource

RG_NAMES = ["math", "logic", "arith_easy"]


def _questions(src):
    return [src[i].question for i in range(len(src))]


@pytest.mark.parametrize("name", RG_NAMES)
def test_reasoning_gym_sources_are_deterministic_and_splits_disjoint(name):
    a = make_source(name, "train", seed=3, size=40)
    b = make_source(name, "train", seed=3, size=40)
    assert [(t.question, t.answer) for t in (a[i] for i in range(len(a)))] == \
           [(t.question, t.answer) for t in (b[i] for i in range(len(b)))]
    splits = {sp: set(_questions(make_source(name, sp, seed=3, size=40))) for sp in ("train", "eval", "test")}
    assert not splits["train"] & splits["eval"]
    assert not splits["train"] & splits["test"]
    assert not splits["eval"] & splits["test"]
    # disjoint by construction: a different seed's eval never meets this seed's train either
    other = set(_questions(make_source(name, "eval", seed=4, size=40)))
    assert not splits["train"] & other
    assert all(split_of(q) == "train" for q in splits["train"])


def _perturb(answer: str, task=None) -> str:
    terms = (task.metadata.get("rg_metadata") or {}).get("knight_knave_terms") if task is not None else None
    if terms:  # knights_knaves: flip the first person's role, in that puzzle's own words
        k, v = str(terms["a_knight"]), str(terms["a_knave"])
        i, j = answer.find(k), answer.find(v)
        if i >= 0 and (j < 0 or i < j):
            return answer.replace(k, v, 1)
        return answer.replace(v, k, 1)
    try:
        return str(int(float(answer)) + 1)
    except ValueError:
        pass
    if answer in "ABCD" and len(answer) == 1:
        return "ABCD"[("ABCD".index(answer) + 1) % 4]
    swaps = {"knight": "knave", "knave": "knight", "saint": "sinner", "sinner": "saint", "Yes": "No", "No": "Yes",
             "True": "False", "False": "True", "hero": "villain", "villain": "hero"}
    for a, b in swaps.items():
        if a in answer:
            return answer.replace(a, b, 1)
    return answer + " + 1"


@pytest.mark.parametrize("name", RG_NAMES + [f"rg:{n}" for n in ("gsm_symbolic", "syllogism", "knights_knaves")])
def test_every_gold_scores_one_and_perturbed_scores_zero(name):
    src = make_source(name, "eval", seed=0, size=30)
    for i in range(len(src)):
        t = src[i]
        v = task_verifier(src, t)
        assert safe_score(v, f"Reasoning... \\boxed{{{t.answer}}}", t) == 1.0, (t.question, t.answer)
        if t.metadata.get("rg_answer", t.answer) is None:
            continue  # propositional_logic: many answers are valid, no single wrong one to build
        wrong = _perturb(t.answer, t)
        assert safe_score(v, f"\\boxed{{{wrong}}}", t) == 0.0, (t.question, t.answer, wrong)


HUB_FIXTURES = sorted(HUB_SPECS)


@pytest.mark.parametrize("name", HUB_FIXTURES)
def test_hub_loaders_read_local_files_in_the_hub_format(name):
    path = os.path.join(DATA, f"{name}.jsonl")
    spec = HUB_SPECS[name]
    split = "test" if "test" in spec.splits else next(iter(spec.splits))
    src = make_source(name, split, seed=0, path=path)
    assert len(src) >= 2
    for i in range(len(src)):
        t = src[i]
        v = task_verifier(src, t)
        assert t.question and t.answer
        assert safe_score(v, f"\\boxed{{{t.answer}}}", t) == 1.0
        assert safe_score(v, f"\\boxed{{{_perturb(t.answer)}}}", t) == 0.0
    # seed sets the order, deterministically
    again = make_source(name, split, seed=0, path=path)
    assert _questions(again) == _questions(src)
    # size= is honoured for hub benchmarks too: the first items of the same order
    assert _questions(make_source(name, split, seed=0, path=path, size=1)) == _questions(src)[:1]


def test_list_source_task_ids_have_no_placeholders():
    from ccpo_envs import ListSource

    src = ListSource([{"question": "q", "answer": "1"}, {"question": "r", "answer": "2"}])
    assert [src[i].task_id for i in range(2)] == ["list/train/0", "list/train/1"]


def test_hub_loader_reads_parquet_and_gives_known_golds(tmp_path):
    import datasets
    ds = datasets.load_dataset("json", data_files=os.path.join(DATA, "gsm8k.jsonl"), split="train")
    pq = tmp_path / "gsm8k.parquet"
    ds.to_parquet(str(pq))
    src = HubSource("gsm8k", "test", seed=None, path=pq)
    assert [src[i].answer for i in range(len(src))] == ["29", "3750", "8", "150"]


def test_hub_loader_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass path="):
        make_source("gsm8k", "test", path=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="has no 'train' split"):
        make_source("math500", "train", path=os.path.join(DATA, "math500.jsonl"))
    with pytest.raises(RuntimeError, match="pass path= to a local file"):
        make_source("gsm8k", "test")  # offline: the hub is unreachable here
    with pytest.raises(ValueError, match="unknown task source"):
        make_source("nope")
    with pytest.raises(ValueError, match="split="):
        make_source("math", "validation")


def test_list_source_mixture_and_registration():
    ls = ListSource([{"question": "1+1?", "answer": "2"}, Task("2+2?", "4")], name="mine")
    assert len(ls) == 2 and ls[1].metadata["index"] == 1
    register_source("mine", lambda split, seed, size, **kw: ListSource([{"question": "q", "answer": "7"}],
                                                                       name="mine", split=split))
    assert make_source("mine", "eval")[0].answer == "7"
    mix = MixtureSource([make_source("rg:chain_sum", "train", size=5), ls_train := ListSource(
        [{"question": f"{i}+0?", "answer": str(i)} for i in range(5)], split="train")])
    assert len(mix) == 10
    assert mix[1].question == ls_train[0].question and mix[3].question == ls_train[1].question
    for i in range(len(mix)):
        t = mix[i]
        assert safe_score(task_verifier(mix, t), f"\\boxed{{{t.answer}}}", t) == 1.0
    with pytest.raises(ValueError, match="no records"):
        ListSource([])
    assert set(RG_SETS) >= {"math", "logic"}


@given(st.text(max_size=300))
def test_split_of_is_a_function_of_the_text(q):
    assert split_of(q) == split_of(str(q)) in ("train", "eval", "test")


def test_reasoning_gym_default_sets_match_spec():
    assert [n for n, _ in RG_SETS["math"]] == ["basic_arithmetic", "chain_sum", "gsm_symbolic"]
    assert [n for n, _ in RG_SETS["logic"]] == ["knights_knaves", "syllogism", "propositional_logic"]
    assert isinstance(task_verifier(make_source("arith_easy", size=3), make_source("arith_easy", size=3)[0]),
                      object)
    assert MathVerifier().modes[0] == "boxed"
