"""bf16 with its last convolutions in fp32: the OpenVINO variant `models verify` makes when plain bf16 fails the gate.

bf16 keeps 8 bits of mantissa. For U²-Net that halves the inference and
keeps the masks at IoU 0.9965 on average against fp32, but 0.977 on one
photo ("chelsea", where 15 % of fp32's subject lies between alpha 64 and 192,
so small shifts cross the threshold): refused. The error is not spread evenly.
Where it lands on the mask is decided late, in the decoder and the side
outputs fused into the mask, where the maps are few and cheap; computing those
in fp32 brings the lowest IoU over the gate and keeps most of the saving.

How many must stay in fp32 is searched, not guessed: a bisection over the
number of trailing convolutions, in graph order, each count built and checked
against fp32 onnxruntime's masks (`passes`). Past MOST_KEPT_SHARE of them,
bf16 would gain too little to be worth a variant, and the search gives up.

OpenVINO computes a node in fp32 under a bf16 hint when its runtime info marks
it precision-sensitive; the IR it writes keeps the mark. The variant is that IR
(NAME.bf16-K.xml and .bin beside the model, K the count kept), registered in the
manifest's checks under "bf16" for this very model file only once it passes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from bgremover import durable
from bgremover.models.manifest import ModelSpec

MOST_KEPT_SHARE = 0.5
PRECISION_SENSITIVE = "precise_0"  # the runtime-info key OpenVINO's precision conversion leaves alone
WORK_PREFIX = ".bgremover-bf16-"  # the search's folder in the models folder; a killed search's is removed


def convolution_count(source: Path) -> int:
    import openvino

    return len(_convolutions(openvino.Core().read_model(str(source))))


def _convolutions(model) -> list:
    return [node for node in model.get_ordered_ops() if node.get_type_name() == "Convolution"]


def write_variant(source: Path, kept: int, target: Path) -> None:
    """The model as OpenVINO IR at `target` (.xml, its .bin beside), its last `kept` convolutions marked fp32."""
    import openvino

    model = openvino.Core().read_model(str(source))
    convolutions = _convolutions(model)
    for node in convolutions[len(convolutions) - kept :]:
        node.get_rt_info()[PRECISION_SENSITIVE] = ""
    openvino.serialize(model, str(target), str(target.with_suffix(".bin")))


def search(
    spec: ModelSpec, work: Path, passes: Callable[[Path], dict], say: Callable[[str], None]
) -> tuple[int, dict, Path] | None:
    """The fewest trailing convolutions in fp32 with which bf16 passes, its record and its IR; None past the most."""
    total = convolution_count(spec.path)
    most = int(total * MOST_KEPT_SHARE)

    def ir(kept: int) -> Path:
        return work / f"kept-{kept}.xml"

    def check(kept: int) -> dict:
        write_variant(spec.path, kept, ir(kept))
        record = passes(ir(kept))
        verdict = "passes" if record["allowed"] else "fails"
        say(
            f"{spec.name} bf16 with the last {kept} of {total} convolutions in fp32: {verdict} "
            f"(IoU mean {record['mean_iou']:.4f}, lowest {record['lowest_iou']:.4f})"
        )
        return record

    best = check(most)
    if not best["allowed"]:
        say(f"{spec.name}: bf16 fails the gate even with its last {most} of {total} convolutions in fp32")
        return None
    failing, passing = 0, most  # none kept: plain bf16, which failed
    while passing - failing > 1:
        middle = (failing + passing) // 2
        record = check(middle)
        # Only the fewest passing so far stays on disk: u2net's IR is 176 MB.
        remove_ir(ir(passing if record["allowed"] else middle))
        if record["allowed"]:
            passing, best = middle, record
        else:
            failing = middle
    return passing, best, ir(passing)


def remove_ir(xml: Path) -> None:
    xml.with_suffix(".bin").unlink(missing_ok=True)
    xml.unlink(missing_ok=True)


def keep_what_bf16_must(
    spec: ModelSpec, folder: Path, passes: Callable[[Path], dict], say: Callable[[str], None] = print
) -> tuple[dict, dict] | None:
    """Search, and install the passing variant beside the model: its manifest entry and the record `passes`
    gave it, or None if none passed."""
    folder.mkdir(parents=True, exist_ok=True)  # the bundled model's checks go to a models folder not yet made
    for leftover in folder.glob(f"{WORK_PREFIX}*"):  # a search that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    # In the models folder, so that the variant is moved into place, not copied.
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX, dir=folder) as work:
        found = search(spec, Path(work), passes, say)
        if found is None:
            return None
        kept, record, built = found
        # Named by the count: a daemon running the previous variant never finds its .xml beside a new .bin.
        target = folder / f"{spec.name}.bf16-{kept}.xml"
        durable.publish(built.with_suffix(".bin"), target.with_suffix(".bin"))
        durable.publish(built, target)
    say(f"made {target}: bf16 with the last {kept} convolutions in fp32")
    return {"file": target.name, "of": spec.sha256, "fp32_convolutions": kept}, record


def remove_others(spec: ModelSpec, folder: Path, keep: str | None) -> None:
    """Remove the model's bf16 variants but `keep` (the .xml registered), once the manifest names that one."""
    for old in folder.glob(f"{spec.name}.bf16-*.xml"):
        if old.name != keep:
            remove_ir(old)
