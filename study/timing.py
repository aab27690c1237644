"""How long each step of the study should take, printed before it starts.

Each step's time was measured once on a reference machine (2 quiet CPU cores, the embedded
model; ``REFERENCE``, full and ``--quick`` settings). Here it is scaled by how much slower or
faster one forward pass of the model being studied is on this machine than the embedded model's
was there (:func:`speed`, a fraction of a second), and by how many models a step handles. An
estimate, not a promise: a resumed step that is already done takes no time.
"""

from __future__ import annotations

import time

# Seconds of one calibration forward pass (8 sequences of 64 tokens) of the embedded model on
# the reference machine, the median of 3.
REFERENCE_FORWARD = 0.65

# Seconds per step on the reference machine (study/demo.py's numbering): "per_model" is step
# 9's time per model evaluated, 8 step 8's per variant and control made.
REFERENCE = {  # measured at 3de439c, `actwh demo` and `actwh demo --quick`
    "full": {2: 9, 3: 4, 4: 1, 5: 23, 6: 121, 7: 82, 8: 2.5, "per_model": 20, 10: 58},
    "quick": {2: 10, 3: 3, 4: 1, 5: 3, 6: 17, 7: 29, 8: 4.5, "per_model": 8, 10: 34},
}


def speed(loaded) -> float:
    """How many times longer a forward pass of ``loaded`` takes here than the embedded model's
    on the reference machine."""
    import torch

    ids = torch.randint(0, loaded.adapter.vocab_size, (8, 64), device=loaded.device)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            started = time.perf_counter()
            loaded.model(input_ids=ids)
            times.append(time.perf_counter() - started)
    return sorted(times)[1] / REFERENCE_FORWARD


def expected(step: int | str, quick: bool, factor: float, count: int = 1) -> float:
    """Seconds step ``step`` should take: its reference time × ``factor`` × ``count``."""
    return REFERENCE["quick" if quick else "full"][step] * factor * count


def shown(seconds: float) -> str:
    """``about 40 s``, ``about 3 min``."""
    if seconds < 90:
        return f"about {max(5, round(seconds / 5) * 5):.0f} s"
    return f"about {seconds / 60:.0f} min"
