"""Alignment: preference data, the reward model, DPO, PPO (RLHF) and GRPO, one loss per function."""
