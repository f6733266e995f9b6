"""A qlorad-train job spec for benchmarks, and the reading of the trainer's JSON events.

The spec trains the random-token data of random_llama.make_data (`input_ids` format, one record per
packed row) with a constant learning rate and no periodic checkpoints, so every step is alike.
"""
import json

from random_llama import PROJECTIONS


def write_spec(path, model, data, out, *, strategy, nproc, micro, accum, steps, seq_len, precision,
               lora_precision="auto", cpu_offload=False, activation_checkpointing=True, lr=1.0e-4,
               quantization="nf4", shuffle=True, name=None, init_from=None, activation_offload="auto",
               ignore_memory_estimate=False, loss_chunk_size="auto"):
    path.write_text(f"""name: {name or f"parallel-{strategy}-{nproc}"}
model: {{path: {model}}}
quantization: {{type: {quantization}, double_quant: true, block_size: 64}}
lora: {{r: 16, alpha: 16, dropout: 0.0, target_modules: [{", ".join(PROJECTIONS)}], compute_precision: {lora_precision}{f", init_from: {init_from}" if init_from else ""}}}
data: {{path: {data}, format: input_ids, max_seq_len: {seq_len}, packing: true, shuffle: {str(shuffle).lower()}, seed: 0}}
train: {{max_steps: {steps}, micro_batch_size: {micro}, grad_accum: {accum}, lr: {lr:.1e}, scheduler: constant,
        warmup_steps: 0, max_grad_norm: 1.0, seed: 0, precision: {precision},
        activation_checkpointing: {str(activation_checkpointing).lower()}, activation_offload: {activation_offload},
        loss_chunk_size: {loss_chunk_size}}}
resources: {{gpus: {nproc}, device: auto, ignore_memory_estimate: {str(ignore_memory_estimate).lower()}}}
parallel: {{strategy: {strategy}, reshard_after_forward: true, cpu_offload: {str(cpu_offload).lower()}}}
checkpoint: {{every_steps: 0, keep: 1, output_dir: {out}}}
""")


def parse_events(stdout, stderr):
    """Metrics of every rank (rank 0's on stdout, the others' on stderr as '[rank R] {...}'), the
    bytes per step rank 0 received in collectives (its closing 'communication' log) and its phase
    timing log (with --phase-timing)."""
    metrics, comm, phases = {}, None, None
    lines = [(0, l) for l in stdout.splitlines()]
    for l in stderr.splitlines():
        if l.startswith("[rank "):
            rank, _, rest = l[len("[rank "):].partition("] ")
            lines.append((int(rank), rest))
    for rank, line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "metrics":
            metrics.setdefault(event.get("rank", rank), []).append(event)
        if rank == 0 and event.get("event") == "log" and event.get("message", "").startswith("communication:"):
            comm = int(event["message"].split("(")[1].split(" ")[0])
        if rank == 0 and event.get("event") == "log" and event.get("message", "").startswith("phase timing:"):
            phases = event["message"]
    return metrics, comm, phases
