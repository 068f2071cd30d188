"""The audio branch: the paper's six audio images (stage render) and their frozen-backbone features (stage
extract_audio)."""
