"""Cloud-Optimised GeoTIFF written from windows of rows, with its overviews averaged on the fly.

GDAL's COG driver only copies a whole dataset, and when it has to make the overviews itself it
reads the full-resolution grid again, writes them to a temporary file and copies them once more:
for a continent at 1 km that is most of the time spent. :class:`CogWriter` instead receives the
grid a window of rows at a time, writes it to a fast temporary GeoTIFF (ZSTD level 1, no
predictor) and averages each window 2 x 2 into every overview level as it goes; the COG driver
then compresses the full resolution and the ready overviews once (``OVERVIEWS=FORCE_USE_EXISTING``
through a VRT that names them). Memory is one window and its halvings; the grid is read from disk
once, by the final copy.

The overview levels are those GDAL's COG driver would make: halve until neither side exceeds the
block size. Each overview cell is the mean of the cells below it (edge cells of an odd side
average the cells that exist), as GDAL's ``average`` resampling does.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.io import DatasetWriter
from rasterio.windows import Window

FloatStack = npt.NDArray[np.float32]

#: The temporary files are written once and read once: fastest compression, all cores.
_WORK_PROFILE = {
    "driver": "GTiff",
    "dtype": "float32",
    "tiled": True,
    "compress": "zstd",
    "zstd_level": 1,
    "num_threads": "ALL_CPUS",
    "BIGTIFF": "YES",
}


@dataclass(frozen=True)
class CogOptions:
    """How the final file is compressed: a GDAL COG ``compress`` method, its ``level``, tiles in cells.

    ``significant_bits`` rounds every value to that many significant binary digits (of float32's
    24) before writing, so the low bits are zeros that compress to nothing: 16 bits keep a
    relative error under 2 ** -16 (1.5e-5), far below what a kernel density, a distance decay or a
    0-1 score can mean, and make the file a third of the size and faster to write. ``None``
    writes the values as computed.
    """

    compress: str = "zstd"
    level: int = 1
    predictor: bool = True
    blocksize: int = 512
    significant_bits: int | None = 16


def round_significant(block: FloatStack, bits: int) -> FloatStack:
    """``block`` (float32) rounded to ``bits`` significant binary digits, to nearest, in place.

    The relative error is at most ``2 ** -bits``; 0, infinities and NaN are kept.
    """
    if not 1 <= bits <= 24:
        raise ValueError(f"significant bits must be between 1 and 24 (float32), got {bits!r}")
    drop = 24 - bits
    if drop == 0:
        return block
    raw = block.view(np.uint32)
    finite = np.isfinite(block)
    half, mask = np.uint32(1 << (drop - 1)), np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    rounded = (raw + half) & mask
    np.copyto(raw, rounded, where=finite)
    return block


def overview_shapes(width: int, height: int, blocksize: int) -> list[tuple[int, int]]:
    """(width, height) of each overview level: halved, rounding up, until no side exceeds ``blocksize``."""
    shapes: list[tuple[int, int]] = []
    w, h = width, height
    while w > blocksize or h > blocksize:
        w, h = math.ceil(w / 2), math.ceil(h / 2)
        shapes.append((w, h))
    return shapes


def _halve_band(band: npt.NDArray[np.float32], out: npt.NDArray[np.float32]) -> None:
    """Mean of each 2 x 2 cells of ``band`` into ``out`` (an odd last row or column averages what exists)."""
    rows, cols = band.shape
    even_r, even_c = rows - rows % 2, cols - cols % 2
    half = np.empty((out.shape[0], cols), np.float32)
    pairs = half[: even_r // 2]
    np.add(band[0:even_r:2], band[1:even_r:2], out=pairs)
    pairs *= np.float32(0.5)
    if rows % 2:
        half[-1] = band[-1]
    core = out[:, : even_c // 2]
    np.add(half[:, 0:even_c:2], half[:, 1:even_c:2], out=core)
    core *= np.float32(0.5)
    if cols % 2:
        out[:, -1] = half[:, -1]


def halve(block: FloatStack) -> FloatStack:
    """The next overview level of a (bands, rows, cols) block: the mean of each 2 x 2 cells."""
    bands, rows, cols = block.shape
    out = np.zeros((bands, -(-rows // 2), -(-cols // 2)), np.float32)
    for band, target in zip(block, out, strict=True):
        if band.any():  # an empty band (no route of a category, no crossing) stays 0
            _halve_band(band, target)
    return out


class CogWriter:
    """Writes a float32 grid window by window and finishes it as a Cloud-Optimised GeoTIFF.

    ``crs`` and ``transform`` georeference the grid (any CRS rasterio understands). Windows are
    written top to bottom with :meth:`write`; each must start on a row that is a multiple of
    :attr:`row_multiple` (so its halvings fall on whole overview rows). :meth:`finish` writes
    ``path`` with band descriptions and dataset tags. ``work_dir`` holds the temporary files
    (about the size of the grid compressed with ZSTD level 1); the caller removes it.
    """

    def __init__(
        self,
        path: Path,
        work_dir: Path,
        *,
        width: int,
        height: int,
        count: int,
        crs: object,
        transform: Affine,
        nodata: float,
        options: CogOptions | None = None,
    ) -> None:
        self.path, self.work_dir = path, work_dir
        self.width, self.height, self.count = width, height, count
        self.crs, self.transform, self.nodata = crs, transform, nodata
        self.options = options or CogOptions()
        self.levels = overview_shapes(width, height, self.options.blocksize)
        self.row_multiple = 2 ** len(self.levels)
        self._files: list[Path] = [work_dir / "full.tif"] + [
            work_dir / f"overview_{i + 1}.tif" for i in range(len(self.levels))
        ]
        self._datasets: list[DatasetWriter] = []
        self._next_row = 0

    def __enter__(self) -> CogWriter:
        sizes = [(self.width, self.height), *self.levels]
        for file, (w, h) in zip(self._files, sizes, strict=True):
            self._datasets.append(
                rasterio.open(
                    file,
                    "w",
                    width=w,
                    height=h,
                    count=self.count,
                    crs=self.crs,
                    transform=self.transform,
                    nodata=self.nodata,
                    blockxsize=self.options.blocksize,
                    blockysize=self.options.blocksize,
                    **_WORK_PROFILE,
                )
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._close()

    def _close(self) -> None:
        for dataset in self._datasets:
            dataset.close()
        self._datasets = []

    def write(self, row0: int, block: FloatStack) -> None:
        """Write ``block`` (bands, rows, width), float32, from grid row ``row0`` down, and its overviews."""
        if row0 != self._next_row or row0 % self.row_multiple:
            raise ValueError(
                f"windows must follow each other from row 0 and start on multiples of {self.row_multiple}; "
                f"got row {row0} after row {self._next_row}"
            )
        if block.shape[0] != self.count or block.shape[2] != self.width:
            raise ValueError(f"a block must be ({self.count}, rows, {self.width}), got {block.shape}")
        self._next_row = row0 + block.shape[1]
        level_block = np.array(block, dtype=np.float32)  # a copy: the caller's block stays as it is
        if self.options.significant_bits is not None:
            round_significant(level_block, self.options.significant_bits)
        level_row = row0
        for dataset in self._datasets:
            window = Window(0, level_row, level_block.shape[2], level_block.shape[1])  # type: ignore[no-untyped-call]
            dataset.write(level_block, window=window)
            if dataset is not self._datasets[-1]:
                level_block, level_row = halve(level_block), level_row // 2

    def finish(self, descriptions: Sequence[str], tags: Mapping[str, str]) -> Path:
        """Write the COG at ``path`` from the windows written; returns ``path``."""
        if self._next_row != self.height:
            raise ValueError(f"only {self._next_row} of {self.height} rows were written")
        if len(descriptions) != self.count:
            raise ValueError(f"{self.count} band descriptions needed, got {len(descriptions)}")
        crs_wkt = self._datasets[0].crs.to_wkt()
        self._close()
        vrt = self.work_dir / "grid.vrt"
        vrt.write_text(self._vrt_xml(crs_wkt, descriptions, tags), encoding="utf-8")
        opts = self.options
        creation: dict[str, object] = {
            "compress": opts.compress,
            "level": opts.level,
            "blocksize": opts.blocksize,
            "num_threads": "ALL_CPUS",
            "overviews": "FORCE_USE_EXISTING",
            "BIGTIFF": "IF_SAFER",
        }
        if opts.predictor:
            creation["predictor"] = "YES"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rasterio.shutil.copy(vrt, self.path, driver="COG", **creation)
        return self.path

    def _vrt_xml(self, crs_wkt: str, descriptions: Sequence[str], tags: Mapping[str, str]) -> str:
        """A VRT of the full-resolution work file whose bands name the averaged overviews."""
        root = ET.Element("VRTDataset", rasterXSize=str(self.width), rasterYSize=str(self.height))
        ET.SubElement(root, "SRS").text = crs_wkt
        t = self.transform
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        metadata = ET.SubElement(root, "Metadata")
        for key, value in tags.items():
            ET.SubElement(metadata, "MDI", key=key).text = value
        for band, description in enumerate(descriptions, start=1):
            element = ET.SubElement(root, "VRTRasterBand", dataType="Float32", band=str(band))
            ET.SubElement(element, "Description").text = description
            ET.SubElement(element, "NoDataValue").text = repr(self.nodata)
            source = ET.SubElement(element, "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = str(self._files[0])
            ET.SubElement(source, "SourceBand").text = str(band)
            for file in self._files[1:]:
                overview = ET.SubElement(element, "Overview")
                ET.SubElement(overview, "SourceFilename", relativeToVRT="0").text = str(file)
                ET.SubElement(overview, "SourceBand").text = str(band)
        return ET.tostring(root, encoding="unicode")
