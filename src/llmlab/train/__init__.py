"""Training: the one loop (loop.py), AdamW and schedules (optim.py), checkpoints, DDP/FSDP2, and the
stage entry points (pretrain.py; sft.py and friends reuse `loop.train`)."""
