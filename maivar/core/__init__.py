"""What every stage shares: params, running a stage, atomic outputs, rejections, the worker pool, the manifest
and the HDF5 stores. Every stage depends on this whole folder."""
