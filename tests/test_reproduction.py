"""The refactor to one pruning plan changed no result: a small grid of ``xlprune prune`` and ``iterate``
commands on the smoke classifier measures exactly what the code before it measured (same seed, same CPU).

``tests/data/smoke_grid*.json`` were written by the code before the plan (commit 39dcd9f) with this module run
as a script, ``python tests/test_reproduction.py MODEL_DIR OUT_DIR JSON``, on the smoke classifier the fixtures
build; the test runs the same grid with the code of today and compares every measured column (timings and
file paths aside; accuracies are counts of examples, sparsities counts of weights) and the saved weights,
bit for bit. Floating-point results depend on the CPU's instruction set (PyTorch and MKL pick kernels by it),
so there is one reference per kind of CPU the project has been built on: ``smoke_grid.json`` from the first
build machine, ``smoke_grid_avx512.json`` from an AVX-512 machine with bf16 and fp16 instructions
(2026-12-02; 39dcd9f with the one-line fix below, ``PYTHONPATH`` pointing at its checkout). The test uses
the reference whose smoke classifier is the one this machine trains, and fails on a CPU that has none:
generate one the same way rather than loosen the comparison.

One entry differs from what 39dcd9f itself computed, for a reason found by the reproduction: ``iterate-cubic``
(gradual magnitude pruning). There the mask update runs right after an optimizer step, and 39dcd9f ranked
``|module.w|``, which ``torch.nn.utils.prune`` refreshes only in the forward pre-hook, so it held the weights one
step old (final weights digest ``3c0f04bc...``). The plan code ranks ``w_orig * w_mask``, the weights as they are.
The entry was written by 39dcd9f with that one line fixed in its ``masks.current_weight`` (``d4bc3b55...``, the
digest the plan code gives): nothing else changed. ``tests/test_live_masks.py`` checks every reader for the fault.
"""
import json
import sys
from pathlib import Path

import pytest

REFERENCES = sorted((Path(__file__).parent / "data").glob("smoke_grid*.json"))   # one per kind of CPU
GRID = {
    "weight-taylor-0.6": ["prune", "--method", "taylor", "--sparsity", "0.6", "--score-batches", "2"],
    "head-fisher-0.5": ["prune", "--method", "fisher", "--granularity", "head", "--sparsity", "0.5",
                        "--score-batches", "1"],
    "neuron-movement-local": ["prune", "--method", "movement", "--granularity", "neuron", "--sparsity", "0.25",
                              "--scope", "local", "--score-steps", "3"],
    "encoder-magnitude-0.3": ["prune", "--method", "magnitude", "--granularity", "head+neuron", "--sparsity", "0.3"],
    "layer-random-0.5": ["prune", "--method", "random", "--granularity", "layer", "--sparsity", "0.5"],
    "iterate-heads": ["iterate", "--method", "fisher", "--granularity", "head", "--score-batches", "1", "--target",
                      "0.5", "--schedule", "constant", "--step", "0.25", "--round-steps", "2", "--requirement", "0"],
    "iterate-weights": ["iterate", "--method", "magnitude", "--target", "0.5", "--schedule", "geometric", "--step",
                        "0.3", "--round-steps", "2", "--requirement", "0"],
    "iterate-cubic": ["iterate", "--method", "magnitude", "--target", "0.5", "--schedule", "cubic", "--prune-every",
                      "2", "--round-steps", "4", "--requirement", "0"],
}
KEYS = ("prunable_sparsity", "model_sparsity", "mask_sparsity", "unit_sparsity", "encoder_removed",
        "validation_accuracy", "test_accuracy")


def weights_digest(folder) -> str:
    """SHA-256 of a saved model's tensors (names, shapes and bytes, in name order): equal digests, same model."""
    import hashlib

    from safetensors.torch import load_file

    h = hashlib.sha256()
    for f in sorted(Path(folder).glob("model*.safetensors")):   # the model; a round's state file keys masks by name
        tensors = load_file(str(f))
        for name in sorted(tensors):
            t = tensors[name].contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return h.hexdigest()


def measure(model_dir, out_root) -> dict:
    """Run :data:`GRID` with this checkout's ``xlprune`` (in process) and collect what each run measured, and a
    digest of the model it saved (the final model for ``iterate``)."""
    from xlprune_lib.cli import main

    out = {"source": [{"weights": weights_digest(model_dir)}]}
    for name, args in GRID.items():
        folder = Path(out_root) / name
        assert main([*args, "--model", str(model_dir), "--out", str(folder), "--quiet"]) == 0, name
        if args[0] == "prune":
            m = json.loads((folder / "metrics.json").read_text())
            out[name] = [{k: m[k] for k in KEYS if k in m}, {"weights": weights_digest(folder)}]
        else:
            records = [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]
            final = json.loads((folder / "summary.json").read_text())["final_model"]
            out[name] = [{"round": r["round"], **{k: r[k] for k in KEYS if k in r}} for r in records]
            out[name].append({"weights": weights_digest(final)})
    return out


@pytest.mark.slow
def test_the_plan_refactor_reproduces_the_grid(smoke_runs, tmp_path):
    got = measure(smoke_runs["ft"], tmp_path)
    matching = [json.loads(p.read_text()) for p in REFERENCES if json.loads(p.read_text())["source"] == got["source"]]
    assert len(REFERENCES) >= 2 and matching, \
        f"no reference in {[p.name for p in REFERENCES]} was made on this kind of CPU (smoke classifier " \
        f"{got['source'][0]['weights'][:12]}): generate one as the module docstring says"
    reference = matching[0]
    assert got.keys() == reference.keys()
    for name in GRID:
        assert got[name] == reference[name], name


if __name__ == "__main__":
    result = measure(sys.argv[1], sys.argv[2])
    Path(sys.argv[3]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
