"""`bgremover bench --slots 1,2,auto`: the same images through the daemon at each slot count, in one run.

Each slot count gets a daemon of its own on a fresh root, fed the same
corpus; the in-process loop of the same run (one process, one image after
another, all threads) is the reference every ratio is taken against. For each
count: throughput, the jobs' stage times under that load, what isolation adds
per job (its wall time less its stages), and the peak memory of the
supervisor, of one job, and of the running jobs together.
"""

from __future__ import annotations

import argparse

from bgremover.bench.figures import percent, ratio

AUTO = "auto"


def slot_counts_argument(text: str) -> list[str]:
    """`--slots 1,2,auto`: whole numbers of at least 1, or auto, each once, in the order given."""
    counts = [part.strip().lower() for part in text.split(",")]
    for count in counts:
        if count != AUTO and not (count.isdigit() and int(count) >= 1):
            raise argparse.ArgumentTypeError(
                f"expected slot counts such as 1,2,auto (whole numbers of at least 1, or auto), got {text!r}"
            )
    if len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"each slot count once, got {text!r}")
    return counts


def environment(count: str) -> dict[str, str]:
    """The daemon's settings for one slot count; its threads per job follow, unless the user set threads."""
    return {"BGREMOVER_JOB_SLOTS": count}


def slot_run(sections: dict, ready: dict) -> dict:
    """One slot count's figures, from a daemon run's sections and its daemon_ready line."""
    daemon, memory = sections["daemon"], sections["memory"]
    return {
        "job_slots": ready.get("job_slots"),
        "threads_per_job": ready.get("intra_op_threads", ready.get("threads")),
        "done": daemon["done"],
        "failed": daemon["failed"],
        "images_per_s": daemon["images_per_s"],
        "ms_per_image": daemon["ms_per_image"],
        "job_duration_ms": daemon["job_duration_ms"],
        "job_stages": daemon["job_stages"],
        "in_job_ms": daemon["in_job_ms"],
        "isolation_overhead_ms": daemon["isolation_overhead_ms"],
        "isolation_overhead_pct": percent(daemon["isolation_overhead_ms"], daemon["in_job_ms"]),
        "memory": {
            "supervisor_hwm_mb": memory["supervisor_hwm_mb"],
            "job_peak_rss_mb_max": memory["job_peak_rss_mb_max"],
            "jobs_rss_mb_sum_max": memory["jobs_rss_mb_sum_max"],
        },
    }


def compare(runs: dict[str, dict], local: dict) -> dict:
    """Every run beside the in-process loop, and which slot count did best."""
    reference = local["images_per_s"]
    compared = {
        label: {**run, "over_in_process_ratio": ratio(run["images_per_s"], reference)} for label, run in runs.items()
    }
    one = runs.get("1")
    for run in compared.values():
        if one is not None:
            run["over_1_slot_ratio"] = ratio(run["images_per_s"], one["images_per_s"])
            # The running jobs together against as many jobs' peak at one slot.
            run["memory"]["jobs_sum_over_slots_x_1_slot_peak_ratio"] = ratio(
                run["memory"]["jobs_rss_mb_sum_max"],
                (run["job_slots"] or 1) * (one["memory"]["job_peak_rss_mb_max"] or 0),
            )
    best = max(compared, key=lambda label: compared[label]["images_per_s"] or 0)
    return {
        "in_process_images_per_s": reference,
        "best": best,
        "best_images_per_s": compared[best]["images_per_s"],
        "best_over_in_process_ratio": compared[best]["over_in_process_ratio"],
        "runs": compared,
    }
