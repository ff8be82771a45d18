"""The progress bar of every training loop (pretraining, probes, fine-tuning, transfer)."""
from __future__ import annotations

from tqdm.auto import tqdm

from coursekit.engine import distributed


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0) -> tqdm:
    """A tqdm bar over ``total`` steps (``initial`` already done), shown when ``enabled`` and only
    by the first process under torchrun. Callers update it once per step and show the loss with
    ``set_postfix`` only when they have it on the host (never a device sync just for the bar)."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled or distributed.rank() != 0,
                leave=False)
