"""Distributed runs: two torchrun processes prune the same units; the agreement check catches a difference."""
import json
import os
import subprocess
import sys

import pytest
import torch

from xlprune_lib.xlnet.masks import weight_sparsity
from xlprune_lib.xlnet.modeling import load_saved
from xlprune_lib.loops.rounds import read_records
from xlprune_lib.xlnet.structure import XLNetStructure


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["--method", "taylor", "--score-batches", "2", "--target", "0.6", "--schedule", "constant", "--step", "0.3",
     "--round-steps", "4"],
    ["--method", "movement", "--target", "0.6", "--schedule", "cubic", "--total-steps", "16", "--prune-every", "2",
     "--round-steps", "4"],
], ids=["rounds-taylor", "cubic-movement"])
def test_torchrun_two_processes(smoke_runs, tmp_path, args):
    """Two CPU processes (gloo): the Trainer runs DDP, scores are averaged, every rank prunes the same weights
    (the loop checks a checksum of masks and shapes across ranks after every round and fails otherwise)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "xlprune_lib", "iterate",
           "--model", str(smoke_runs["ft"]), *args, "--requirement", "0", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_records(out)
    assert len(records) >= 3 and all(r["processes"] == 2 for r in records)
    assert proc.stdout.count("round  1 ") == 1                        # only rank 0 reports
    final = load_saved(json.loads((out / "summary.json").read_text())["final_model"])
    assert weight_sparsity(XLNetStructure(final).prunable()) == pytest.approx(0.6, abs=1e-3)


def _digest_worker(rank, world, init_file, differ, results):
    import torch.distributed as dist

    from xlprune_lib.loops.distributed import identical_across_ranks

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    digest = torch.tensor([1.0, 2.0]) + (rank if differ else 0)
    results[rank] = identical_across_ranks(digest)
    dist.destroy_process_group()


@pytest.mark.parametrize("differ", [False, True])
def test_mask_agreement_check_detects_a_difference(tmp_path, differ):
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_digest_worker, args=(2, str(tmp_path / "init"), differ, results), nprocs=2)
        assert dict(results) == {0: not differ, 1: not differ}
