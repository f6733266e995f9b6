"""One system's training steps for bench/e2e, in a process of its own: Hugging Face (transformers +
PEFT + bitsandbytes) or Unsloth, as their users run a QLoRA job.

  python3 torch_step.py hf|unsloth JOB.json      (JOB.json: written by e2e_bench.py)

Loads the model in 4-bit NF4 with double quantization and bf16 compute, adds LoRA (r, alpha,
dropout 0, all 7 projections), puts the model in training mode (from_pretrained returns eval mode,
where both libraries skip checkpointing), and trains with AdamW at a constant lr, gradient
clipping at 1.0 and bf16 autocast, as a Trainer with bf16=True would. Each step is timed between
CUDA synchronizations. Prints one line `E2E_RESULT {json}` last.
"""
import importlib
import importlib.metadata
import json
import sys
import time

import torch

def load_hf(job):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = None
    if job["quant"]:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.bfloat16, quantization_config=quant,
                                                 device_map={"": job["device"]})
    model.config.use_cache = False
    if job["ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lora = LoraConfig(r=job["rank"], lora_alpha=job["alpha"], lora_dropout=0.0, target_modules=job["target_modules"],
                      bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(0)  # LoRA A's draw
    model = get_peft_model(model, lora)
    if job.get("save_init"):  # the starting adapter, for qlorad to start from too (lora.init_from)
        model.save_pretrained(job["save_init"])
    model.train()
    return model


def load_unsloth(job):
    importlib.import_module("unsloth")  # first: it patches transformers and peft as it is imported
    from unsloth import FastLanguageModel

    if not job["quant"]:
        raise SystemExit("unsloth: --no-quant is a debug mode of the other systems")
    ckpt = "unsloth" if job["ckpt"] else False
    model, _ = FastLanguageModel.from_pretrained(model_name=job["model"], max_seq_length=job["seq"],
                                                 dtype=torch.bfloat16, load_in_4bit=True,
                                                 use_gradient_checkpointing=ckpt)
    model = FastLanguageModel.get_peft_model(model, r=job["rank"], lora_alpha=job["alpha"], lora_dropout=0.0,
                                             target_modules=job["target_modules"], bias="none",
                                             use_gradient_checkpointing=ckpt, random_state=0)
    FastLanguageModel.for_training(model, use_gradient_checkpointing=ckpt)
    return model


def checkpointed_modules(model):
    """How many modules in training mode will recompute in backward (both libraries flag them with
    a gradient_checkpointing attribute): the check that checkpointing is as asked."""
    count = 0
    for m in model.modules():
        flag = getattr(m, "gradient_checkpointing", False)
        count += bool(m.training and flag and not callable(flag))
    return count


def batches(job, device):
    """The first rows of the shared data set, one batch per step: input ids and labels alike (the
    libraries shift the labels themselves)."""
    rows = []
    with open(job["data"]) as f:
        for line in f:
            rows.append(json.loads(line)["input_ids"][:job["seq"]])
    b, n = job["batch"], job["warmup"] + job["steps"]
    rows = (rows * (b * n // len(rows) + 1))[:b * n]
    return [torch.tensor(rows[i * b:(i + 1) * b], device=device) for i in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model, job):
    device = torch.device(job["device"])
    data = batches(job, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    step_s, losses = [], []
    for ids in data:
        sync(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        sync(device)
        step_s.append(time.perf_counter() - started)
        print(f"step {len(losses)}: loss {losses[-1]:.4f}, {step_s[-1] * 1e3:.1f} ms", file=sys.stderr, flush=True)
    return step_s, losses, sum(p.numel() for p in params)


def versions(names):
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def main():
    system, job = sys.argv[1], json.loads(open(sys.argv[2]).read())
    device = torch.device(job["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = {"hf": load_hf, "unsloth": load_unsloth}[system](job)
    recomputing = checkpointed_modules(model)
    warning = None
    if not model.training or bool(recomputing) != job["ckpt"]:
        warning = (f"training mode {model.training}, {recomputing} modules checkpointed with checkpointing "
                   f"{'on' if job['ckpt'] else 'off'}")
        print(f"WARNING: {system}: {warning}", file=sys.stderr, flush=True)
    quantized = sum(1 for m in model.modules() if type(m).__module__.startswith("bitsandbytes")
                    and type(m).__name__ == "Linear4bit")
    if job["quant"] and quantized == 0:
        raise SystemExit(f"{system}: no Linear4bit module after loading in 4-bit")
    step_s, losses, trainable = train(model, job)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    result = dict(step_s=step_s, losses=losses, peak_bytes=peak, trainable_params=trainable,
                  checkpointed_modules=recomputing, quantized_modules=quantized, warning=warning,
                  device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  versions=versions(["torch", "transformers", "peft", "bitsandbytes", "accelerate", "unsloth",
                                     "unsloth_zoo", "xformers", "trl", "triton"]))
    print("E2E_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
