#!/usr/bin/env python3
"""A real fine-tuning job for Stratolab's `process` backend (GPU nodes with real GPUs).

It trains the architecture the coordinator placed (STRATO_MODEL; OPT and Llama-style models are
built from their published configurations with random weights, since a testbed host need not
reach a model hub) on synthetic token batches, LoRA or full fine-tuning per STRATO_TASK, and
speaks the backend's contract (see Sources/Features/Jobs/ProcessJobRunner.swift):

  reads   CUDA_VISIBLE_DEVICES, STRATO_TOTAL_WORK, STRATO_RESUME_WORK, STRATO_UNIT (tokens),
          STRATO_BATCH_PER_GPU, STRATO_CHECKPOINT_DIR
  writes  `work=W checkpoint=C step_seconds=S` lines to STRATO_PROGRESS_FILE
  SIGTERM (a preemption): saves a checkpoint, reports it, exits 0
  resumes from the checkpoint in STRATO_CHECKPOINT_DIR when STRATO_RESUME_WORK > 0

Work is counted in tokens (the knowledge base's unit for fine-tuning). Needs torch and
transformers (peft for LoRA; without it LoRA falls back to training the attention projections).
"""
import os
import signal
import sys
import time

import torch

SEQ = int(os.environ.get("STRATO_SEQ_LEN", "512"))
CHECKPOINT_EVERY = float(os.environ.get("STRATO_CHECKPOINT_SECONDS", "20"))

# Published dimensions (Hugging Face configs of the named checkpoints).
ARCH = {
    "opt-125m": dict(kind="opt", hidden=768, layers=12, heads=12, ffn=3072, vocab=50272),
    "opt-350m": dict(kind="opt", hidden=1024, layers=24, heads=16, ffn=4096, vocab=50272, proj=512),
    "opt-1.3b": dict(kind="opt", hidden=2048, layers=24, heads=32, ffn=8192, vocab=50272),
    "Llama-2-7b": dict(kind="llama", hidden=4096, layers=32, heads=32, ffn=11008, vocab=32000),
    "Meta-Llama-3-8B": dict(kind="llama", hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
}


def build(name):
    import transformers as tf
    a = ARCH.get(name)
    if a is None:
        sys.exit(f"finetune.py: no configuration for model '{name}' (known: {', '.join(ARCH)})")
    if a["kind"] == "opt":
        cfg = tf.OPTConfig(hidden_size=a["hidden"], num_hidden_layers=a["layers"], num_attention_heads=a["heads"],
                           ffn_dim=a["ffn"], vocab_size=a["vocab"], word_embed_proj_dim=a.get("proj", a["hidden"]),
                           max_position_embeddings=2048)
        return tf.OPTForCausalLM(cfg)
    cfg = tf.LlamaConfig(hidden_size=a["hidden"], num_hidden_layers=a["layers"], num_attention_heads=a["heads"],
                         num_key_value_heads=a.get("kv_heads", a["heads"]), intermediate_size=a["ffn"],
                         vocab_size=a["vocab"], max_position_embeddings=4096)
    return tf.LlamaForCausalLM(cfg)


def trainable(model, task):
    if task != "finetune-lora":
        return model
    try:
        import peft
        return peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    except ImportError:
        for n, p in model.named_parameters():
            p.requires_grad = "q_proj" in n or "v_proj" in n
        return model


def main():
    total = float(os.environ["STRATO_TOTAL_WORK"])
    work = float(os.environ.get("STRATO_RESUME_WORK", "0"))
    progress_path = os.environ["STRATO_PROGRESS_FILE"]
    ckpt_dir = os.environ["STRATO_CHECKPOINT_DIR"]
    batch = max(1, int(os.environ.get("STRATO_BATCH_PER_GPU", "8")))
    task = os.environ.get("STRATO_TASK", "finetune-lora")
    name = os.environ.get("STRATO_MODEL", "opt-350m")
    ckpt = os.path.join(ckpt_dir, "state.pt")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    # Built in place on the GPU, in bf16 there: a 7B model initialised on the CPU in fp32 takes minutes.
    if device == "cuda":
        torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = trainable(build(name), task)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    if work > 0 and os.path.exists(ckpt):
        state = torch.load(ckpt, map_location=device)
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["opt"])
        work = float(state["work"])
    checkpointed = work
    vocab = ARCH[name]["vocab"]
    print(f"finetune.py: {name} {task} on {device} ({torch.cuda.get_device_name(0) if device == 'cuda' else 'no GPU'}), "
          f"{sum(p.numel() for p in params):,} trainable parameters, batch {batch}x{SEQ} tokens, "
          f"from {work:.0f} of {total:.0f} tokens", flush=True)

    stop = {"asked": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(asked=True))

    def report(step_seconds=None):
        line = f"work={work:.0f} checkpoint={checkpointed:.0f}"
        if step_seconds is not None:
            line += f" step_seconds={step_seconds:.6f}"
        with open(progress_path, "a") as f:
            f.write(line + "\n")

    def save():
        nonlocal checkpointed
        tmp = ckpt + ".tmp"
        # What training changed: the adapters under LoRA, every weight under full fine-tuning.
        weights = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        torch.save({"model": weights, "opt": opt.state_dict(), "work": work}, tmp)
        os.replace(tmp, ckpt)   # a kill mid-save leaves the previous checkpoint whole
        checkpointed = work

    loss = None
    last_ckpt = time.monotonic()
    gen = torch.Generator(device=device).manual_seed(int(work))
    while work < total and not stop["asked"]:
        t0 = time.monotonic()
        tokens = torch.randint(0, vocab, (batch, SEQ), device=device, generator=gen)
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        work = min(total, work + batch * SEQ)
        if time.monotonic() - last_ckpt >= CHECKPOINT_EVERY:
            save()
            last_ckpt = time.monotonic()
        report(time.monotonic() - t0)
    save()
    report()
    print(f"finetune.py: {'preempted' if stop['asked'] else 'finished'} at {work:.0f} tokens, loss {loss.item() if loss is not None else float('nan'):.3f}", flush=True)


if __name__ == "__main__":
    main()
