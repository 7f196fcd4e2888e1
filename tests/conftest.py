import os
import warnings

import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# The verifier's time bound is what these properties test, not hypothesis' own per-example deadline.
settings.register_profile("ccpo", deadline=None, max_examples=60, derandomize=True)
settings.load_profile("ccpo")

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(autouse=True)
def _quiet_pettingzoo_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny random Qwen2 + tokenizer built in-process (head_dim 32, vocab ~400)."""
    from ccpo_agents.testing import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_model):
    """One real vLLM engine (CPU) for the whole session, serving adapters for the agents of every shipped env."""
    from ccpo_agents.vllm_backend import VLLMPolicy

    roles = ["thinker_0", "reasoner_0", "voter_0", "voter_1", "voter_2", "debater_0", "debater_1", "debater_2",
             "agent_0", "agent_1", "agent_2", "proposer_0", "reviewer_0"]  # the last two: the README's topology
    return VLLMPolicy(tiny_model, roles, max_model_len=768, max_lora_rank=8, seed=0)
