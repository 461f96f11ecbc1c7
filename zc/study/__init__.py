"""The study: statistics and verdict rules (stats), the ablation runner (ablations), the paper's claims
(claims), the successors side by side (side_by_side), the shipped conditions' ControlNets (zoo,
checkpoints, widgets), GPU budgets (budget) and the rehearsal on a stand-in SD (rehearsal). It reads
everything below it; nothing below reads it."""
