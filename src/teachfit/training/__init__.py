"""Training: supervised fine-tuning (trl + peft) and training-set selection."""
