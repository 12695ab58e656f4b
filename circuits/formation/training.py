"""Training small attention-only transformers to watch induction heads form (``circuits train``).

One run = one clamp, trained for ``seeds`` seeds at once (vmapped). Adam (optax) steps run
``eval_every`` at a time inside one jitted ``lax.scan``; after each chunk the progress measures
are taken on a fixed evaluation batch; every ``checkpoint_every`` steps params, optimiser state,
PRNG keys and the measures so far go to an Orbax checkpoint, from which a run resumes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from circuits.formation.clamps import Clamp
from circuits.formation.measures import Measures, evaluate_fn, measure, phase_change_step, query_losses
from circuits.formation.tasks import FewShotTask, RepeatTask, TaskBatch
from circuits.models.config import ModelConfig
from circuits.models.layout import FAMILY_BLOCKS
from circuits.models.transformer import Transformer
from circuits.utils import remove_written_tree
from circuits.world_errors import library_noise_held, raise_as_write_error

EVAL_BATCH = 512


class TrainingError(ValueError):
    """Settings that cannot train, or a checkpoint directory that belongs to other settings."""


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a formation run (the task, the model, the optimiser, the schedule)."""

    task: str = "fewshot"  # fewshot | repeat
    steps: int = 10000
    batch_size: int = 128
    learning_rate: float = 3e-3
    eval_every: int = 100
    checkpoint_every: int = 1000
    seed: int = 0
    seeds: int = 1  # trained together, vmapped: seed, seed + 1, ...
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: multi-head attention (n_heads KV heads)
    d_mlp: int = 0  # 0: attention-only
    tie_embeddings: bool = False  # unembedding = embeddingᵀ
    family: str = "llama"  # the block (models.layout.FAMILY_BLOCKS) of a model with MLPs: llama, qwen2 (q/k/v biases), gemma3 (QK-norm, ...)
    n_pairs: int = 3
    n_classes: int = 256
    n_labels: int = 16
    noise: float = 0.3
    vocab_size: int = 64  # repeat task
    min_length: int = 8  # repeat task
    max_length: int = 16  # repeat task

    def __post_init__(self):
        problems = []
        if self.task not in ("fewshot", "repeat"):
            problems.append(f"task {self.task!r} is not one of fewshot, repeat")
        if self.eval_every <= 0 or self.steps <= 0 or self.steps % self.eval_every:
            problems.append(f"steps={self.steps} must be a positive multiple of eval_every={self.eval_every}")
        if self.checkpoint_every <= 0 or self.checkpoint_every % self.eval_every:
            problems.append(f"checkpoint_every={self.checkpoint_every} must be a multiple of eval_every={self.eval_every}")
        if self.seeds < 1:
            problems.append(f"seeds={self.seeds} must be at least 1")
        if self.family not in FAMILY_BLOCKS:
            problems.append(f"family {self.family!r} is not one of {', '.join(FAMILY_BLOCKS)}")
        elif self.family != "llama" and not self.d_mlp:
            problems.append(f"family {self.family!r} needs MLPs (d_mlp > 0); attention-only models are Llama-style")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            problems.append(f"d_model={self.d_model} must split into n_heads={self.n_heads} heads of even size")
        if problems:
            raise TrainingError("bad training settings: " + "; ".join(problems))

    @property
    def formation_task(self) -> FewShotTask | RepeatTask:
        if self.task == "fewshot":
            return FewShotTask(self.n_classes, self.n_labels, self.n_pairs, self.noise, self.seed)
        return RepeatTask(self.vocab_size, self.min_length, self.max_length)

    def model_config(self) -> ModelConfig:
        """The pre-norm RoPE model: attention-only by default, with ``d_mlp`` > 0 a block of ``family`` (Llama-style,
        Qwen2's q/k/v biases, Gemma 3's QK-norm, post-norms and GeGLU; every layer full attention), grouped-query
        attention with ``n_kv_heads`` < ``n_heads``, and a tied unembedding with ``tie_embeddings``."""
        return ModelConfig(
            vocab_size=self.formation_task.vocab_size,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads or self.n_heads,
            head_dim=self.d_model // self.n_heads,
            d_mlp=self.d_mlp,
            max_position_embeddings=self.formation_task.seq_len,
            architecture=self.family if self.d_mlp else "attention-only",
            tie_embeddings=self.tie_embeddings,
            block=FAMILY_BLOCKS[self.family] if self.d_mlp else FAMILY_BLOCKS["llama"],
        )

    def identity(self) -> dict:
        """The settings a checkpoint must share to be resumed (all but the step budget)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "steps"}


QUICK = TrainSettings(steps=3000, batch_size=64, eval_every=100, checkpoint_every=500, seeds=3)
"""A configuration that shows the phase change on 2 CPU cores in a few minutes for all default clamps."""


@dataclasses.dataclass
class RunResult:
    """One clamp's training histories, one per seed (``histories[i]``: the measures of seed ``seed + i``)."""

    clamp: str
    histories: list[list[Measures]]
    context_baseline: float

    @property
    def history(self) -> list[Measures]:
        """The first seed's history."""
        return self.histories[0]

    @property
    def phase_changes(self) -> list[int | None]:
        """Per seed: the step of steepest loss drop below the task's no-induction baseline (None: no phase change)."""
        return [
            phase_change_step(np.array([m.step for m in h]), np.array([m.loss for m in h]), below=self.context_baseline)
            for h in self.histories
        ]

    def to_dict(self) -> dict:
        return {
            "clamp": self.clamp,
            "phase_change_steps": self.phase_changes,
            "seeds": [[m.to_dict() for m in history] for history in self.histories],
        }


