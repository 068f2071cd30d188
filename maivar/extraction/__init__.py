"""What the two extraction stages share: the frozen backbones' weights and devices, BatchNorm folding, bf16
autocast, out-of-memory handling, and the journal that resumes an interrupted extraction."""
