"""The heads (paper Sec. III-C): the audio, video and fusion MLPs, Algorithm 1, the features they are trained
on, their training and their model files."""
