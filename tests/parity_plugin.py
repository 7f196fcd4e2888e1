"""A plug-in module for tests: registers the task source ``parity_stub`` (import it, or pass
``--plugins parity_plugin`` with this folder on PYTHONPATH)."""

from ccpo_envs import ListSource, register_source


class ParityVerifierStub:
    """Test double for the verifier (what the trainer tests are not about): a random-init model never solves
    arithmetic, so reward 1 goes to answers of even length - about half the samples - giving GRPO groups a spread."""

    def extract(self, text):
        return text.strip() or None

    def score_answer(self, answer, task):
        return float(len(answer) % 2 == 0)

    def equivalent(self, a, b):
        return a == b


def parity_source(split, seed, size, **kw):
    return ListSource([{"question": f"Calculate {i} + {i % 7}.", "answer": str(i + i % 7)} for i in range(size)],
                      verifier=ParityVerifierStub(), name="parity", split=split)


register_source("parity_stub", parity_source)