def adam_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, clamp: Clamp):
    """The pure training step ``(state, opt_state, batch) -> (state, opt_state, loss, accuracy)`` (jit it yourself)."""

    def step(state, opt_state, batch: TaskBatch):
        def loss_fn(state):
            loss, correct, _ = query_losses(nnx.merge(graphdef, state), batch, clamp)
            return loss, correct.sum() / batch.loss_mask.sum()

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(state)
        updates, opt_state = optimizer.update(grads, opt_state, state)
        return optax.apply_updates(state, updates), opt_state, loss, accuracy

    return step


def _train_chunk(graphdef, optimizer, task, clamp: Clamp, batch_size: int, centres, n_steps: int):
    """``(state, opt_state, key) -> (state, opt_state, key)``: ``n_steps`` steps on fresh batches (vmap and jit it)."""
    step = adam_step(graphdef, optimizer, clamp)

    def one(carry, _):
        state, opt_state, key = carry
        key, batch_key = jax.random.split(key)
        state, opt_state, _, _ = step(state, opt_state, task.batch(batch_key, batch_size, centres))
        return (state, opt_state, key), None

    def chunk(state, opt_state, key):
        return jax.lax.scan(one, (state, opt_state, key), None, length=n_steps)[0]

    return chunk


def _stack(trees: list):
    """One pytree with a leading [S] axis from S pytrees of the same structure."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


class Trainer:
    """Trains one clamp's run for ``settings.seeds`` seeds at once (``jax.vmap`` over a leading seed axis
    of params, Adam state and PRNG keys), with measures, checkpoints and resumption (see the module docstring).

    Seed i initialises its model from ``settings.seed + i`` and draws its own batches; every seed is
    measured on the same evaluation batch.
    """

    def __init__(self, settings: TrainSettings, clamp: Clamp, checkpoint_dir: str | Path | None = None):
        self.settings, self.clamp = settings, clamp
        self.config = settings.model_config()
        clamp.check(self.config)
        self.task = settings.formation_task
        self.centres = self.task.class_centres(settings.d_model)
        self.model = Transformer(self.config, rngs=nnx.Rngs(settings.seed))
        self.graphdef, first = nnx.split(self.model)
        others = [nnx.split(Transformer(self.config, rngs=nnx.Rngs(settings.seed + i)))[1] for i in range(1, settings.seeds)]
        self.state = _stack([first] + others)
        self.optimizer = optax.adam(settings.learning_rate)
        self.opt_state = jax.vmap(self.optimizer.init)(self.state)
        self.key = _stack([jax.random.key(settings.seed + 1 + i) for i in range(settings.seeds)])
        self.histories: list[list[Measures]] = [[] for _ in range(settings.seeds)]
        self.eval_batch = self.task.batch(jax.random.key(10_000 + settings.seed), EVAL_BATCH, self.centres)
        chunk = _train_chunk(self.graphdef, self.optimizer, self.task, clamp, settings.batch_size, self.centres, settings.eval_every)
        self._chunk = jax.jit(jax.vmap(chunk))
        self._evaluate = evaluate_fn(clamp)
        self.manager = None
        if checkpoint_dir is not None:
            # synchronous: a failed write (a full disk) is raised here, in one piece, not printed by a background thread
            options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
            self.manager = ocp.CheckpointManager(Path(checkpoint_dir).absolute(), options=options, item_names=("state", "history"))
            self._restore()

    @property
    def step(self) -> int:
        return self.histories[0][-1].step if self.histories[0] else 0

    def start_from(self, other: "Trainer") -> None:
        """Go on from where ``other`` stopped (its params, Adam state and PRNG keys; any clamp), so that a run can
        change clamps part-way, e.g. ablate some layers until induction forms elsewhere, then release them. This
        run's steps and measures count from 0; ``other`` must train the same model with as many seeds."""
        if other.config != self.config or other.settings.seeds != self.settings.seeds:
            raise TrainingError(
                f"cannot start from a run of another model or seed count ({other.settings.n_layers} layers, "
                f"{other.settings.seeds} seeds, against {self.settings.n_layers} and {self.settings.seeds}); "
                "fix: give both runs the same model settings and seeds"
            )
        if self.histories[0]:
            raise TrainingError("this run has already trained; fix: call start_from on a new Trainer, before train()")
        self.state, self.opt_state, self.key = other.state, other.opt_state, other.key
        nnx.update(self.model, self._seed_state(0))

    def models(self) -> list[Transformer]:
        """The current model of every seed (new modules; ``self.model`` is the first seed's)."""
        return [nnx.merge(self.graphdef, self._seed_state(i)) for i in range(self.settings.seeds)]

    def _seed_state(self, seed_index: int):
        """The params of one seed: the slice ``seed_index`` of the stacked state."""
        return jax.tree.map(lambda x: x[seed_index], self.state)

    def _tree(self) -> dict:
        return {"state": self.state, "opt_state": self.opt_state, "key": jax.random.key_data(self.key)}

    def _restore(self) -> None:
        latest = self.manager.latest_step()
        if latest is None:
            return
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self._tree())
        restored = self.manager.restore(
            latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore())
        )
        saved = restored["history"]
        if saved["settings"] != json.loads(json.dumps(self.settings.identity())) or saved["clamp"] != self.clamp.name:
            raise TrainingError(
                f"{self.manager.directory} holds a run with other settings or clamp ({saved['clamp']}); "
                "fix: pass a new --out directory, or the same settings to resume"
            )
        tree = restored["state"]
        self.state, self.opt_state = tree["state"], tree["opt_state"]
        self.key = jax.random.wrap_key_data(tree["key"])
        self.histories = [[Measures.from_dict(m) for m in history] for history in saved["seeds"]]

    def _save(self) -> None:
        histories = [[m.to_dict() for m in history] for history in self.histories]
        saved = {"settings": self.settings.identity(), "clamp": self.clamp.name, "seeds": histories}
        try:
            with library_noise_held():
                self.manager.save(self.step, args=ocp.args.Composite(state=ocp.args.StandardSave(self._tree()), history=ocp.args.JsonSave(saved)))
                self.manager.wait_until_finished()
        except Exception as err:
            for partial in self.manager.directory.glob("*.orbax-checkpoint-tmp*"):  # the step that failed: never half-written
                remove_written_tree(partial)
            raise_as_write_error(err, f"the training checkpoint of step {self.step}")
            raise

    def _measure(self, step: int) -> list[Measures]:
        measures = []
        for i in range(self.settings.seeds):
            nnx.update(self.model, self._seed_state(i))
            measures.append(measure(self.model, self.eval_batch, self.clamp, step, self._evaluate))
        nnx.update(self.model, self._seed_state(0))
        return measures

    def _record(self, measures: list[Measures]) -> None:
        for history, m in zip(self.histories, measures):
            history.append(m)

    def train(self, on_chunk=None) -> RunResult:
        """Train to ``settings.steps``; ``on_chunk(measures per seed)`` is called after every chunk (progress bar)."""
        if not self.histories[0]:
            self._record(self._measure(0))
        while self.step < self.settings.steps:
            self.state, self.opt_state, self.key = self._chunk(self.state, self.opt_state, self.key)
            self._record(self._measure(self.step + self.settings.eval_every))
            if on_chunk is not None:
                on_chunk([history[-1] for history in self.histories])
            if self.manager is not None and self.step % self.settings.checkpoint_every == 0:
                self._save()
        if self.manager is not None:
            if self.manager.latest_step() != self.step:
                self._save()  # the last step too, so that a longer run can start from here
            self.manager.wait_until_finished()
        nnx.update(self.model, self._seed_state(0))
        return RunResult(self.clamp.name, self.histories, self.task.context_baseline)
