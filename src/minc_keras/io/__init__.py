"""Volume input and output: MINC1, MINC2 and NIfTI in, MINC2 and NIfTI out.

One in-memory type, :class:`Volume` (an array plus its voxel-to-world affine),
travels from the first read to the last write.

Example::

    from minc_keras.io import read_volume, write_volume
    scan = read_volume("sub-01_T1w.mnc")
    write_volume(scan, "sub-01_T1w.nii.gz")
"""

from minc_keras.io.read import IMAGE_SUFFIXES, read_volume, volume_format
from minc_keras.io.volume import Volume
from minc_keras.io.write import convert_volume, output_suffix, write_volume

__all__ = [
    "IMAGE_SUFFIXES",
    "Volume",
    "convert_volume",
    "output_suffix",
    "read_volume",
    "volume_format",
    "write_volume",
]
