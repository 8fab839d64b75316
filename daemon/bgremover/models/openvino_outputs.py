"""OpenVINO computes only what a job reads: the model cut down to its outputs up to the mask.

A network trained with deep supervision keeps its side outputs in the file.
IS-Net's has twelve: the mask, five side maps each upsampled to 1024×1024 and
their features. A job reads one, but OpenVINO computes every output a model
declares: at one thread in bf16, IS-Net's inference takes 1.85 s as it is
and 1.63 s without the side outputs, and its first run in a fresh process
about 0.5 s less. (U²-Net fuses its side maps into the mask, so cutting them
leaves out only their sigmoids; onnxruntime takes the same time either way.)

The cut model is written once as OpenVINO IR in a folder of the compile cache
(`cut/`), named by the source file's identity (path, size, modification
time) and the mask's output index, so that each job compiles it from a path
and finds its compiled blob in the cache without reading the source. A small
record beside it says which file to compile: the cut IR, or the source itself
where cutting leaves out no work. A source that changed or went away loses
its cut files the next time one is made, so the folder holds at most one cut
per model file in use. Without a cache folder the model is cut in memory.

Imported only where OpenVINO runs (a job process or a command), as
openvino_session is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from bgremover import durable

CUT_FOLDER = "cut"  # under the compile cache
# Operations that only finish an output: leaving them out saves nothing worth a file.
OUTPUT_ONLY = frozenset({"Result", "Sigmoid", "Convert"})


def compile_target(core, source: Path, mask_index: int, cache_dir: Path | None):
    """What to hand compile_model: a path where there is a cache folder, else the model cut in memory."""
    if cache_dir is None:
        model, _ = cut(core.read_model(str(source)), mask_index)
        return model
    folder = cache_dir / CUT_FOLDER
    try:
        key = f"{identity(source)}-{mask_index}"
        target = recorded(folder, key, source)
        if target is None:  # no cut yet, or its IR was removed by hand: made (again) rather than failing every job
            (folder / f"{key}.json").unlink(missing_ok=True)
            make(core, source, mask_index, folder, key)
            target = recorded(folder, key, source)
    # OpenVINO says RuntimeError when it cannot write the IR (a full state folder) or read the model (whose
    # compile then says why, in one sentence): either way the whole model, slower but the same mask.
    except (OSError, ValueError, RuntimeError):
        return str(source)
    return target or str(source)


def recorded(folder: Path, key: str, source: Path) -> str | None:
    """The file the cut's record says to compile (the source, where cutting leaves out no work); None where
    there is no record, or the IR it names is gone."""
    record = folder / f"{key}.json"
    if not record.is_file():
        return None
    chosen = json.loads(record.read_text("utf-8")).get("file")
    if not chosen:
        return str(source)
    return str(folder / chosen) if (folder / chosen).is_file() else None


def identity(source: Path) -> str:
    """The source file as it is now: a replaced or edited file gets another cut."""
    st = source.stat()
    return hashlib.sha256(f"{source.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]


def cut(model, mask_index: int):
    """The model with its outputs up to the mask only, and whether that leaves out any work."""
    import openvino

    results = model.get_results()
    if len(results) <= mask_index + 1:
        return model, False
    kept = openvino.Model(results[: mask_index + 1], model.get_parameters(), model.get_friendly_name())
    names = {node.get_friendly_name() for node in kept.get_ordered_ops()}
    left_out = [node for node in model.get_ordered_ops() if node.get_friendly_name() not in names]
    return kept, any(node.get_type_name() not in OUTPUT_ONLY for node in left_out)


def make(core, source: Path, mask_index: int, folder: Path, key: str) -> None:
    """Write the cut IR (where it leaves out work) and its record, one process at a time."""
    import openvino

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two jobs starting together: the second finds the first's record
        record = folder / f"{key}.json"
        if record.is_file():
            return
        forget_stale(folder)
        model, leaves_out_work = cut(core.read_model(str(source)), mask_index)
        file = None
        if leaves_out_work:
            temp = folder / f"{durable.TEMP_PREFIX}{key}.xml"
            try:
                openvino.serialize(model, str(temp), str(temp.with_suffix(".bin")))  # as read: fp32 stays fp32
                # The .bin first: whoever finds the .xml finds its weights beside it.
                durable.publish(temp.with_suffix(".bin"), folder / f"{key}.bin")
                durable.publish(temp, folder / f"{key}.xml")
            finally:
                for written in (temp, temp.with_suffix(".bin")):
                    written.unlink(missing_ok=True)
            file = f"{key}.xml"
        durable.atomic_write(record, json.dumps({"source": str(source.resolve()), "file": file}).encode())


def forget_stale(folder: Path) -> None:
    """Remove the cuts of sources that changed or went away, and what a killed writer left; under the lock."""
    for leftover in folder.glob(f"{durable.TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)
    for record in folder.glob("*.json"):
        key = record.stem
        try:
            source = Path(json.loads(record.read_text("utf-8"))["source"])
            current = source.is_file() and key.startswith(f"{identity(source)}-")
        except (OSError, ValueError, KeyError, TypeError):
            current = False
        if not current:
            for suffix in (".xml", ".bin", ".json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / f"{key}{suffix}")
