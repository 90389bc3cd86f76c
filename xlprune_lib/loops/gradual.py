"""Gradual pruning inside one fine-tuning run (Zhu & Gupta 2017, "To prune, or not to prune", eq. 1).

:class:`GradualPruning` is a ``transformers`` Trainer callback: every ``dt`` optimizer steps between ``t0``
and ``t0 + n dt`` it raises the sparsity of the prunable set to the cubic schedule's ``s_t``
(``schedule.cubic``), ranking the remaining weights by ``|w|`` (magnitude) or by the movement score
``-sum_t w_t g_t`` accumulated at every step (Sanh et al. 2020, "Movement Pruning", eq. 5, with a
:class:`~xlprune_lib.loops.score_inputs.MovementCallback` inside). Masks come from ``torch.nn.utils.prune``, so pruned
weights stay zero while training continues and sparsity only grows.

:func:`run_gradual` is the ``--schedule cubic`` branch of ``xlprune iterate``: it records the model every
``round_steps`` steps (just before that step's mask update) and checkpoints through the Trainer at the same
steps (``save_steps``), so an interrupted run resumes with the Trainer's optimizer, scheduler, data order and
RNG state, plus the movement scores kept here in safetensors.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import save_file
from transformers import TrainerCallback

from .. import validate
from .distributed import barrier, is_main
from .specs import GRADUAL_METHODS
from ..config import UserError, set_seed
from ..prune.importance import magnitude
from ..prune.schedule import cubic
from ..prune.select import WeightSparsity
from ..train.finetune import train_classifier
from ..xlnet.masks import attach, make_permanent, weight_sparsity
from ..xlnet.modeling import load_tensors, save_model
from .rounds import RunContext
from .score_inputs import MovementCallback
from ..xlnet.structure import XLNetStructure

class GradualPruning(TrainerCallback):
    """Cubic-schedule pruning during training (Zhu & Gupta 2017, eq. 1), masks updated every ``dt`` steps.

    At step ``t`` with ``t0 < t <= t0 + n dt`` and ``(t - t0) % dt == 0`` it masks the prunable set to
    ``s_t`` (``select.WeightSparsity``, applied as live masks; cumulative: pruned weights stay pruned). Call
    :func:`install_identity_masks` before the Trainer is built, so the parameter set does not change after the
    Trainer (or DistributedDataParallel) has seen it; later updates only replace mask buffers.
    """
    def __init__(self, s_f: float, n: int, dt: int, t0: int = 0, s_i: float = 0.0, method: str = "magnitude",
                 scope: str = "global", model=None):
        if method not in GRADUAL_METHODS:
            raise UserError(f"gradual pruning ranks by {' or '.join(GRADUAL_METHODS)}, not {method!r}")
        if n < 1 or dt < 1 or t0 < 0:
            raise UserError("gradual pruning needs n >= 1 pruning steps, dt >= 1 and t0 >= 0")
        self.s_f, self.s_i, self.t0, self.n, self.dt = validate.sparsity(s_f), validate.sparsity(s_i), t0, n, dt
        self.method, self.scope = method, scope
        if method == "movement" and model is None:
            raise UserError("gradual movement pruning needs the model whose movement it accumulates")
        self.movement = MovementCallback(model) if method == "movement" else None
        self.history: list[tuple[int, float]] = []   # (step, measured sparsity) after every mask update

    def target(self, t: int) -> float:
        return cubic(t, self.s_f, self.s_i, self.t0, self.n, self.dt)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.movement is not None:
            self.movement.on_pre_optimizer_step(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        t = state.global_step
        if self.t0 < t <= self.t0 + self.n * self.dt and (t - self.t0) % self.dt == 0:
            scores = self.movement.scores if self.movement is not None else magnitude(model)
            WeightSparsity(self.target(t), self.scope)(model, scores).apply_masks(model)
            self.history.append((t, weight_sparsity(XLNetStructure(model).prunable())))


def install_identity_masks(model) -> None:
    """All-ones masks (``masks.attach``) on every not-yet-pruned pair, so later pruning only edits buffers."""
    for module, name in XLNetStructure(model).prunable():
        if not hasattr(module, f"{name}_mask"):
            attach(module, name)


class _Recorder(TrainerCallback):
    """Records the model every ``every`` steps and commits the record once the Trainer's checkpoint exists.

    Listed *before* :class:`GradualPruning`, so at a step where both act the record shows the model as it
    stands (pruned at the previous update, trained since), before the new masks.
    """
    def __init__(self, run, pruner: GradualPruning, every: int):
        self.run, self.pruner, self.every, self.pending = run, pruner, every, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        t = state.global_step
        if t % self.every == 0:
            self.pending = self.run.record(model, round=t // self.every, step=t, target=self.pruner.target(t - 1))

    def on_save(self, args, state, control, **kwargs):

        if self.pending is None or self.pending["step"] != state.global_step:
            return
        if self.pruner.movement is not None and is_main():
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            save_file({n: s.contiguous() for n, s in self.pruner.movement.scores.items()},
                      str(folder / "movement.safetensors"))
        barrier()
        self.run.commit(self.pending)
        self.pending = None

    def restore(self, folder: Path) -> None:

        if self.pruner.movement is not None:
            saved = load_tensors(folder / "movement.safetensors")
            for name, scores in self.pruner.movement.scores.items():
                scores.copy_(saved[name])


def run_gradual(run: RunContext) -> dict:
    """One fine-tuning run of ``total_steps`` with :class:`GradualPruning`; records and checkpoints every
    ``round_steps``. ``run``: the run's shared context (data, evaluator, records)."""
    spec = run.spec
    total, n, dt = spec.gradual_plan()
    model = run.start()
    install_identity_masks(model)
    pruner = GradualPruning(spec.target, n, dt, method=spec.method, scope=spec.scope, model=model)
    recorder = _Recorder(run, pruner, spec.round_steps)
    trainer_dir = run.out / "trainer"
    resume = None
    if run.records[-1]["step"] > 0:
        resume = trainer_dir / f"checkpoint-{run.records[-1]['step']}"
        if not resume.is_dir():
            raise UserError(f"{resume} is missing, so the run cannot resume; move {run.out} away and start again")
        recorder.restore(resume)
    set_seed(run.seed)
    # Also when every step is done: resuming from the last checkpoint restores the final weights and masks.
    train_classifier(model, run.tok, run.enc, run.profile, run.seed, 1.0, run.glue, run.progress,
                     callbacks=[recorder, pruner], steps=total, lr=run.profile.recovery_lr, out=trainer_dir,
                     resume=resume,
                     save_strategy="steps", save_steps=spec.round_steps, save_total_limit=2,
                     # accelerate's seedable random sampler reseeds every epoch, so a resumed run sees the same
                     # batches; the length-grouped sampler draws each epoch's order from a running generator.
                     train_sampling_strategy="random")
    make_permanent(model)
    final = run.records[-1]
    if is_main():
        save_model(model, run.tok, run.out / "final", replace=True)   # this run's own result folder
        shutil.rmtree(trainer_dir, ignore_errors=True)   # resume state only (optimizer, scheduler, RNG)
    barrier()
    return {"stop_reason": f"gradual schedule finished after {total} steps", "final_round": final["round"],
            "final_model": str(run.out / "final"), "final": final}
