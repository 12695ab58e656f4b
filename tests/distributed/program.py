"""One program run by every process of a multi-process test (and once alone, for the reference).

usage: python program.py CHECKPOINT OUT MESH   e.g. MESH = data=1,model=4

Joins the run from the launcher's environment, loads CHECKPOINT onto the global mesh, and saves (process 0
only) the logits of a sharded forward, a sweep over every single head, the weight-only prediction from the
streamed checkpoint, and a small in-context-learning run (character tokenizer).
Each process also records the bytes it copied out of the checkpoint while loading.
"""

import json
import sys
from pathlib import Path

import numpy as np

from circuits import distributed

distributed.initialize()  # values from python -m circuits.launch; one process without it

import jax  # noqa: E402
from flax import nnx  # noqa: E402
from tokenizers import Tokenizer, models  # noqa: E402

import circuits  # noqa: E402
from circuits.analysis.ablation import one_head_each, sweep_losses  # noqa: E402
from circuits.analysis.induction import predict_induction  # noqa: E402
from circuits.convert.table_checkpoint import TableCheckpoint  # noqa: E402
from circuits.icl.experiment import ICLSettings, run_icl  # noqa: E402
from circuits.models.sharding import host_array, parse_mesh  # noqa: E402
from circuits.utils import atomic_write_text  # noqa: E402

read_bytes = {"blocks": 0, "whole": 0}
"""Bytes this process copied out of the checkpoint: blocks cut from memory-mapped tensors, and whole tensors."""
_block, _whole = TableCheckpoint.tensor_block, TableCheckpoint.tensor


def counted_block(self, name, layer, index):
    block = _block(self, name, layer, index)
    read_bytes["blocks"] += block.nbytes
    return block


def counted_whole(self, name, layer=None):
    array = _whole(self, name, layer)
    read_bytes["whole"] += array.nbytes
    return array


TableCheckpoint.tensor_block, TableCheckpoint.tensor = counted_block, counted_whole


checkpoint, out, mesh_spec = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out.mkdir(exist_ok=True)
model = circuits.load(checkpoint, mesh=parse_mesh(mesh_spec), show_progress=False)
(out / f"read-{jax.process_index()}.json").write_text(json.dumps({
    **read_bytes, "parameters": sum(leaf.nbytes for leaf in jax.tree.leaves(nnx.state(model))),
    "processes": jax.process_count(), "devices": jax.device_count(),
}))
config = model.config
tokens = np.random.default_rng(0).integers(1, config.vocab_size, (4, 24)).astype(np.int32)
logits = host_array(nnx.jit(lambda m, t: m.forward(t)[0])(model, tokens))
losses = sweep_losses(model, tokens, np.ones(23, bool), ablate=one_head_each(config), show_progress=False)
prediction = predict_induction(circuits.open_weights(checkpoint, show_progress=False), method="kcomp-token-zgain", n_tokens=256)
share = predict_induction(circuits.open_weights(checkpoint, show_progress=False), method="prefix-share", n_tokens=256)
characters = Tokenizer(models.BPE(vocab={chr(i): i for i in range(128)}, merges=[]))
icl = run_icl(model, characters, "tiny", ICLSettings(fractions=(0.125,), prompts_per_task=4, random_seeds=(0,),
                                                     selection_seeds=(0,)), show_progress=False)
atomic_write_text(out / "writer.txt", str(jax.process_index()))
if distributed.is_writer():
    np.savez(out / "results.npz", logits=logits, losses=losses, predicted=prediction.predicted_induction.scores,
             k_composition=prediction.k_composition.scores, sources=prediction.source_heads,
             share_predicted=share.predicted_induction.scores, share_sources=share.source_heads,
             icl_accuracy=[value for row in icl.accuracy.values() for values in row.values() for value in values],
             icl_pattern_matching=[score for _, _, score in icl.pattern_matching_heads])
