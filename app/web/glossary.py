"""The glossary: each term the figures use, defined once (here), and linked from every figure that uses it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.web.templating import render

router = APIRouter(include_in_schema=False)

TERMS: tuple[tuple[str, str, str], ...] = (
    ("A", "magnitude A",
     "The mean activation of a neuron over the tokens of a side (chosen or rejected responses); signed."),
    ("C", "change C",
     "The mean squared difference (a_RM − a_base)² between the reward model's activation and the pretrained "
     "base model's on the same tokens: how much training moved the neuron."),
    ("P", "probability P", "The fraction of tokens on which the neuron's activation is above 0."),
    ("S", "score S", "S = (X_chosen + X_rejected) / 2 for X ∈ {A, C, P}: the statistic neurons are ranked by."),
    ("theta", "threshold θ (top p%)",
     "θ is the (100 − p)th percentile of S over every (layer, neuron) of the model jointly: one global threshold; "
     "a neuron is selected when S ≥ θ. Ties at θ are all selected, so a set can be a little larger than p%."),
    ("jaccard", "Jaccard",
     "|A ∩ B| / |A ∪ B| of two sets: 1 when they are equal, 0 when disjoint. Used for neuron sets (H, R, M) and for "
     "the sets of items two RMs get right."),
    ("transferability", "transferability",
     "Of the items that at least one single-objective RM gets right, the fraction the mixed RM also gets right: "
     "|HH ∧ (HE ∨ HA)| / |HE ∨ HA| over per-item correctness (HH mixed, HE helpful, HA harmless RM). Undefined "
     "(shown empty) when neither single RM gets any item right. The same definition is used on the comparison "
     "page and in experiment C, before and after ablation."),
    ("hypergeometric", "hypergeometric test",
     "Whether two top-p% sets overlap more than chance: the probability, if the second set were drawn at random "
     "from all neurons, of an overlap at least as large as the one seen."),
    ("normalised-delta", "normalised Δ",
     "(acc − 50) / (acc₀ − 50): the share of the above-chance accuracy that survives an ablation. Shown only when "
     "acc₀ is above 50% by more than its CI half-width; near or below chance the ratio explodes or flips sign."),
    ("macro", "per-type mean accuracy",
     "The mean of the accuracies per subset type (helpful, harmless): the one number that stands for an RM, "
     "weighing both objectives alike. The item-weighted accuracy over all items favours the type with more items."),
    ("first-order-estimate", "first-order estimate (live toggles)",
     "Per probe pair and neuron, activation × ∂margin/∂activation summed over tokens, computed once per RM by "
     "one backward pass; a set's estimated Δ margin is the sum over its neurons (zero mode: minus that sum). "
     "It ranks sets well (Spearman ≈ 0.87-0.89 over 87 sets on the demo RMs), is least accurate for the "
     "strongest neurons and is coarse for accuracy, which moves in steps of one pair; the exact answer follows."),
    ("estimate-agreement", "estimate vs exact (live toggles)",
     "Every finished live toggle is recorded with its first-order estimate and its exact shift on the same probe "
     "pairs; the page /live/agreement shows, over every set tried, Spearman's rank correlation of estimated and "
     "exact Δ margin and Δ accuracy, their mean absolute error beside the mean |exact| shift, the same by set size "
     "and by layers spanned, and the sets the estimate missed most. Cancelled and superseded toggles and empty "
     "sets are left out."),
    ("live-control", "random control (live toggles)",
     "Beside each live toggle, a random set with the same number of neurons in each layer as the toggled set, drawn "
     "from that layer's other neurons (seeded by the set, so the same set always gets the same control), ablated "
     "the same way: its Δ is what a set of that size and layout does by chance. Its estimate shows at once, its "
     "exact answer streams after the set's."),
    ("live-ci", "running CI (live toggles)",
     "The exact answer of a live toggle streams in rounds of probe pairs (8 per objective a round, in a seeded "
     "random order); after each round the Δ over the pairs done so far is shown with a 95% percentile bootstrap "
     "interval over those pairs: an interval for the mean over the test split the probe pairs sample."),
)


@router.get("/glossary", response_class=HTMLResponse)
def glossary(request: Request) -> Response:
    return render(request, "_shared/glossary.html", terms=TERMS)
