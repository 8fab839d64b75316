"""rembg's model files, as facts: each file's name and checksum, and how rembg feeds it, as manifest fields.

rembg keeps its models in $U2NET_HOME (else $XDG_DATA_HOME/.u2net, else
~/.u2net), each saved as "<model name>.onnx" whatever its download was called,
and checks each download against the hash its session class lists (md5 for all
but bria-rmbg, which has a sha256). The recipes below are read from rembg's
session classes (rembg/sessions/*.py):

- every session feeds the photo through BaseSession.normalize: converted to
  RGB, resized to the input size with LANCZOS, divided by the image's own
  maximum (not 255), then (x - mean) / std: scale "max", resize "lanczos";
- every session reads channel 0 of output 0, stretches it from its own
  minimum..maximum to 0..255 (mask_range "stretch") and resizes the mask back
  with LANCZOS; the BiRefNet sessions pass output 0 through a sigmoid first
  (activation "sigmoid").

One difference is known and small: rembg truncates the stretched map to whole
levels where bgremover rounds, so a mask level may differ by one in 255.

Standard library only: the supervisor may read this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

U2NET = "U-2-Net by Xuebin Qin et al., https://github.com/xuebinqin/U-2-Net"
ISNET = "IS-Net (DIS) by Xuebin Qin et al., https://github.com/xuebinqin/DIS"
ANIME = "anime-segmentation (IS-Net) by SkyTNT, https://github.com/SkyTNT/anime-segmentation"
BIREFNET = "BiRefNet by Peng Zheng et al., https://github.com/ZhengPeng7/BiRefNet"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@dataclass(frozen=True)
class RembgModel:
    name: str  # rembg's model name (`rembg i -m NAME`), and the name it gets in bgremover's manifest
    md5: str | None  # the hash rembg's session class checks its download against
    sha256: str | None = None
    input_size: int = 320  # the square side rembg resizes the photo to
    mean: tuple[float, float, float] = tuple(IMAGENET["mean"])
    std: tuple[float, float, float] = tuple(IMAGENET["std"])
    activation: str = "none"
    licence: str = ""
    upstream: str = ""
    refusal: str | None = None  # why bgremover does not import it, when it does not

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    def entry_fields(self) -> dict:
        """The manifest fields of this model, all but file and sha256 (which come from the file imported)."""
        return {
            "input_size": [self.input_size, self.input_size],
            "mean": list(self.mean),
            "std": list(self.std),
            "output_index": 0,
            "licence": self.licence,
            "source": f"{self.upstream}; the ONNX export rembg downloads as {self.file}",
            "scale": "max",
            "activation": self.activation,
            "resize": "lanczos",
            "mask_range": "stretch",
        }


def _birefnet(name: str, md5: str) -> RembgModel:
    return RembgModel(name, md5, input_size=1024, activation="sigmoid", licence="MIT", upstream=BIREFNET)


MODELS = {
    model.name: model
    for model in (
        RembgModel("u2net", "60024c5c889badc19c04ad937298a77b", licence="Apache-2.0", upstream=U2NET),
        RembgModel("u2netp", "8e83ca70e441ab06c318d82300c84806", licence="Apache-2.0", upstream=U2NET),
        RembgModel(
            "u2net_human_seg",
            "c09ddc2e0104f800e3e1bb4652583d1f",
            licence="Apache-2.0",
            upstream=f"{U2NET} (its human segmentation weights)",
        ),
        # The silueta weights were shared by their author in U-2-Net's issue #295 with no licence of their own.
        RembgModel(
            "silueta",
            "55e59e0d8062d2f5d013f4725ee84782",
            licence="not stated (a reduced U-2-Net; U-2-Net itself is Apache-2.0)",
            upstream=f"silueta, a reduced {U2NET}, shared in its issue #295",
        ),
        RembgModel(
            "isnet-general-use",
            "fc16ebd8b0c10d971d3513d564d01e29",
            input_size=1024,
            mean=(0.5, 0.5, 0.5),
            std=(1.0, 1.0, 1.0),
            licence="Apache-2.0",
            upstream=ISNET,
        ),
        RembgModel(
            "isnet-anime",
            "6f184e756bb3bd901c8849220a83e38e",
            input_size=1024,
            std=(1.0, 1.0, 1.0),
            licence="Apache-2.0",
            upstream=ANIME,
        ),
        _birefnet("birefnet-general", "7a35a0141cbbc80de11d9c9a28f52697"),
        _birefnet("birefnet-general-lite", "4fab47adc4ff364be1713e97b7e66334"),
        _birefnet("birefnet-portrait", "c3a64a6abf20250d090cd055f12a3b67"),
        _birefnet("birefnet-dis", "2d4d44102b446f33a4ebb2e56c051f2b"),
        _birefnet("birefnet-hrsod", "c017ade5de8a50ff0fd74d790d268dda"),
        _birefnet("birefnet-cod", "f6d0d21ca89d287f17e7afe9f5fd3b45"),
        _birefnet("birefnet-massive", "33e726a2136a3d59eb0fdf613e31e3e9"),
        RembgModel(
            "bria-rmbg",
            None,
            sha256="5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958",
            input_size=1024,
            licence="CC BY-NC 4.0",
            upstream="RMBG-2.0 by BRIA AI",
            refusal="it is BRIA AI's RMBG-2.0, licensed CC BY-NC 4.0: non-commercial use only, commercial "
            "use needs an agreement with BRIA, so bgremover does not import it",
        ),
        RembgModel(
            "u2net_cloth_seg",
            "2434d1f3cb744e0e49386c906e5a08bb",
            input_size=768,
            licence="MIT",
            upstream="cloth-segmentation by levindabhi",
            refusal="its output is three clothing masks (upper body, lower body, full body), "
            "which one manifest entry cannot express as one mask",
        ),
    )
}

SAM_REFUSAL = (
    "it is part of a SAM model (an encoder and a decoder that need prompt points), "
    "which one manifest entry cannot express"
)


def by_file_name(file_name: str) -> RembgModel | None:
    """The rembg model saved under `file_name`, if rembg saves one so."""
    name = file_name.removesuffix(".onnx") if file_name.endswith(".onnx") else None
    return MODELS.get(name) if name else None


def by_checksum(md5: str, sha256: str) -> RembgModel | None:
    """The rembg model whose listed checksum this is, whatever the file is called."""
    for model in MODELS.values():
        if (model.md5 and model.md5 == md5) or (model.sha256 and model.sha256 == sha256):
            return model
    return None


def is_sam_file(file_name: str) -> bool:
    return file_name.startswith("sam_") and (".encoder" in file_name or ".decoder" in file_name)


def home() -> Path:
    """rembg's own models folder, by rembg's own rule."""
    default = Path(os.environ.get("XDG_DATA_HOME", "~")) / ".u2net"
    return Path(os.environ.get("U2NET_HOME") or default).expanduser()
