"""The video branch: TSN's segment sampling and frame decoding, and the frozen MMAction2 TSN (stage
extract_video), with MMAction2's ResNets or the paper's BN-Inception (:mod:`maivar.video.bninception`)."""
