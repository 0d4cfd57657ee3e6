"""The rules every generator shares: one seed derivation, one stop rule (cotdistill.core.sampling)."""

from __future__ import annotations

import os
import subprocess
import sys

from cotdistill.evaluation.generation import finish_text, stops
from cotdistill.core.sampling import Request, SamplingParams, derive_seed, stop_index


def test_a_derived_seed_is_the_same_in_every_process_and_fits_31_bits():
    # Pinned values: a change here changes every sample a run draws (and what a rerun reproduces).
    assert derive_seed(0, 1) == 709825519  # what teacher samples were seeded with before the one rule
    assert derive_seed(7, 0, [{"role": "user", "content": "Q"}]) == 910112583
    code = "from cotdistill.core.sampling import derive_seed; print(derive_seed(7, 0, 'Q: x'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert int(other) == derive_seed(7, 0, "Q: x")
    seeds = {derive_seed(s, k) for s in range(5) for k in range(50)}
    assert len(seeds) == 250 and all(0 <= x < 2**31 for x in seeds)
    assert derive_seed("0:1") != derive_seed(0, 1)  # parts are kept apart, not joined into one string


def test_a_request_seed_depends_on_the_run_seed_and_the_sample_only():
    params = SamplingParams(temperature=0.7, seed=3)
    assert Request("a", params, 1).seed == Request([{"role": "user", "content": "b"}], params, 1).seed == derive_seed(3, 1)
    assert Request("a", params, 0).seed != Request("a", params, 1).seed


def test_text_is_cut_at_the_earliest_stop_string_whatever_their_order():
    assert stop_index("so 4.\n\nQ: next", ("\n\nQ:",)) == 5
    assert stop_index("no stop here", ("\n\nQ:", "###")) is None
    # "bXY" begins before "Yc": the cut keeps nothing of either, in either order of the list.
    assert stop_index("abXYc", ("Yc", "bXY")) == stop_index("abXYc", ("bXY", "Yc")) == 1
    assert finish_text("abXYc", ("Yc", "bXY")) == "a"
    assert stops("abXYc", ("bXY",)) and not stops("abXYc", ("Q:",))
