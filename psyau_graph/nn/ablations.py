"""The ablation settings of the paper (Table 3) as named switch sets.

Each setting is one name; :meth:`psyau_graph.nn.FedPsyAUConfig.from_ablation`
(or ``FedPsyAUConfig(ablation=name)``) turns it into a model configuration.
Switches a caller sets explicitly win over the setting's values and are recorded in
the config's ``overrides``; ``run_protocol(..., ablation=name)`` with a model config
whose explicit switch contradicts ``name`` raises ``ValueError`` (nothing is dropped).

=======  ===  ===  =====  ======  ======  =====  =====  =====  ===========================================
setting  LFE  SSE  local  global  stream  group  psych  data   meaning (paper Table 3 and §5.3)
=======  ===  ===  =====  ======  ======  =====  =====  =====  ===========================================
I        –    –    –      –       single  –      –      –      whole-face optical flow only (flow stream of
                                                               DSI); no ROI/AU path, no AU heads
II       ✓    –    –      –       dual    ✓      –      –      + AU features: LFE → AFE → AU stream; AFE AU head
III      ✓    ✓    –      –       dual    ✓      –      –      + SSE (ROI relationship modelling)
IV       ✓    ✓    ✓      –       dual    ✓      ✓      ✓      + local (upper ‖ lower) DPK-GAT; GAT AU head
V        ✓    ✓    –      ✓       dual    ✓      ✓      ✓      + global (whole-face) DPK-GAT only
VI       ✓    ✓    ✓      ✓       dual    ✓      ✓      ✓      full model (= VIII = XII)
VII      ✓    ✓    ✓      ✓       dual    –      ✓      ✓      no AU grouping: one AFE group over all 65 ROIs
                                                               → 12 AU nodes
VIII     ✓    ✓    ✓      ✓       dual    ✓      ✓      ✓      with AU grouping (= VI)
IX       ✓    ✓    ✓      ✓       dual    ✓      –      –      no priors: complete graphs, plain attention
X        ✓    ✓    ✓      ✓       dual    ✓      ✓      –      psychological prior (adjacency) only
XI       ✓    ✓    ✓      ✓       dual    ✓      –      ✓      data-driven prior only, on complete graphs
XII      ✓    ✓    ✓      ✓       dual    ✓      ✓      ✓      both priors (= VI)
=======  ===  ===  =====  ======  ======  =====  =====  =====  ===========================================

"psych" is the psychological adjacency (which AU attends to which); without it the
upper and lower graphs are complete and the whole-face graph keeps every
cross-region pair plus self loops (the whole-face stage is cross-region by
construction, §4.2.2, so that part is structure, not prior). "data" is the
extrinsic co-occurrence prior D mixed into the attention with weight β; without it
the attention is the plain GAT softmax. For settings without a GAT the prior
switches are irrelevant and are set off.
"""
from __future__ import annotations

from typing import Dict

#: switch names, in the column order of the table above
SWITCHES = ("use_lfe", "use_sse", "local_gat", "global_gat", "dual_stream", "au_grouping", "psych_prior",
            "data_prior")


def _s(lfe, sse, local, glob, dual, group, psych, data) -> Dict[str, bool]:
    return dict(zip(SWITCHES, (lfe, sse, local, glob, dual, group, psych, data)))


#: setting name → switch values
ABLATIONS: Dict[str, Dict[str, bool]] = {
    "I": _s(False, False, False, False, False, False, False, False),
    "II": _s(True, False, False, False, True, True, False, False),
    "III": _s(True, True, False, False, True, True, False, False),
    "IV": _s(True, True, True, False, True, True, True, True),
    "V": _s(True, True, False, True, True, True, True, True),
    "VI": _s(True, True, True, True, True, True, True, True),
    "VII": _s(True, True, True, True, True, False, True, True),
    "VIII": _s(True, True, True, True, True, True, True, True),
    "IX": _s(True, True, True, True, True, True, False, False),
    "X": _s(True, True, True, True, True, True, True, False),
    "XI": _s(True, True, True, True, True, True, False, True),
    "XII": _s(True, True, True, True, True, True, True, True),
}

#: one-line description of each setting
DESCRIPTIONS: Dict[str, str] = {
    "I": "optical flow only, single stream",
    "II": "+ LFE/AFE AU features, dual stream",
    "III": "+ SSE",
    "IV": "+ local (upper/lower) DPK-GAT",
    "V": "+ global DPK-GAT (no local)",
    "VI": "full model",
    "VII": "without AU grouping (one group over the whole face)",
    "VIII": "with AU grouping (= VI)",
    "IX": "no priors",
    "X": "psychological prior only",
    "XI": "data-driven prior only",
    "XII": "psychological + data-driven priors (= VI)",
}


def ablation_switches(name: str) -> Dict[str, bool]:
    """The switches of setting ``name`` (case-insensitive Roman numeral, e.g. "III").

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    key = str(name).strip().upper()
    if key not in ABLATIONS:
        raise ValueError(f"ablation={name!r}: expected one of {', '.join(ABLATIONS)}")
    return dict(ABLATIONS[key])
