"""The dataset: UCF101's split lists, media probing and ffmpeg demux, and the audio-subset rule (stage prepare)."""
