"""The dataset: its listing in any format (:mod:`maivar.data.readers`, :mod:`maivar.data.listing`), media probing
and ffmpeg demux, and the audio-subset rule (stage prepare)."""
