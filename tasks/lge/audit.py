"""The LGE task's fairness audit: what the audit measures and how much of a gap is tolerated.

The metric and call names are keys of the task's per-case records (tasks/lge/metrics.py).
"""

from __future__ import annotations

from fairness.spec import AuditSpec, CallPair, MetricInfo

LGE_AUDIT_SPEC = AuditSpec(
    task_label="scar segmentation on late gadolinium enhancement (LGE) cardiac magnetic resonance images",
    metrics=(
        MetricInfo(
            name="dice_myocardium",
            label="Dice similarity of the myocardium",
            unit="",
            explanation=(
                "Overlap between the heart muscle (myocardium) outlined by the model and by the "
                "expert, from 0 (no overlap) to 1 (perfect overlap)."
            ),
            higher_is_better=True,
            lower_bound=0.0,
            upper_bound=1.0,
            default_tolerance=0.05,
        ),
        MetricInfo(
            name="dice_scar",
            label="Dice similarity of the scar",
            unit="",
            explanation=(
                "Overlap between the scar outlined by the model and by the expert, from 0 to 1 "
                "(1 = perfect overlap); only patients whose reference shows scar count."
            ),
            higher_is_better=True,
            lower_bound=0.0,
            upper_bound=1.0,
            default_tolerance=0.05,
        ),
        MetricInfo(
            name="scar_burden_abs_error",
            label="Error in scar burden",
            unit="percentage points",
            explanation=(
                "Scar burden is the percentage of the left-ventricular myocardium that is scar; "
                "the error is the absolute difference between the model's and the expert's "
                "scar burden, in percentage points (0 = exact)."
            ),
            higher_is_better=False,
            lower_bound=0.0,
            upper_bound=100.0,
            default_tolerance=2.0,
            decimals=2,
        ),
    ),
    calls=(
        CallPair(
            name="scar_present",
            reference="scar_present_reference",
            predicted="scar_present_predicted",
            label="scar present",
            score_metric="scar_burden_percent_predicted",
            score_label="predicted scar burden (% of myocardium)",
            # Percent of myocardium; the presence call's threshold (1 %) is an edge.
            score_bin_edges=(0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0),
        ),
    ),
)
