"""circuits: find induction circuits in a language-model checkpoint from its weights alone, then test the
prediction with jitted forward passes (head ablation, attention knockout)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from circuits import distributed
from circuits.analysis.methods import METHOD_HELP, METHODS, PAIR_MODES
from circuits.convert.dtypes import NAMES as DTYPES
from circuits.convert.named_models import DEFAULT_MODEL, ModelDownloadError
from circuits.distributed import DistributedError
from circuits.formation.defaults import DEFAULT_CLAMPS
from circuits.utils import check_output_file, head_label
from circuits.world_errors import NotEnoughMemoryError

EXAMPLES = f"""examples:
  circuits analyze                          weight-only prediction for {DEFAULT_MODEL} (fetched on first use)
  circuits analyze Meta-Llama-3-8B/ --out pred.json
  circuits report --validate --out report   prediction + forward-pass evidence as JSON, Markdown, HTML
  circuits icl --quick --out icl            in-context learning with induction heads ablated
  circuits train --quick --out formation    watch induction heads form, with pattern clamps
  circuits convert model.gguf cache/ && circuits info cache/

Every failure exits 2 with one line naming the cause and the fix."""

USER_ERRORS = (ValueError, ModelDownloadError, NotEnoughMemoryError, FileNotFoundError, FileExistsError)
"""What a user's input or machine causes (every project error is a ValueError: CheckpointError, ConfigError,
MeshError, DistributedError, OutputError, ...): one line, exit 2, no traceback."""


def _one_process_only(verb: str) -> None:
    if distributed.process_count() > 1:
        raise DistributedError(f"`circuits {verb}` runs in one process (it writes per-process state); fix: run it "
                               "without --coordinator/--distributed or the launcher")


def _convert(args: argparse.Namespace) -> None:
    from circuits.convert.checkpoint import open_checkpoint
    from circuits.convert.orbax_cache import check_destination, save_cache
    from circuits.convert.tokenizer import TokenizerError

    _one_process_only("convert")
    checkpoint = open_checkpoint(args.source)
    check_destination(args.destination, overwrite=args.force, source=checkpoint.path)
    try:
        tokenizer = checkpoint.tokenizer()  # kept in the cache, so that it serves `circuits icl` too
    except TokenizerError:
        tokenizer = None
    model = checkpoint.load(dtype=args.dtype)
    destination = save_cache(model, args.destination, overwrite=args.force, source=checkpoint.path, tokenizer=tokenizer)
    print(f"wrote {destination}" + ("" if tokenizer is not None else " (the source has no tokenizer)"))


def _info(args: argparse.Namespace) -> None:
    from circuits.convert.checkpoint import open_checkpoint
    from circuits.convert.dtypes import resolve_dtype
    from circuits.models.layout import parameter_count

    checkpoint = open_checkpoint(args.model)
    config = checkpoint.config  # metadata only: no weight is read
    if args.mesh:
        from circuits.models.sharding import check_mesh_fits, parse_mesh

        check_mesh_fits(parse_mesh(args.mesh), config.n_kv_heads)
    for key, value in checkpoint.provenance().items():
        print(f"{key:>26}: {value}")
    for key, value in config.to_dict().items():
        print(f"{key:>26}: {value}")
    print(f"{'parameters':>26}: {parameter_count(config):,}")
    print(f"{'loads as':>26}: {resolve_dtype(args.dtype, checkpoint.dtype)}")


def _analyze(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from circuits.analysis.induction import predict_induction
    from circuits.convert.loading import open_weights
    from circuits.utils import atomic_write_text, json_text

    if args.out:
        check_output_file(args.out)
    source = open_weights(args.model)
    n_heads = source.config.n_layers * source.config.n_heads
    if args.top is not None and args.top > n_heads:
        raise ValueError(f"--top {args.top} is more than the model's {n_heads} heads; fix: choose a smaller --top")
    top = args.top or min(10, n_heads)
    prediction = predict_induction(
        source,
        method=args.method,
        n_tokens=args.tokens,
        token_seed=args.token_seed,
        fold_norms=not args.no_fold_norms,
        max_pairs=args.max_pairs,
        n_edges=top,
        pairs=args.pairs,
        show_progress=True,
    )
    console = Console()
    heads = Table(title=f"Predicted induction heads (weights only, {prediction.method}): {args.model}")
    for column in ("layer", "head", "predicted induction", "source head", "OV copying (diagnostic)"):
        heads.add_column(column, justify="right")
    for layer, head, score in prediction.predicted_induction.top(top):
        prev_layer, prev_head = prediction.source_of(layer, head)
        heads.add_row(str(layer), str(head), f"{score:.3f}", head_label(prev_layer, prev_head), f"{prediction.ov_copying.scores[layer, head]:+.3f}")
    console.print(heads)
    edges = Table(title="Predicted previous-token head -> induction head edges")
    for column in ("previous-token head", "induction head", "strength", "K-comp / baseline", "token z", "logit gain"):
        edges.add_column(column, justify="right")
    for edge in prediction.edges:
        edges.add_row(
            head_label(edge.prev_layer, edge.prev_head),
            head_label(edge.layer, edge.head),
            f"{edge.score:.3f}",
            f"{edge.k_composition_ratio:.2f}x",
            f"{edge.token_term:+.3f}",
            f"{edge.token_gain:+.3f}",
        )
    console.print(edges)
    if args.out:
        atomic_write_text(args.out, json_text(prediction.to_dict(str(args.model))))
        console.print(f"wrote {args.out}")
    else:
        console.print("nothing saved; add --out FILE.json to keep the full results")


def _report(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from circuits.models.sharding import parse_mesh
    from circuits.report.experiment import CircuitReport, report

    CircuitReport.check_output(args.out)
    result = report(
        args.model,
        validate=args.validate,
        k=args.top,
        mesh=parse_mesh(args.mesh) if args.mesh else None,
        dtype=args.dtype,
        fold_norms=not args.no_fold_norms,
        method=args.method,
    )
    directory = result.write(args.out)
    console = Console()
    v = result.validation
    table = Table(title=f"Top {result.k} predicted induction heads (weights only): {args.model}")
    for column in ["head", "predicted induction", "source head"] + (["prefix matching", "confirmed"] if v else []):
        table.add_column(column, justify="right")
    for layer, head, score in result.top_predicted():
        row = [head_label(layer, head), f"{score:.3f}", head_label(*result.source_of(layer, head))]
        if v:
            row += [f"{v.prefix_matching[layer, head]:.3f}", "yes" if (layer, head) in v.confirmed else "no"]
        table.add_row(*row)
    console.print(table)
    if v:
        a = v.ablation
        console.print(
            f"forward passes confirmed {len(v.confirmed)} of the top {result.k} predicted heads "
            f"(prefix matching >= {v.confirm_threshold}). Zero-ablating all {result.k} predicted heads raises the loss "
            f"on repeated tokens by {a.increase:+.2f} nats; {a.k} random heads: {a.random_increase:+.2f}; the {result.k} "
            f"measured induction heads: {v.measured_top_ablated_loss - a.clean_loss:+.2f}"
        )
    else:
        console.print("weight-only report; add --validate to test the prediction with forward passes")
    console.print(f"wrote {CircuitReport.written(directory)}")


def _icl(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from circuits.convert.checkpoint import open_checkpoint
    from circuits.icl.experiment import QUICK, ICLResult, ICLSettings, run_icl
    from circuits.models.sharding import check_mesh_fits, parse_mesh

    if args.out:
        ICLResult.check_output(args.out)
    checkpoint = open_checkpoint(args.model)
    tokenizer = checkpoint.tokenizer()
    mesh = parse_mesh(args.mesh) if args.mesh else None
    if mesh is not None:
        check_mesh_fits(mesh, checkpoint.config.n_kv_heads)
    model = checkpoint.load(dtype=args.dtype, mesh=mesh)
    result = run_icl(model, tokenizer, str(args.model), QUICK if args.quick else ICLSettings())
    table = Table(title=f"In-context learning with induction heads removed: {args.model}")
    for column in ("task", "condition", "accuracy", "drop vs no ablation", "std over seeds"):
        table.add_column(column, justify="right" if column != "task" and column != "condition" else "left")
    for task, condition, value, drop, spread in result.rows():
        table.add_row(task, condition, f"{value:.3f}", f"{drop:+.3f}", f"{spread:.3f}")
    console = Console()
    console.print(table)
    console.print("pattern-matching heads: " + ", ".join(f"{head_label(l, h)} {s:.3f}" for l, h, s in result.pattern_matching_heads))
    if args.out:
        out = result.write(args.out)
        console.print(f"wrote {ICLResult.written(out)}")


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from rich.console import Console
    from rich.table import Table

    from circuits.formation.clamps import Clamp
    from circuits.formation.experiment import FormationResult, run_formation
    from circuits.formation.training import QUICK, TrainSettings

    _one_process_only("train")
    settings = QUICK if args.quick else TrainSettings()
    names = ("task", "steps", "seed", "seeds", "checkpoint_every")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    settings = dataclasses.replace(settings, **overrides)
    clamps = tuple(Clamp.parse(spec) for spec in (args.clamp or DEFAULT_CLAMPS))
    out = Path(args.out)
    FormationResult.check_output(out)
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
    console.print(f"wrote {FormationResult.written(directory)}; checkpoints in {out / 'checkpoints'}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every flag's help (those without one say it in words); examples kept as written."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line and the hint (argparse's own usage block hides the cause among the flags)."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message}; fix: see `{self.prog} --help`\n")


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _add_model(parser: argparse.ArgumentParser, what: str = "the checkpoint") -> None:
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL,
                        help=f"{what}: an HF directory, a safetensors index, a .gguf file, a `circuits convert` cache, "
                             "a model name (fetched on first use) or 'demo-induction'")


def _add_dtype(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument("--dtype", choices=DTYPES, default=None, help=f"{purpose} (default: the checkpoint's own)")


def _add_processes(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-process runs (jax.distributed; see python -m circuits.launch to try one on one machine)")
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0 (with the next two)")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="how many processes take part")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process's index, 0 to N-1")
    group.add_argument("--distributed", action="store_true",
                       help="let JAX detect the three on SLURM, Open MPI, TPU pods or Kubernetes")


def build_parser() -> argparse.ArgumentParser:
    from circuits import __version__

    parser = _Parser(prog="circuits", description=__doc__, epilog=EXAMPLES, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"circuits {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, run, *, computes: bool = True) -> argparse.ArgumentParser:
        """A verb; ``computes``: it runs JAX programs (so it starts the compilation cache; ``info`` does not)."""
        sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)
        _add_processes(sub)
        sub.set_defaults(run=run, computes=computes)
        return sub

    convert = command("convert", "convert a checkpoint once into an Orbax cache that loads fast", _convert)
    convert.add_argument("source", help="HF directory, safetensors index, GGUF file or model name")
    convert.add_argument("destination", help="new directory for the Orbax cache")
    _add_dtype(convert, "store the cache in this dtype")
    convert.add_argument("--force", action="store_true", help="replace an existing cache written by circuits convert")

    info = command("info", "print where a checkpoint comes from, its configuration and parameter count (reads metadata only)", _info,
                   computes=False)
    _add_model(info)
    _add_dtype(info, "the dtype it would load in")
    info.add_argument("--mesh", default=None, help="check that it would shard onto these devices, e.g. data=1,model=8")

    analyze = command("analyze", "predict induction heads and circuits from the weights alone (streams the weights)", _analyze)
    _add_model(analyze)
    analyze.add_argument("--out", default=None, help="also write the full results as JSON to this file")
    analyze.add_argument("--top", type=_positive, default=None, help="heads and edges to show (default: 10, or every head of a smaller model)")
    analyze.add_argument("--method", choices=METHODS, default=METHODS[0],
                         help="; ".join(f"{name}: {text}" for name, text in METHOD_HELP.items()))
    analyze.add_argument("--tokens", type=_positive, default=1024, help="token stand-ins sampled for the token-level methods (all but ov-kcomp-eigen)")
    analyze.add_argument("--token-seed", type=int, default=0, help="seed of the token sample")
    analyze.add_argument("--max-pairs", type=_positive, default=4096, help="head pairs that get eigenvalue terms (ov-kcomp-eigen only)")
    analyze.add_argument("--pairs", choices=PAIR_MODES, default=PAIR_MODES[0],
                         help="bounded (prefix-share only): compute only the head pairs that can change the top --top edges and the "
                              "sources of the top --top heads (the same report; exact bounds prune the rest)")
    analyze.add_argument("--no-fold-norms", action="store_true", help="score raw weights (RMSNorm gains not folded in)")

    report = command("report", "weight-only circuit report (JSON, Markdown, HTML); --validate tests it with forward passes", _report)
    _add_model(report)
    report.add_argument("--out", default="circuits-report", help="directory for report.json, report.md and report.html")
    report.add_argument("--validate", action="store_true", help="load the model and test the prediction with forward passes")
    report.add_argument("--mesh", default=None, help="shard the validation over devices, e.g. data=1,model=8")
    _add_dtype(report, "dtype of the validation forward passes")
    report.add_argument("--top", type=_positive, default=None, help="how many heads count as top (default: 3%% of all heads)")
    report.add_argument("--method", choices=METHODS, default=METHODS[0],
                        help="the weight-only prediction method (prefix-share puts predicted and measured on one scale)")
    report.add_argument("--no-fold-norms", action="store_true", help="score raw weights (RMSNorm gains not folded in)")

    icl = command("icl", "ablate or knock out induction heads on in-context-learning tasks (Crosbie & Shutova)", _icl)
    _add_model(icl, "a checkpoint with a tokenizer")
    icl.add_argument("--quick", action="store_true", help="16 prompts per task, 2 random seeds: a few minutes on 2 CPU cores")
    icl.add_argument("--out", default=None, help="also write icl.json, icl.md and icl.png into this directory")
    icl.add_argument("--mesh", default=None, help="shard the forward passes over devices, e.g. data=1,model=8")
    _add_dtype(icl, "dtype of the forward passes")

    train = command("train", "train small models and watch induction heads form, with pattern clamps (Singh et al.)", _train)
    train.add_argument("--quick", action="store_true", help="3000 steps, batch 64, 3 seeds: the phase change in a few minutes on 2 CPU cores")
    train.add_argument("--out", default="circuits-train", help="directory for formation.json/png/svg and the checkpoints (resumed when present)")
    train.add_argument("--clamp", action="append", default=None,
                       help="a run to make (repeatable): none, previous-token, induction, copy, ablate:L1H0,L1H3, or several "
                            f"joined by + (default: {' '.join(DEFAULT_CLAMPS)})")
    train.add_argument("--task", choices=("fewshot", "repeat"), default=None, help="few-shot classification (default) or repeated random tokens")
    train.add_argument("--steps", type=_positive, default=None, help="training steps, a multiple of 100 (default 10000, --quick 3000)")
    train.add_argument("--seed", type=int, default=None, help="first seed (default 0)")
    train.add_argument("--seeds", type=_positive, default=None, help="seeds per clamp, trained together as one vmapped program (default 1, --quick 3)")
    train.add_argument("--checkpoint-every", type=_positive, default=None, help="steps between Orbax checkpoints, a multiple of 100")
    return parser


def _check_out_parent(args: argparse.Namespace) -> None:
    """Refuse an output (``--out`` or a destination) whose folder does not exist: a mistyped path is a mistake to
    name, not a tree of folders to create."""
    out = getattr(args, "out", None) or getattr(args, "destination", None)
    if out is None:
        return
    parent = Path(out).absolute().parent
    if not parent.exists():
        raise FileNotFoundError(f"cannot write {out}: the folder {parent} does not exist; fix: create it first "
                                f"(mkdir -p {parent}) or choose an existing folder")


def use_compilation_cache() -> Path:
    """Keep XLA's compiled programs in ``$CIRCUITS_XLA_CACHE`` or ``<cache directory>/xla`` between runs (JAX's
    persistent compilation cache), so a second cold start of a command skips compilation: every program is kept, however
    quickly it compiles (the weight-only pass runs about 70 programs of 10-200 ms each: 2.6 s of a 15 s cold start)."""
    import resource

    import jax

    from circuits.convert.named_models import cache_directory

    directory = Path(os.environ.get("CIRCUITS_XLA_CACHE") or cache_directory() / "xla")
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return directory  # under a file-size limit entries could be cut short: compile without the cache
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def main(argv: list[str] | None = None) -> int:
    from circuits.world_errors import (
        describe,
        keep_terminal,
        memory_failure,
        prepare_for_address_limit,
        quiet_libraries,
        storage_failure,
    )

    args = build_parser().parse_args(argv)
    if argv is None:  # a real command line (a call from Python keeps its own stderr)
        keep_terminal()
    quiet_libraries()
    try:
        _check_out_parent(args)
        if args.computes:
            use_compilation_cache()
        prepare_for_address_limit()
        distributed.initialize(args.coordinator, args.num_processes, args.process_id, detect=args.distributed)
        args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader of stdout went away (`| head`): end quietly, as git and ls do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as err:
        return _failed(describe(err) if storage_failure(err) else str(err))
    except (OSError, MemoryError) as err:
        return _failed(describe(err))
    except Exception as err:  # XLA reports an exhausted allocator as a runtime error
        if not memory_failure(err):
            distributed.fail(1, f"{type(err).__name__}: {err}")
            raise
        return _failed(describe(err))
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    return distributed.finish(0)


def _failed(message: str, status: int = 2) -> int:
    """Print the one error line; in a multi-process run, tell the others and leave with them."""
    from circuits.world_errors import report_failure

    report_failure(message)
    distributed.fail(status, message)
    return distributed.finish(status)

if __name__ == "__main__":
    sys.exit(main())
