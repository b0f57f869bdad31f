"""The T1-mapping task's fairness audit: what the audit measures and how much of a gap is tolerated.

The metric names are keys of the task's per-study records (tasks/mapping/metrics.py).
The task makes no binary call, so the audit compares means only.
"""

from __future__ import annotations

from fairness.spec import AuditSpec, MetricInfo


def _t1_error(name: str, label: str, where: str, tolerance: float) -> MetricInfo:
    return MetricInfo(
        name=name,
        label=label,
        unit="ms",
        explanation=(
            f"Average absolute difference between the T1 relaxation time mapped by the model and the "
            f"reference T1, over the pixels of {where}, in milliseconds (0 = exact)."
        ),
        higher_is_better=False,
        lower_bound=0.0,
        default_tolerance=tolerance,
        decimals=1,
    )


MAPPING_AUDIT_SPEC = AuditSpec(
    task_label="T1 and extracellular volume (ECV) mapping from MOLLI cardiac magnetic resonance series",
    metrics=(
        _t1_error("myocardial_t1_abs_error_ms", "Error in native myocardial T1", "the heart muscle (myocardium)", 20.0),
        _t1_error("blood_t1_abs_error_ms", "Error in native blood T1", "the left-ventricular blood pool", 30.0),
        _t1_error(
            "post_myocardial_t1_abs_error_ms",
            "Error in post-contrast myocardial T1",
            "the myocardium after contrast",
            15.0,
        ),
        MetricInfo(
            name="ecv_abs_error_percent",
            label="Error in extracellular volume (ECV)",
            unit="percentage points",
            explanation=(
                "ECV is the share of the heart muscle outside its cells, computed from T1 before and "
                "after contrast and the haematocrit; the error is the absolute difference between "
                "the ECV from the model's maps and from the reference maps, in percentage points."
            ),
            higher_is_better=False,
            lower_bound=0.0,
            upper_bound=100.0,
            default_tolerance=1.5,
            decimals=2,
        ),
    ),
)
