"""The ``circuits`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from circuits.formation.clamps import DEFAULT_CLAMPS
from circuits.analysis.induction import METHODS
from circuits.convert.errors import CheckpointError
from circuits.models.config import ConfigError
from circuits.models.sharding import MeshError, parse_mesh
from circuits.convert.named_models import DEFAULT_MODEL, ModelDownloadError
from circuits.report.resources import NotEnoughMemoryError

USER_ERRORS = (
    CheckpointError,
    ConfigError,
    MeshError,
    ModelDownloadError,
    NotEnoughMemoryError,
    FileNotFoundError,
    FileExistsError,
    ValueError,
)


def _convert(args: argparse.Namespace) -> None:
    from circuits.convert.orbax_cache import save_cache
    from circuits.convert.loading import load

    model = load(args.source, dtype=args.dtype)
    destination = save_cache(model, args.destination, overwrite=args.force)
    print(f"wrote {destination}")


def _info(args: argparse.Namespace) -> None:
    from circuits.convert.loading import load

    model = load(args.model, dtype=args.dtype, mesh=parse_mesh(args.mesh) if args.mesh else None)
    for key, value in model.config.to_dict().items():
        print(f"{key:>26}: {value}")
    print(f"{'dtype':>26}: {model.dtype}")


def _analyze(args: argparse.Namespace) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    from circuits.analysis.induction import predict_induction
    from circuits.convert.loading import open_weights
    from circuits.utils import atomic_write_text

    source = open_weights(args.model)
    prediction = predict_induction(
        source,
        method=args.method,
        n_tokens=args.tokens,
        token_seed=args.token_seed,
        fold_norms=not args.no_fold_norms,
        max_pairs=args.max_pairs,
        n_edges=args.top,
        show_progress=True,
    )
    console = Console()
    heads = Table(title=f"Predicted induction heads (weights only, {prediction.method}): {args.model}")
    for column in ("layer", "head", "predicted induction", "source head", "OV copying (diagnostic)"):
        heads.add_column(column, justify="right")
    for layer, head, score in prediction.predicted_induction.top(args.top):
        prev_layer, prev_head = prediction.source_of(layer, head)
        heads.add_row(str(layer), str(head), f"{score:.3f}", f"L{prev_layer}H{prev_head}", f"{prediction.ov_copying.scores[layer, head]:+.3f}")
    console.print(heads)
    edges = Table(title="Predicted previous-token head -> induction head edges")
    for column in ("previous-token head", "induction head", "strength", "K-comp / baseline", "token term"):
        edges.add_column(column, justify="right")
    for edge in prediction.edges:
        edges.add_row(
            f"L{edge.prev_layer}H{edge.prev_head}",
            f"L{edge.layer}H{edge.head}",
            f"{edge.score:.3f}",
            f"{edge.k_composition_ratio:.2f}x",
            f"{edge.token_term:+.3f}",
        )
    console.print(edges)
    if args.out:
        atomic_write_text(args.out, json.dumps(prediction.to_dict(str(args.model)), indent=2))
        console.print(f"wrote {args.out}")


def _report(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from circuits.report.experiment import report

    result = report(
        args.model,
        validate=args.validate,
        k=args.top,
        mesh=parse_mesh(args.mesh) if args.mesh else None,
        dtype=args.dtype,
        fold_norms=not args.no_fold_norms,
    )
    directory = result.write(args.out)
    console = Console()
    v = result.validation
    table = Table(title=f"Top {result.k} predicted induction heads (weights only): {args.model}")
    for column in ["head", "predicted induction", "OV copying"] + (["prefix matching", "confirmed"] if v else []):
        table.add_column(column, justify="right")
    for layer, head, score in result.top_predicted():
        row = [f"L{layer}H{head}", f"{score:.3f}", f"{result.ov_copying[layer, head]:+.3f}"]
        if v:
            row += [f"{v.prefix_matching[layer, head]:.3f}", "yes" if (layer, head) in v.confirmed else "no"]
        table.add_row(*row)
    console.print(table)
    if v:
        a = v.ablation
        console.print(
            f"forward passes confirmed {len(v.confirmed)} of the top {result.k} predicted heads "
            f"(prefix matching >= {v.confirm_threshold}); ablating them raises the loss on repeated tokens by "
            f"{a.increase:+.2f} nats vs {a.random_increase:+.2f} for {a.k} random heads"
        )
    else:
        console.print("weight-only report; add --validate to test the prediction with forward passes")
    console.print(f"wrote {', '.join(str(directory / name) for name in ('report.json', 'report.md', 'report.html'))}")


def _icl(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from circuits.icl.experiment import QUICK, ICLSettings, run_icl
    from circuits.convert.loading import load
    from circuits.convert.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    model = load(args.model, dtype=args.dtype)
    result = run_icl(model, tokenizer, str(args.model), QUICK if args.quick else ICLSettings())
    table = Table(title=f"In-context learning with induction heads removed: {args.model}")
    for column in ("task", "condition", "accuracy", "drop vs no ablation", "std over seeds"):
        table.add_column(column, justify="right" if column != "task" and column != "condition" else "left")
    for task, condition, value, drop, spread in result.rows():
        table.add_row(task, condition, f"{value:.3f}", f"{drop:+.3f}", f"{spread:.3f}")
    console = Console()
    console.print(table)
    console.print("pattern-matching heads: " + ", ".join(f"L{l}H{h} {s:.3f}" for l, h, s in result.pattern_matching_heads))
    if args.out:
        out = result.write(args.out)
        console.print(f"wrote {out / 'icl.json'}, {out / 'icl.md'}, {out / 'icl.png'}")


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from circuits.formation.clamps import Clamp
    from circuits.formation.experiment import run_formation
    from circuits.formation.training import QUICK, TrainSettings

    settings = QUICK if args.quick else TrainSettings()
    names = ("task", "steps", "seed", "seeds", "checkpoint_every")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    settings = dataclasses.replace(settings, **overrides)
    clamps = tuple(Clamp.parse(spec) for spec in (args.clamp or DEFAULT_CLAMPS))
    out = Path(args.out)
    result = run_formation(settings, clamps, out)
    directory = result.write(out)
    table = Table(title=f"Induction-head formation ({settings.task} task, {settings.steps} steps)")
    table.add_column("clamp", no_wrap=True)
    table.add_column("phase change", justify="right", no_wrap=True)
    for column in ("loss", "accuracy", "prev-token", "induction", "copy", "K-comp."):
        table.add_column(column, justify="right")
    for clamp, phase, *values in result.summary_rows():
        table.add_row(clamp, phase, *(f"{v:.3f}" for v in values))
    console = Console()
    console.print(table)
    console.print(f"wrote {', '.join(str(directory / n) for n in ('formation.json', 'formation.png', 'formation.svg'))}; checkpoints in {out / 'checkpoints'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="circuits", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    convert = commands.add_parser("convert", help="convert a checkpoint once into a fast Orbax cache")
    convert.add_argument("source", help="HF directory, safetensors index, GGUF file or model name")
    convert.add_argument("destination", help="new directory for the Orbax cache")
    convert.add_argument("--dtype", default=None, help="store as this dtype (default: the checkpoint's)")
    convert.add_argument("--force", action="store_true", help="replace an existing destination")
    convert.set_defaults(run=_convert)

    info = commands.add_parser("info", help="load a checkpoint and print its configuration")
    info.add_argument("model")
    info.add_argument("--dtype", default=None)
    info.add_argument("--mesh", default=None, help="e.g. data=1,model=8")
    info.set_defaults(run=_info)

    analyze = commands.add_parser("analyze", help="predict induction heads and circuits from the weights alone")
    analyze.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"HF directory, GGUF file, cache, model name (default {DEFAULT_MODEL}) or demo name")
    analyze.add_argument("--out", default=None, help="also write the full results as JSON here")
    analyze.add_argument("--top", type=int, default=10, help="rows to show")
    analyze.add_argument("--method", choices=METHODS, default=METHODS[0],
                         help="kcomp-token-z: RoPE-averaged K-composition x token-level prefix-matching z-score on MLP "
                              "stand-ins (default); ov-kcomp-eigen: the earlier OV-copying-weighted score, for comparison")
    analyze.add_argument("--tokens", type=int, default=1024, help="token stand-ins sampled for kcomp-token-z (default 1024)")
    analyze.add_argument("--token-seed", type=int, default=0, help="seed of the token sample (default 0)")
    analyze.add_argument("--max-pairs", type=int, default=4096, help="head pairs that get eigenvalue terms (ov-kcomp-eigen only)")
    analyze.add_argument("--no-fold-norms", action="store_true", help="score raw weights (norm gains not folded)")
    analyze.set_defaults(run=_analyze)

    report = commands.add_parser("report", help="weight-only circuit report (JSON, Markdown, HTML), --validate to test it")
    report.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"HF directory, safetensors index, GGUF file, cache, model name or demo name (default {DEFAULT_MODEL})")
    report.add_argument("--out", default="circuits-report", help="directory for report.json, report.md, report.html")
    report.add_argument("--validate", action="store_true", help="load the model and test the prediction with forward passes")
    report.add_argument("--mesh", default=None, help="shard the validation over devices, e.g. data=1,model=8")
    report.add_argument("--dtype", default=None, help="dtype for the validation forward passes (default: the checkpoint's)")
    report.add_argument("--top", type=int, default=None, help="how many heads count as top (default 3%% of all heads)")
    report.add_argument("--no-fold-norms", action="store_true", help="score raw weights (norm gains not folded)")
    report.set_defaults(run=_report)

    icl = commands.add_parser("icl", help="ablate / knock out induction heads on in-context-learning tasks")
    icl.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"a model with a tokenizer (default {DEFAULT_MODEL})")
    icl.add_argument("--quick", action="store_true", help="16 prompts per task, 2 random seeds: a few minutes on 2 CPU cores")
    icl.add_argument("--out", default=None, help="also write icl.json, icl.md and icl.png here")
    icl.add_argument("--dtype", default=None)
    icl.set_defaults(run=_icl)

    train = commands.add_parser("train", help="train small attention-only models and watch induction heads form, with clamps")
    train.add_argument("--quick", action="store_true", help="3000 steps, batch 64, 3 seeds: the phase change in a few minutes on 2 CPU cores")
    train.add_argument("--out", default="circuits-train", help="directory for formation.json/png/svg and the checkpoints (resumed when present)")
    train.add_argument("--clamp", action="append", default=None,
                       help="a run to make (repeatable): none, previous-token, induction, copy, ablate:L1H0,L1H3, or several joined by + "
                            f"(default: {' '.join(DEFAULT_CLAMPS)})")
    train.add_argument("--task", choices=("fewshot", "repeat"), default=None, help="few-shot classification (default) or repeated random tokens")
    train.add_argument("--steps", type=int, default=None, help="training steps (a multiple of 100)")
    train.add_argument("--seed", type=int, default=None, help="first seed (default 0)")
    train.add_argument("--seeds", type=int, default=None, help="seeds per clamp, trained together as one vmapped program (default 1, --quick 3)")
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between Orbax checkpoints (a multiple of 100)")
    train.set_defaults(run=_train)
    return parser


def use_compilation_cache() -> Path:
    """Keep XLA's compiled programs in ``<cache directory>/xla`` between runs (JAX's persistent
    compilation cache), so a second cold start of a command skips most compilation."""
    import jax

    from circuits.convert.named_models import cache_directory

    directory = cache_directory() / "xla"
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_compilation_cache()
    try:
        args.run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
