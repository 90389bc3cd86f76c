"""The refactor to one pruning plan changed no result: a small grid of ``xlprune prune`` and ``iterate``
commands on the smoke classifier measures exactly what the code before the plan measured, on this machine.

The code before the plan is commit 39dcd9f. The test takes its ``xlprune_lib`` out of this repository's history
(``git archive``), runs the grid with it and with the code of today on the same smoke classifier, each in its own
process and its own empty run cache, and compares every measured column (timings and file paths aside;
accuracies are counts of examples, sparsities counts of weights) and the saved weights, bit for bit.

Both sides run on the same CPU in the same environment. That is what makes a bit-for-bit check portable:
floating-point results depend on the instruction set (PyTorch and MKL pick kernels by it), so numbers stored
from one machine cannot be compared exactly on another. Checked under ``ATEN_CPU_CAPABILITY=default``, ``avx2``
and ``avx512``: the two sides agree under each, while the numbers differ between them.

One line of 39dcd9f is changed before it runs, for a reason found by this reproduction: in ``iterate-cubic``
(gradual magnitude pruning) the mask update runs right after an optimizer step, and 39dcd9f ranked
``|module.w|``, which ``torch.nn.utils.prune`` refreshes only in the forward pre-hook, so it held the weights one
step old. The plan code ranks ``w_orig * w_mask``, the weights as they are. :data:`OLD_FIX` gives 39dcd9f's
``masks.current_weight`` that reading; nothing else changes. ``tests/test_live_masks.py`` checks every reader
for the fault.

Run as a script, ``python tests/test_reproduction.py MODEL_DIR OUT_DIR JSON`` measures the grid with whichever
``xlprune_lib`` is first on the path and writes what it measured to ``JSON``.
"""
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "39dcd9f228af19442de448cc87d0476c1aa59712"   # the last commit before the pruning plan
# (file, text in OLD_COMMIT, replacement): read the weights as they are (w_orig * w_mask), see the docstring
OLD_FIX = ("xlprune_lib/masks.py",
           '    """The effective (masked) tensor, whether or not the parameter is pruned yet."""\n'
           '    return getattr(module, name)\n',
           '    """The effective (masked) tensor, whether or not the parameter is pruned yet."""\n'
           '    if hasattr(module, f"{name}_orig"):\n'
           '        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")\n'
           '    return getattr(module, name)\n')

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


def old_code(dest: Path) -> Path:
    """``OLD_COMMIT``'s ``xlprune_lib`` with :data:`OLD_FIX`, unpacked from this repository's history into ``dest``."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "xlprune_lib"], check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"commit {OLD_COMMIT[:7]} is not in this clone's history ({exc}); the reproduction needs a "
                    f"full clone (git fetch --unshallow)")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    path, before, after = OLD_FIX
    text = (dest / path).read_text()
    assert text.count(before) == 1, f"{path} of {OLD_COMMIT[:7]} does not hold the line the fix replaces"
    (dest / path).write_text(text.replace(before, after))
    return dest


def measure_with(code: Path | None, model_dir: Path, root: Path) -> dict:
    """What the grid measures with ``code`` (else this checkout) first on the path: this module run as a script in
    its own process, with a fresh run cache."""
    env = {**os.environ, "XLPRUNE_CACHE": str(root / "cache"), "PYTHONPATH": str(code or REPO)}
    result = root / "grid.json"
    done = subprocess.run([sys.executable, __file__, str(model_dir), str(root / "runs"), str(result)], env=env,
                          capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.slow
def test_the_plan_refactor_reproduces_the_grid(smoke_runs, tmp_path):
    old_root, new_root = tmp_path / "old", tmp_path / "new"
    old_root.mkdir()
    new_root.mkdir()
    reference = measure_with(old_code(tmp_path / "old-code"), smoke_runs["ft"], old_root)
    got = measure_with(None, smoke_runs["ft"], new_root)
    assert got["source"] == reference["source"]          # both read the same classifier
    assert got.keys() == reference.keys() == {"source", *GRID}
    for name in GRID:
        assert got[name] == reference[name], name


def test_the_old_code_is_39dcd9f_with_one_line_changed(tmp_path):
    """The reference side is the code before the plan, changed only where the docstring says."""
    code = old_code(tmp_path)
    assert not (code / "xlprune_lib" / "prune").exists() and (code / "xlprune_lib" / "masks.py").is_file()
    original = subprocess.run(["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:{OLD_FIX[0]}"], check=True,
                              capture_output=True, text=True).stdout
    changed = (code / OLD_FIX[0]).read_text()
    assert changed != original and changed.replace(OLD_FIX[2], OLD_FIX[1]) == original


if __name__ == "__main__":
    result = measure(sys.argv[1], sys.argv[2])
    Path(sys.argv[3]).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
